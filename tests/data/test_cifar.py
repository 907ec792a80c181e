"""Tests for lth.data.cifar: CIFAR-10 binary batches, their layouts and the official archive.

CIFAR-10 cannot be fetched here, so the tests write tiny files in the exact binary format, and
random corruptions of them must give a clear DataError or exactly whole records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lth.data import DATASETS, DataError, dataset_info, download, load_splits, split_indices
from tests.data.files import mutate, mutation, write

CORRUPTION = settings(max_examples=60, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


def cifar_record(label: int, k: int) -> bytes:
    """One record in the official layout: label byte, then R, G, B planes (row-major 32x32).

    Pixel (c, h, w) of image k has value (60 * c + 3 * h + w + k) % 256, so every channel,
    row and column is distinguishable.
    """
    h = np.arange(32).reshape(32, 1)
    w = np.arange(32).reshape(1, 32)
    red, green, blue = (((60 * c + 3 * h + w + k) % 256).astype(np.uint8) for c in range(3))
    return bytes([label]) + red.tobytes() + green.tobytes() + blue.tobytes()


def expected_cifar_image(k: int) -> np.ndarray:
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((60 * c + 3 * h + w + k) % 256).astype(np.uint8)


def write_cifar(folder: Path, per_file: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for f, name in enumerate(names):
        ks = range(f * per_file, (f + 1) * per_file)
        (folder / name).write_bytes(b"".join(cifar_record(k % 10, k) for k in ks))


def unnormalize_cifar(x: torch.Tensor) -> np.ndarray:
    spec = dataset_info("cifar-10")
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    pix = (x * std + mean) * 255
    assert torch.allclose(pix, pix.round(), atol=1e-3)
    return pix.round().to(torch.uint8).numpy()


@pytest.mark.parametrize("subdir", ["cifar-10/cifar-10-batches-bin", "cifar-10"])
def test_cifar10_layout_and_labels(tmp_path, subdir, offline):
    write_cifar(tmp_path / subdir)
    s = load_splits("cifar-10", tmp_path, val_size=10, split_seed=0)
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10
    assert s.train_x.shape == (90, 3, 32, 32) and s.val_x.shape == (10, 3, 32, 32)
    assert s.test_x.shape == (20, 3, 32, 32)
    test_pix = unnormalize_cifar(s.test_x)
    for i in range(20):  # test_batch holds images k = 100..119
        np.testing.assert_array_equal(test_pix[i], expected_cifar_image(100 + i))
    assert s.test_y.tolist() == [(100 + i) % 10 for i in range(20)]
    train_idx, val_idx = split_indices(100, 10, 0)
    train_pix = unnormalize_cifar(s.train_x)
    for row, k in enumerate(train_idx.tolist()):
        np.testing.assert_array_equal(train_pix[row], expected_cifar_image(k))
    assert s.train_y.tolist() == [k % 10 for k in train_idx.tolist()]
    assert s.val_y.tolist() == [k % 10 for k in val_idx.tolist()]
    # Channel planes really are R, G, B in that order: image 0 pixel (0, 0) is (0, 60, 120).
    assert unnormalize_cifar(s.train_x[:1])[0, :, 0, 0].tolist() == [0, 60, 120]
    assert offline == []


def test_cifar10_truncated_batch(tmp_path, offline):
    folder = tmp_path / "cifar-10" / "cifar-10-batches-bin"
    write_cifar(folder)
    p = folder / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError) as e:
        load_splits("cifar-10", tmp_path, val_size=10, split_seed=0)
    msg = str(e.value)
    assert "data_batch_3.bin" in msg and "truncated" in msg and "3073" in msg


def test_cifar10_bad_label(tmp_path, offline):
    folder = tmp_path / "cifar-10"
    write_cifar(folder)
    (folder / "test_batch.bin").write_bytes(cifar_record(3, 0) + cifar_record(10, 1))
    with pytest.raises(DataError) as e:
        load_splits("cifar-10", tmp_path, val_size=10, split_seed=0)
    assert "label 10 at index 1" in str(e.value) and "test_batch.bin" in str(e.value)


def test_cifar10_missing_lists_files_and_dirs(tmp_path, offline):
    folder = tmp_path / "cifar-10" / "cifar-10-batches-bin"
    write_cifar(folder)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DataError) as e:
        load_splits("cifar-10", tmp_path, val_size=10, split_seed=0)
    msg = str(e.value)
    assert "1 required file(s) missing: data_batch_4.bin" in msg
    assert f"Looked in:\n  {folder}\n  {tmp_path / 'cifar-10'}\n" in msg
    assert "cifar-10-binary.tar.gz" in msg and "network is unreachable" in msg
    assert offline == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]


def _cifar_tarball(tmp_path: Path) -> bytes:
    src = tmp_path / "tar-src"
    write_cifar(src, per_file=3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=f"cifar-10-batches-bin/{p.name}")
        evil = tarfile.TarInfo("../evil.bin")  # must never be extracted
        tar.addfile(evil, io.BytesIO(b""))
    return buf.getvalue()


def _patch_md5(monkeypatch, md5: str) -> None:
    spec = DATASETS["cifar-10"]
    archive = dataclasses.replace(spec.archive, md5=md5)
    monkeypatch.setitem(DATASETS, "cifar-10", dataclasses.replace(spec, archive=archive))


def test_cifar10_download_archive(tmp_path, monkeypatch):
    tarball = _cifar_tarball(tmp_path)
    _patch_md5(monkeypatch, hashlib.md5(tarball).hexdigest())
    monkeypatch.setattr(download, "_fetch", lambda url, dest: Path(dest).write_bytes(tarball))
    root = tmp_path / "root"
    s = load_splits("cifar-10", root, val_size=3, split_seed=0)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (12, 3, 3)
    np.testing.assert_array_equal(unnormalize_cifar(s.test_x)[2], expected_cifar_image(17))
    batch_dir = root / "cifar-10" / "cifar-10-batches-bin"
    assert sorted(p.name for p in batch_dir.iterdir()) == sorted(
        [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    )
    assert sorted(p.name for p in (root / "cifar-10").iterdir()) == ["cifar-10-batches-bin"]
    assert not (tmp_path / "evil.bin").exists() and not (root / "evil.bin").exists()


def test_cifar10_local_archive_md5_checked(tmp_path, monkeypatch, offline):
    tarball = _cifar_tarball(tmp_path)
    archive = write(tmp_path / "root" / "cifar-10" / "cifar-10-binary.tar.gz", tarball)
    with pytest.raises(DataError) as e:  # real md5 table: the fake archive must be rejected
        load_splits("cifar-10", tmp_path / "root", val_size=3, split_seed=0)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "c32a1d4ab5d03f1284b67883e8d87530" in msg
    assert str(archive) in msg and "Delete it" in msg
    _patch_md5(monkeypatch, hashlib.md5(tarball).hexdigest())
    s = load_splits("cifar-10", tmp_path / "root", val_size=3, split_seed=0)
    assert len(s.train_x) == 12 and offline == []


def test_cifar10_download_md5_mismatch(tmp_path, monkeypatch):
    tarball = _cifar_tarball(tmp_path)
    monkeypatch.setattr(download, "_fetch", lambda url, dest: Path(dest).write_bytes(tarball))
    with pytest.raises(DataError) as e:
        load_splits("cifar-10", tmp_path / "root", val_size=3, split_seed=0)
    assert "checksum mismatch" in str(e.value) and "MD5" in str(e.value)
    leftover = [p for p in (tmp_path / "root" / "cifar-10").rglob("*") if p.is_file()]
    assert leftover == []


# ------------------------------------------------------------------ random corruptions


RECORD = 1 + 3 * 32 * 32


def _write_cifar(root: Path, per_file: int = 3) -> None:
    d = root / "cifar-10" / "cifar-10-batches-bin"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        recs = rng.integers(0, 256, size=(per_file, RECORD), dtype=np.uint8)
        recs[:, 0] = np.arange(per_file) % 10
        (d / name).write_bytes(recs.tobytes())


@CORRUPTION
@given(m=mutation, which=st.sampled_from(["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"]))
def test_corrupt_cifar_batch_is_rejected_or_exactly_whole_records(tmp_path_factory, monkeypatch, m, which):
    def offline(url, dest):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(download, "_fetch", offline)
    root = tmp_path_factory.mktemp("cifar")
    _write_cifar(root)
    f = root / "cifar-10" / "cifar-10-batches-bin" / which
    bad = mutate(f.read_bytes(), m)
    f.write_bytes(bad)
    try:
        s = load_splits("cifar-10", root, val_size=1, split_seed=0, download=False)
    except DataError:
        return
    assert len(bad) % RECORD == 0
    n_test = len(bad) // RECORD if which == "test_batch.bin" else 3
    n_train = 15 + (len(bad) // RECORD - 3 if which != "test_batch.bin" else 0)
    assert s.test_x.shape == (n_test, 3, 32, 32)
    assert s.train_x.shape[0] + s.val_x.shape[0] == n_train
    assert int(s.train_y.max()) <= 9 and int(s.test_y.max()) <= 9
