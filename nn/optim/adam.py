"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), PyTorch's update rules."""
import math

import numpy as np

from nn._checks import check_in_range
from nn.optim.optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam exactly as ``torch.optim.Adam`` (``torch.optim.AdamW`` with ``decoupled=True``)::

        t ← t + 1
        g ← ∇ + weight_decay · θ              (Adam: L2 penalty in the gradient)
        θ ← θ · (1 - lr · weight_decay)       (AdamW: decoupled decay instead)
        m ← m + (1 - β1) · (g - m)
        v ← β2 · v + (1 - β2) · g²
        v̂ ← max(v̂, v) if amsgrad else v
        θ ← θ - lr / (1 - β1^t) · m / (sqrt(v̂) / sqrt(1 - β2^t) + eps)

    Args:
        params: Parameters or parameter groups.
        lr (float): learning rate.
        betas (tuple of float): decay rates of the first and second moments, in [0, 1).
        eps (float): added to the denominator.
        weight_decay (float): L2 penalty (Adam) or decoupled decay (AdamW).
        amsgrad (bool): keep the running maximum of ``v`` (Reddi et al., 2018).
        maximize (bool): ascend instead of descend.
    """

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        betas = tuple(group["betas"])
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {group['betas']!r}")
        group["betas"] = betas
        check_in_range(betas[0], "betas[0]", 0, 1, high_open=True)
        check_in_range(betas[1], "betas[1]", 0, 1, high_open=True)
        check_in_range(group["eps"], "eps", 0)
        check_in_range(group["weight_decay"], "weight_decay", 0)

    def _update(self):
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in self._params_with_grad(group):
                grad = -p.grad if group["maximize"] else p.grad
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p.data)
                    state["exp_avg_sq"] = np.zeros_like(p.data)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = np.zeros_like(p.data)
                state["step"] += 1
                step = state["step"]
                if weight_decay != 0:
                    if self.decoupled:
                        p.data *= 1 - lr * weight_decay
                    else:
                        grad = grad + weight_decay * p.data
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg += (1 - beta1) * (grad - exp_avg)  # torch's lerp_
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad
                bias_correction1 = 1 - beta1 ** step
                bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
                if group["amsgrad"]:
                    np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                else:
                    second = exp_avg_sq
                denom = np.sqrt(second) / bias_correction2_sqrt + eps
                p.data -= (lr / bias_correction1) * exp_avg / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``θ ← θ(1 - lr·wd)``
    before the Adam step, instead of adding ``wd·θ`` to the gradient. Default
    ``weight_decay=1e-2`` as in PyTorch; other arguments as ``Adam``."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
