"""Tests for lth.data.mnist: the MNIST and Fashion-MNIST loader on real and hand-written files."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib

import numpy as np
import pytest
import torch

from lth.data import DATASETS, DataError, load_splits
from tests.data.files import IDX_NAMES, idx_bytes, write, write_idx_set


def test_fashion_mnist_loads(fashion_data):
    s = load_splits("fashion-mnist", fashion_data, val_size=5000, split_seed=3, download=False)
    assert s.name == "fashion-mnist"
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (55000, 5000, 10000)
    assert s.train_x.shape[1:] == (1, 28, 28)
    counts = torch.bincount(s.train_y, minlength=10) + torch.bincount(s.val_y, minlength=10)
    assert counts.tolist() == [6000] * 10
    assert abs(s.train_x.mean().item()) < 0.02


def test_checksum_mismatch_on_local_copy(tmp_path, offline, shared_data):
    """A single flipped byte in a real file (labels stay valid) is caught by SHA-256."""
    mnist_dir = shared_data / "mnist"
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for name in IDX_NAMES:
        (folder / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    labels = bytearray(gzip.decompress((mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)  # raw copies are accepted too
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path / "root", val_size=10, split_seed=0)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte" in msg and "checksum mismatch" in msg and "corrupt" in msg
    assert DATASETS["mnist"].files[1].sha256 in msg
    assert hashlib.sha256(bytes(labels)).hexdigest() in msg
    assert "Delete it" in msg
    assert offline == []  # a present-but-corrupt file is reported, not silently re-downloaded


def test_wrong_image_shape_rejected(tmp_path, no_checksums, offline):
    write_idx_set(tmp_path / "mnist", 12, 5, gz=False)
    write(tmp_path / "mnist" / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((5, 27, 28))))
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=2, split_seed=0)
    assert "t10k-images-idx3-ubyte" in str(e.value) and "(N, 28, 28)" in str(e.value)


def test_structural_error_names_dataset(tmp_path, no_checksums, offline):
    write_idx_set(tmp_path / "mnist", 12, 5)
    p = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=2, split_seed=0)
    assert "gzip" in str(e.value) and "mnist" in str(e.value)


def test_tiny_idx_set_loads_with_val_zero(tmp_path, no_checksums, offline):
    write_idx_set(tmp_path / "mnist", 12, 5, gz=False)
    s = load_splits("mnist", tmp_path, val_size=0, split_seed=0)
    assert s.train_x.shape == (12, 1, 28, 28) and s.val_x.shape == (0, 1, 28, 28)
    assert s.val_y.shape == (0,) and s.val_y.dtype == torch.int64
    assert s.train_y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


@pytest.mark.parametrize("name, what", [("t10k-labels-idx1-ubyte.gz", "a gzipped IDX file"),
                                        ("t10k-labels-idx1-ubyte", "an IDX file")])
def test_a_directory_in_place_of_a_file_is_named_not_called_missing(tmp_path, no_checksums, offline, name, what):
    write_idx_set(tmp_path / "mnist", 12, 5)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "mnist" / name).mkdir()
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=2, split_seed=0)
    assert str(e.value) == f"{tmp_path / 'mnist' / name} is a directory, expected {what}; remove it"
    assert offline == []  # not downloaded around it either


def with_official(monkeypatch, name: str, payload: bytes) -> None:
    """Make ``payload`` the official content of the MNIST file ``name`` (the other files unchecked)."""
    spec = DATASETS["mnist"]
    files = tuple(dataclasses.replace(f, sha256=hashlib.sha256(payload).hexdigest() if f.name == name else None)
                  for f in spec.files)
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, files=files))


@pytest.mark.parametrize("official", ["gz", "raw", "neither"])
def test_a_raw_file_beside_a_different_gz_is_refused_naming_both(tmp_path, monkeypatch, offline, official):
    folder = tmp_path / "mnist"
    write_idx_set(folder, 12, 5)
    name = "t10k-labels-idx1-ubyte"
    gz_payload, raw_payload = idx_bytes(np.arange(5) % 10), idx_bytes(np.arange(5) % 3)
    write(folder / name, raw_payload)
    with_official(monkeypatch, name, {"gz": gz_payload, "raw": raw_payload, "neither": b"other"}[official])
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=2, split_seed=0)
    gz, raw = folder / f"{name}.gz", folder / name
    fix = {"gz": f"{gz.name} has the official SHA-256, so delete {raw}",
           "raw": f"{raw.name} has the official SHA-256, so delete {gz}",
           "neither": "delete the one that is not the file you want"}[official]
    assert str(e.value) == (f"{gz} and {raw} are two copies of {name} with different content, and lth "
                            f"will not guess which one to read; {fix}")


def test_a_raw_file_beside_a_gz_of_the_same_content_loads(tmp_path, no_checksums, offline):
    folder = tmp_path / "mnist"
    write_idx_set(folder, 12, 5)
    write_idx_set(folder, 12, 5, gz=False)  # the same arrays, uncompressed
    s = load_splits("mnist", tmp_path, val_size=2, split_seed=0)
    assert len(s.train_x) + len(s.val_x) == 12 and len(s.test_x) == 5
