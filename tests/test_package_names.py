"""A package attribute named like one of its submodules is that submodule.

``import detection.nms as m`` gives the module, not a function re-exported under the
module's name (``from detection import nms`` likewise).
"""
import importlib
import inspect
import os
import pkgutil

import pytest

PACKAGES = ["nn", "nn.functional", "nn.modules", "nn.optim", "detection", "segmentation"]


@pytest.mark.parametrize("package_name", PACKAGES)
def test_no_name_shadows_a_submodule(package_name):
    package = importlib.import_module(package_name)
    shadowed = []
    for info in pkgutil.iter_modules(package.__path__):
        value = getattr(package, info.name, None)
        if value is not None and not inspect.ismodule(value):
            shadowed.append((info.name, type(value).__name__))
    assert shadowed == []


def test_the_scan_sees_submodules():
    names = {info.name for info in pkgutil.iter_modules(importlib.import_module("detection").__path__)}
    assert {"nms", "boxes", "anchors"} <= names


def test_nms_module_and_function():
    import detection.nms as nms_module
    from detection import nms
    from detection.nms import nms as nms_function

    assert inspect.ismodule(nms_module) and nms is nms_module
    assert callable(nms_function) and nms_function.__module__ == "detection.nms"
    import nn.functional
    assert callable(nn.functional.linear)  # the function of DESIGN.md's contract
    assert os.path.basename(inspect.getfile(nn.functional.linear)) == "dense.py"
