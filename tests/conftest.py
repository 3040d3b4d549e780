"""Shared test configuration.

Oracle tests (torch, onnxruntime, pycocotools) get the ``oracle`` marker and import
their oracle with ``tests.oracles.require``. With ``DETSEG_REQUIRE_ORACLES=1`` (as in
CI) an oracle test that would be skipped fails instead.
"""
import os
import signal

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=25)
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

REQUIRE_ORACLES = os.environ.get("DETSEG_REQUIRE_ORACLES") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ORACLES and report.skipped and item.get_closest_marker("oracle") is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"oracle test {item.nodeid} was skipped while DETSEG_REQUIRE_ORACLES=1: "
            f"{report.longrepr}"
        )


@pytest.fixture(autouse=True)
def _seed_default_generator():
    """Each test starts from the same default generator state."""
    import nn

    nn.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt in this process (it may be ignored in a background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def plate_scenes(tmp_path_factory):
    """A tiny generated Pascal VOC dataset of plate scenes (20 images: 12 train, 8 val),
    shared by the trainers' tests."""
    from plates.synthetic import generate_plate_dataset

    root = tmp_path_factory.mktemp("plate_scenes")
    generate_plate_dataset(root, 20, seed=3, splits=(0.6, 0.4, 0.0), progress=False)
    return str(root)
