"""Shared fixtures. Tests use the real data sets in ../shared/datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LTH_TEST_DATA", ROOT.parent / "shared" / "datasets"))

# One intra-op thread: the suite runs beside other work on 2-core machines, and oversubscribed
# threads slow PyTorch down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").exists():
        pytest.fail(f"real MNIST not found under {SHARED_DATA}; set LTH_TEST_DATA to the datasets folder")
    return SHARED_DATA
