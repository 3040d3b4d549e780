"""Containers: ``Sequential`` chains modules, ``ModuleList`` holds them in a list.

Both register their children under the names "0", "1", ..., so a state_dict key
reads ``"layers.2.weight"`` exactly as in PyTorch.
"""
from collections import OrderedDict

import numpy as np

from nn.modules.module import Module

__all__ = ["Sequential", "ModuleList"]


def _check_module(module, where):
    if not isinstance(module, Module):
        raise TypeError(f"{where} must be a Module, got {type(module).__name__}")
    return module


def _normalize_index(index, length, kind):
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{kind} indices must be int or slice, got {type(index).__name__}")
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for a {kind} of length {length}")
    return int(index) % length


class Sequential(Module):
    """Apply modules one after the other: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    Args:
        *modules (Module): the stages, named "0", "1", ...; or a single
            ``OrderedDict[str, Module]`` giving names.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, _check_module(module, f"Sequential entry {name!r}"))
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), _check_module(module, f"Sequential argument {i}"))

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        return items[_normalize_index(index, len(items), "Sequential")][1]

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), _check_module(module, "appended value"))
        return self

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters the parent module sees.

    Args:
        modules (iterable of Module, optional): initial contents.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        values = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(values[index])
        return values[_normalize_index(index, len(values), "ModuleList")]

    def __setitem__(self, index, module):
        index = _normalize_index(index, len(self), "ModuleList")
        self.add_module(str(index), _check_module(module, "assigned value"))

    def _renumber(self, values):
        for name in list(self._modules):
            delattr(self, name)
        for i, module in enumerate(values):
            self.add_module(str(i), module)

    def __delitem__(self, index):
        values = list(self._modules.values())
        if isinstance(index, slice):
            del values[index]
        else:
            del values[_normalize_index(index, len(values), "ModuleList")]
        self._renumber(values)

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), _check_module(module, "appended value"))
        return self

    def extend(self, modules):
        """Append every module of an iterable; returns self."""
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError("extend expects an iterable of Modules, got a single Module")
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        """Insert ``module`` before position ``index``."""
        values = list(self._modules.values())
        values.insert(index, _check_module(module, "inserted value"))
        self._renumber(values)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward; iterate over it instead")
