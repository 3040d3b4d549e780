"""Import an oracle library for a test, or skip (fail under DETSEG_REQUIRE_ORACLES=1)."""
import importlib
import os

import pytest


def require(module_name):
    """Return the imported module ``module_name`` (e.g. "torch", "onnxruntime").

    Skips the calling test when it is not installed, unless
    ``DETSEG_REQUIRE_ORACLES=1``, where the test fails instead.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"oracle {module_name!r} is not installed ({exc}); pip install -e '.[oracle]'"
        if os.environ.get("DETSEG_REQUIRE_ORACLES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    if module_name == "torch":
        module.set_num_threads(1)
    return module
