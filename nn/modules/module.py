"""``Module`` and ``Parameter``: how layers hold their weights, as in PyTorch.

A Module registers every ``Parameter``, sub-``Module`` and buffer assigned to it as
an attribute, so ``model.parameters()`` finds all trainable arrays and
``model.state_dict()`` names them with dotted paths (``"layer1.0.conv1.weight"``).
"""
from collections import OrderedDict, namedtuple

import numpy as np

from nn.tensor import Tensor

__all__ = ["Module", "Parameter", "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A Tensor that a Module trains: ``requires_grad`` is True by default."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers and models.

    Subclasses set attributes in ``__init__`` (after calling ``super().__init__()``)
    and define ``forward``; calling the module calls ``forward``.
    Buffers (ndarrays that are state but not trained, such as BatchNorm's running
    mean) are registered with ``register_buffer``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() was called"
            )
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Module):
            target = self._modules
        elif name in self.__dict__.get("_buffer_names", ()):
            target = self._buffers
        else:
            target = None
        for store in (self._parameters, self._modules, self._buffers):
            if store is not target:
                store.pop(name, None)
        if target is not None:
            # Assigning to an existing key keeps its position (state_dict order).
            target[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, array):
        """Register ``array`` (ndarray or None) as state saved in ``state_dict``."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"buffer name must be an identifier, got {name!r}")
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"buffer {name!r} must be an ndarray or None, got {type(array).__name__}")
        names = self.__dict__.setdefault("_buffer_names", set())
        names.add(name)
        setattr(self, name, array)

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter or None) under ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a Parameter or None, got {type(param).__name__}")
        if param is None:
            object.__setattr__(self, name, None)
            self._parameters.pop(name, None)
        else:
            setattr(self, name, param)

    def add_module(self, name, module):
        """Register a child module under ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{name!r} must be a Module, got {type(module).__name__}")
        setattr(self, name, module)

    # --------------------------------------------------------------- traversal
    def named_children(self):
        yield from self._modules.items()

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            yield from module.named_modules(prefix + ("." if prefix else "") + name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix="", recurse=True):
        """Yield ``(dotted_name, Parameter)``, each parameter once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield module_prefix + ("." if module_prefix else "") + name, param

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix=""):
        for module_prefix, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                if buf is not None:
                    yield module_prefix + ("." if module_prefix else "") + name, buf

    def buffers(self):
        for _, buf in self.named_buffers():
            yield buf

    def num_parameters(self):
        """Total number of trainable scalars."""
        return int(sum(p.size for p in self.parameters()))

    # ------------------------------------------------------------------- modes
    def train(self, mode=True):
        """Set training mode (dropout active, batch norm uses batch statistics)."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode; same as ``train(False)``."""
        return self.train(False)

    def zero_grad(self):
        """Forget the accumulated gradients of every parameter."""
        for param in self.parameters():
            param.grad = None

    def astype(self, dtype):
        """Cast every floating-point parameter and buffer to ``dtype``, in place."""
        dtype = np.dtype(dtype)
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.data = param.data.astype(dtype)
            for name, buf in list(module._buffers.items()):
                if buf is not None and np.issubdtype(buf.dtype, np.floating):
                    setattr(module, name, buf.astype(dtype))
        return self

    # ------------------------------------------------------------------- state
    def state_dict(self):
        """Copies of every parameter and buffer, keyed by dotted name."""
        state = OrderedDict()
        for name, param in self.named_parameters():
            state[name] = param.data.copy()
        for name, buf in self.named_buffers():
            state[name] = buf.copy()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into the parameters and buffers.

        Every key, shape, dtype and value is checked before anything is assigned,
        so a bad checkpoint leaves the model untouched.

        Args:
            state_dict (Mapping[str, ndarray]): as returned by ``state_dict()`` or ``nn.load``.
            strict (bool): missing or unexpected keys are an error.
        Returns:
            IncompatibleKeys: ``(missing_keys, unexpected_keys)`` (both empty when strict).
        Raises:
            KeyError: strict and a key is missing or unexpected.
            ValueError: a shape, dtype or non-finite value, naming the key.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        targets = OrderedDict()
        for name, param in self.named_parameters():
            targets[name] = ("param", param)
        for module_prefix, module in self.named_modules():
            for name, buf in module._buffers.items():
                if buf is not None:
                    full = module_prefix + ("." if module_prefix else "") + name
                    targets[full] = ("buffer", (module, name))
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        if strict and (missing or unexpected):
            raise KeyError(
                f"state_dict does not match the model: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        updates = []
        for key, (kind, target) in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if isinstance(value, Tensor):
                value = value.data
            if not isinstance(value, np.ndarray):
                raise TypeError(f"state_dict[{key!r}] must be an ndarray, got {type(value).__name__}")
            current = target.data if kind == "param" else getattr(target[0], target[1])
            if value.shape != current.shape:
                raise ValueError(
                    f"state_dict[{key!r}] has shape {value.shape}, the model expects {current.shape}"
                )
            if value.dtype != current.dtype:
                raise ValueError(
                    f"state_dict[{key!r}] has dtype {value.dtype}, the model expects {current.dtype}"
                )
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                raise ValueError(f"state_dict[{key!r}] contains NaN or infinite values")
            updates.append((kind, target, value))
        for kind, target, value in updates:
            if kind == "param":
                target.data = value.copy()
            else:
                setattr(target[0], target[1], value.copy())
        return IncompatibleKeys(missing, unexpected)

    # ----------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self):
        """One line of hyperparameters shown by ``repr`` (override in layers)."""
        return ""

    def __repr__(self):
        lines = []
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
