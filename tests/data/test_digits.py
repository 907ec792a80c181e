"""Tests for lth.data.digits: scikit-learn's 8x8 digits with a fixed, balanced test set."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from lth.data import DataError, dataset_info, load_splits


def test_digits_needs_no_data_dir(tmp_path, monkeypatch, offline, isolated_env):
    monkeypatch.setenv("LTH_DATA", str(tmp_path / "does-not-exist"))
    a = load_splits("digits", val_size=300, split_seed=0)
    b = load_splits("digits", "/nonexistent/dir", val_size=300, split_seed=1)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert (len(a.train_x), len(a.val_x), len(a.test_x)) == (1797 - 360 - 300, 300, 360)
    assert a.train_x.shape[1:] == (1, 8, 8) and a.train_x.dtype == torch.float32
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.val_x, b.val_x)
    assert torch.bincount(a.test_y, minlength=10).tolist() == [36] * 10
    assert abs(a.train_x.mean().item()) < 0.1 and abs(a.train_x.std().item() - 1) < 0.1
    assert not (tmp_path / "does-not-exist").exists() and offline == []


def test_digits_values_and_fixed_test_set():
    """Un-normalized tensors are exactly sklearn's pixels; test images form a fixed subset."""
    from sklearn.datasets import load_digits

    spec = dataset_info("digits")
    digits = load_digits()
    all_rows = {r.astype(np.uint8).tobytes(): int(t) for r, t in zip(digits.data, digits.target)}
    s = load_splits("digits", val_size=0, split_seed=5)
    pix = (s.test_x * spec.std[0] + spec.mean[0]) * 16
    assert torch.allclose(pix, pix.round(), atol=1e-4)
    rows = pix.round().to(torch.uint8).reshape(360, 64).numpy()
    assert all(all_rows[r.tobytes()] == y for r, y in zip(rows, s.test_y.tolist()))
    seen_train = {r.tobytes() for r in ((s.train_x * spec.std[0] + spec.mean[0]) * 16).round()
                  .to(torch.uint8).reshape(-1, 64).numpy()}
    assert len(seen_train | {r.tobytes() for r in rows}) == len(all_rows)


def test_digits_test_set_fingerprint():
    """The digits test set is pinned forever (across processes and library versions): results
    reported on it must stay comparable. If this fails, the fixed split changed."""
    spec = dataset_info("digits")
    s = load_splits("digits", val_size=0, split_seed=123)
    pix = ((s.test_x * spec.std[0] + spec.mean[0]) * 16).round().to(torch.uint8)
    digest = hashlib.sha256(pix.numpy().tobytes() + s.test_y.numpy().tobytes()).hexdigest()
    assert digest == "2b83f96035e8d23ce5f83bf30382db0a70ced62249da97b5ea5d3400d0fba304"


@pytest.mark.parametrize("val_size", [1437, 5000, -1])
def test_digits_val_size_out_of_range(val_size):
    with pytest.raises(DataError, match=f"data.val_size = {val_size} is out of range"):
        load_splits("digits", val_size=val_size, split_seed=0)
