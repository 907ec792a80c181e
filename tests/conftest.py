"""Fixtures shared by every test module; plain helpers are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import require_data

# One intra-op thread: the suite runs beside other work on 2-core machines, and oversubscribed
# threads slow PyTorch down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """A data root holding real MNIST (skips, or fails under LTH_REQUIRE_DATA=1, without it)."""
    return require_data("mnist")


@pytest.fixture(scope="session")
def fashion_data() -> Path:
    """A data root holding real Fashion-MNIST."""
    return require_data("fashion-mnist")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits with a 300-image validation split (no download)."""
    from lth.data import load_splits

    return load_splits("digits", val_size=300, split_seed=0)
