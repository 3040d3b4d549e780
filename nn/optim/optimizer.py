"""``Optimizer``: the base class holding parameter groups and per-parameter state.

As in PyTorch, an optimizer takes either an iterable of Parameters or a list of
dicts ("parameter groups"), each with a ``"params"`` entry and optional
hyperparameter overrides::

    opt = SGD([{"params": backbone.parameters(), "lr": 1e-3},
               {"params": head.parameters()}], lr=1e-2, momentum=0.9)

Schedulers change ``group["lr"]``. ``step()`` skips every parameter whose ``grad``
is None (a head that was not used this iteration is left alone).
"""
import copy

import numpy as np

from nn._checks import check_in_range
from nn.tensor import Tensor, enable_grad

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: subclasses implement ``step`` using ``self.param_groups`` and ``self.state``.

    Args:
        params (iterable of Parameter, or list of dict): what to optimize.
        defaults (dict): default hyperparameters of every group.

    Attributes:
        param_groups (list of dict): each with "params" (list of Parameter) and hyperparameters.
        state (dict): Parameter -> dict of that parameter's state (momentum buffers, step, ...).
    """

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Parameters or dicts, got a single Tensor")
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        params = list(params)
        if len(params) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict with "params" and optional hyperparameter overrides."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group must be a dict with a 'params' entry")
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer params[{i}] must be a Tensor/Parameter, "
                                f"got {type(p).__name__}")
            if not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"optimizer params[{i}] must be floating point, got {p.dtype}")
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in existing for p in params):
            raise ValueError("a parameter appears more than once in the optimizer's groups")
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)} in a parameter group; "
                             f"known: {sorted(self.defaults)}")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        """Validate a group's hyperparameters (subclasses extend)."""
        check_in_range(group["lr"], "lr", 0)

    def zero_grad(self):
        """Set every parameter's ``grad`` to None."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def _params_with_grad(self, group):
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.shape != p.shape:
                raise RuntimeError(f"a parameter of shape {p.shape} has a grad of shape {p.grad.shape}")
            yield p

    def step(self, closure=None):
        """Update the parameters once; ``closure`` (optional) re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._update()
        return loss

    def _update(self):
        raise NotImplementedError

    # ------------------------------------------------------------- state
    def state_dict(self):
        """A nested dict (PyTorch's layout) that ``nn.save`` can write.

        ``{"state": {index: {name: value}}, "param_groups": [{..., "params": [index, ...]}]}``
        where ``index`` numbers the parameters across groups in order. Arrays are copies.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {
                        k: (v.copy() if isinstance(v, np.ndarray) else v)
                        for k, v in self.state[p].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state saved by ``state_dict`` (possibly via nn.save/load).

        Everything is checked (group count and sizes, state shapes and dtypes, finite
        values) before anything is changed.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("optimizer state_dict must be a dict with keys 'state' and 'param_groups'")
        groups = state_dict["param_groups"]
        if isinstance(groups, dict):  # lists saved without structure come back as {"0": ...}
            groups = [groups[k] for k in sorted(groups, key=int)]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        params = []
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            saved_params = list(np.asarray(saved["params"]).reshape(-1))
            if len(saved_params) != len(group["params"]):
                raise ValueError(f"parameter group {i} has {len(saved_params)} parameters in the "
                                 f"state_dict, {len(group['params'])} in the optimizer")
            params.extend(zip(saved_params, group["params"]))
        by_index = {int(k): p for k, p in params}
        new_state = {}
        for key, values in state_dict["state"].items():
            k = int(key)
            if k not in by_index:
                raise ValueError(f"state_dict['state'] has an entry {key!r} for no parameter")
            p = by_index[k]
            restored = {}
            for name, value in values.items():
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    if value.shape != p.shape:
                        raise ValueError(f"state_dict['state'][{key!r}][{name!r}] has shape "
                                         f"{value.shape}, the parameter has {p.shape}")
                    if value.dtype != p.dtype:
                        raise ValueError(f"state_dict['state'][{key!r}][{name!r}] has dtype "
                                         f"{value.dtype}, the parameter has {p.dtype}")
                    if not np.all(np.isfinite(value)):
                        raise ValueError(f"state_dict['state'][{key!r}][{name!r}] is not finite")
                    restored[name] = value.copy()
                else:
                    restored[name] = _to_python(value)
            new_state[p] = restored
        new_groups = []
        for saved, group in zip(groups, self.param_groups):
            updated = dict(group)
            for k, v in saved.items():
                if k != "params":
                    updated[k] = _to_python(v)
            self._check_group(updated)
            new_groups.append(updated)
        self.param_groups = new_groups
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _to_python(value):
    """0-d arrays -> Python numbers, 1-d arrays -> tuples (hyperparameters such as betas)."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value.item()
        return tuple(value.tolist())
    if isinstance(value, list):
        return tuple(value)
    return value
