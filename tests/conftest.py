"""Shared test setup: the ../shared benchmark folder, the slow-test switch and the stray-device sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tests run as 2 xdist workers on 2 cores and work on small tensors: one intra-op thread per worker avoids
# oversubscription, which slowed bound computations about 10x when measured under load.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BENCHMARKS = SHARED / "benchmarks"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--stray-device", action="store_true",
                     help="run every test inside tests/cuda/stray_device.StrayDevice: fail where opwise mixes tensors "
                          "it made without a device with the model's (what would fail on a GPU)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow; run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """../shared/benchmarks, or a skip with the reason (a user's clone has no ../shared)."""
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARKS} (only CI and developer machines have ../shared)")
    return BENCHMARKS


@pytest.fixture(autouse=True)
def _stray_device(request):
    """With --stray-device, each test runs inside StrayDevice (see tests/cuda/stray_device.py)."""
    if not request.config.getoption("--stray-device"):
        yield
        return
    from tests.cuda.stray_device import StrayDevice

    with StrayDevice():
        yield
