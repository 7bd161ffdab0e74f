"""Shared fixtures: the real-data folder beside the checkout, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("EDXTOMO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
)


def shared_path(*parts: str) -> Path:
    """Path under ``../shared/data``; skips the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see shared/data/README.md)")
    return path


@pytest.fixture
def shared_data():
    """The ``../shared/data`` folder; the test skips with a reason when it is absent."""
    return shared_path()


@pytest.fixture
def one_torch_thread():
    """Run a test's small tensors on one torch thread.

    Tiny arrays gain nothing from a second OpenMP thread, and on a shared 2-core machine a
    busy second core makes every convolution and sparse product wait for it (measured 5x
    slower for the small networks, 80 s instead of 1 s for a noise-free TV test).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
