"""Stochastic gradient descent with momentum (Polyak, 1964; Nesterov, 1983), PyTorch's rule."""
from nn._checks import check_in_range
from nn.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD exactly as ``torch.optim.SGD``::

        g ← ∇ + weight_decay · θ
        b ← g                                   (first step)
        b ← momentum · b + (1 - dampening) · g  (later steps)
        g ← g + momentum · b  if nesterov  else  b
        θ ← θ - lr · g

    (``-∇`` instead of ``∇`` when ``maximize``.)

    Args:
        params: Parameters or parameter groups.
        lr (float): learning rate.
        momentum (float): momentum factor (0 disables the buffer).
        dampening (float): dampening of the momentum.
        weight_decay (float): L2 penalty added to the gradient.
        nesterov (bool): Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize (bool): ascend instead of descend.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        check_in_range(group["momentum"], "momentum", 0)
        check_in_range(group["dampening"], "dampening", 0)
        check_in_range(group["weight_decay"], "weight_decay", 0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")

    def _update(self):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
            for p in self._params_with_grad(group):
                grad = -p.grad if group["maximize"] else p.grad
                if weight_decay != 0:
                    grad = grad + weight_decay * p.data
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = grad.copy()
                        state["momentum_buffer"] = buf
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * grad
                    grad = grad + momentum * buf if group["nesterov"] else buf
                p.data -= lr * grad
