"""Tests for lth.data.splits: the train/validation split, validation of raw data, normalization."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.data import DataError, Splits, dataset_info, load_splits, read_idx, split_indices
from tests.data.files import MNIST_TRAIN_COUNTS, idx_bytes, write, write_idx_set


def normalize(spec, raw_u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(raw_u8.astype(np.float32) / spec.pixel_scale)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------- split_indices


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), frac=st.floats(0, 0.999), seed=st.integers(0, 2**32))
def test_split_indices_partition(n, frac, seed):
    val_size = int(frac * n)
    train, val = split_indices(n, val_size, seed)
    assert len(val) == val_size and len(train) == n - val_size
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(n))
    assert torch.all(train[1:] > train[:-1]) and torch.all(val[1:] > val[:-1])
    train2, val2 = split_indices(n, val_size, seed)
    assert torch.equal(train, train2) and torch.equal(val, val2)


@pytest.mark.parametrize("val_size", [100, 101, 10**6, -1])
def test_split_indices_rejects_out_of_range(val_size):
    with pytest.raises(DataError) as e:
        split_indices(100, val_size, 0)
    assert f"data.val_size = {val_size} is out of range" in str(e.value)
    assert "between 0 and 99" in str(e.value)


@pytest.mark.parametrize("val_size", [1.5, "10", True, None])
def test_split_indices_rejects_non_int(val_size):
    with pytest.raises(DataError, match="integer"):
        split_indices(100, val_size, 0)


# ----------------------------------------------------------------------- real MNIST splits


@pytest.fixture(scope="module")
def mnist0(shared_data) -> Splits:
    return load_splits("mnist", shared_data, val_size=5000, split_seed=0, download=False)


def test_mnist_splits_shapes_and_normalization(mnist0):
    s = mnist0
    assert s.name == "mnist" and s.num_classes == 10 and s.input_shape == (1, 28, 28)
    assert s.train_x.shape == (55000, 1, 28, 28)
    assert s.val_x.shape == (5000, 1, 28, 28)
    assert s.test_x.shape == (10000, 1, 28, 28)
    assert s.train_y.shape == (55000,) and s.val_y.shape == (5000,) and s.test_y.shape == (10000,)
    for t in (s.train_x, s.val_x, s.test_x):
        assert t.dtype == torch.float32 and t.device.type == "cpu"
    for t in (s.train_y, s.val_y, s.test_y):
        assert t.dtype == torch.int64
    assert abs(s.train_x.mean().item()) < 0.02
    assert abs(s.train_x.std().item() - 1.0) < 0.02
    counts = torch.bincount(s.train_y, minlength=10) + torch.bincount(s.val_y, minlength=10)
    assert counts.tolist() == MNIST_TRAIN_COUNTS
    assert "55000" in repr(s) and "tensor(" not in repr(s)


def test_mnist_split_matches_index_bookkeeping(mnist0, shared_data):
    """Train/val are exactly the rows chosen by split_indices: disjoint, covering, normalized."""
    spec = dataset_info("mnist")
    mnist_dir = shared_data / "mnist"
    raw_x = read_idx(mnist_dir / "train-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28)
    raw_y = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz").astype(np.int64)
    train_idx, val_idx = split_indices(60000, 5000, 0)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 60000
    assert torch.equal(mnist0.train_y, torch.from_numpy(raw_y)[train_idx])
    assert torch.equal(mnist0.val_y, torch.from_numpy(raw_y)[val_idx])
    torch.testing.assert_close(mnist0.val_x, normalize(spec, raw_x[val_idx.numpy()]))
    torch.testing.assert_close(mnist0.train_x[:2000], normalize(spec, raw_x[train_idx[:2000]]))


def test_mnist_split_seeds(mnist0, shared_data):
    again = load_splits("mnist", shared_data, val_size=5000, split_seed=0, download=False)
    assert torch.equal(again.val_y, mnist0.val_y) and torch.equal(again.val_x, mnist0.val_x)
    assert torch.equal(again.test_x, mnist0.test_x)
    other = load_splits("mnist", shared_data, val_size=5000, split_seed=1, download=False)
    assert not torch.equal(other.val_x, mnist0.val_x)
    assert torch.equal(other.test_x, mnist0.test_x)  # the test set never depends on the seed
    # Disjointness by content, independently of index bookkeeping: hash every row.
    hashes = lambda t: {hashlib.sha1(r.numpy().tobytes()).digest() for r in t}
    val_rows = hashes(other.val_x)
    assert not val_rows & hashes(other.train_x)


def test_mnist_val_size_out_of_range(shared_data):
    with pytest.raises(DataError) as e:
        load_splits("mnist", shared_data, val_size=60000, split_seed=0, download=False)
    assert "data.val_size = 60000" in str(e.value) and "between 0 and 59999" in str(e.value)


# ------------------------------------------------------------------ validation of raw data


def test_labels_out_of_range(tmp_path, no_checksums, offline):
    write_idx_set(tmp_path / "mnist", 12, 5, train_labels=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3])
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=2, split_seed=0)
    msg = str(e.value)
    assert "label 10 at index 10" in msg and "0..9" in msg and "train-labels" in msg


def test_image_label_count_mismatch(tmp_path, no_checksums, offline):
    write_idx_set(tmp_path / "mnist", 12, 5)
    write(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", idx_bytes(np.arange(11) % 10), True)
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=2, split_seed=0)
    assert "12 images but 11 labels" in str(e.value)
