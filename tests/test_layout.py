"""The import direction of DESIGN.md: nn <- detection, segmentation <- plates.

``detection`` and ``segmentation`` are general libraries: they import nothing of the
license-plate lab, and ``segmentation`` uses no private helper of ``detection``. ``nn``
imports neither.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(package):
    """``(file, imported module, imported names)`` for every import in a package."""
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found += [(path, alias.name, ()) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    found.append((path, node.module, tuple(a.name for a in node.names)))
    return found


def _top(module):
    return module.split(".")[0]


@pytest.mark.parametrize("package, forbidden", [
    ("nn", {"detection", "segmentation", "plates"}),
    ("detection", {"segmentation", "plates"}),
    ("segmentation", {"plates"}),
])
def test_packages_import_only_downstream(package, forbidden):
    wrong = [(os.path.relpath(p, ROOT), m) for p, m, _ in _imports(package) if _top(m) in forbidden]
    assert wrong == []


def test_segmentation_uses_no_private_helper_of_detection():
    private = [(os.path.relpath(p, ROOT), m, n) for p, m, names in _imports("segmentation")
               if _top(m) == "detection" for n in names if n.startswith("_")]
    assert private == []


def test_the_scan_sees_imports():
    """The scan itself: plates does import detection and segmentation."""
    tops = {_top(m) for _, m, _ in _imports("plates")}
    assert {"nn", "detection", "segmentation"} <= tops
