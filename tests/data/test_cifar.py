"""Tests for lth.data.cifar: CIFAR-10's binary and Python versions, their layouts, which one is
used, and the official archives.

CIFAR-10 cannot be fetched here, so the tests write tiny files in the exact formats (the Python
version as Python 2's cPickle wrote it, opcode by opcode), and random corruptions of them must
give a clear DataError or exactly whole records; tampered pickles must run nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lth.data import DATASETS, DataError, cifar, dataset_info, download, load_splits, split_indices
from tests.data.files import mutate, mutation, py2_pickle, write

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


# ------------------------------------------------------------------ the Python (pickle) version

PY_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_py_batch(ks: range, label_of=lambda k: k % 10) -> dict:
    """The dict of one Python-version batch holding images ``ks`` (the official keys)."""
    return {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [label_of(k) for k in ks],
        b"data": np.stack([expected_cifar_image(k).reshape(3072) for k in ks]),
        b"filenames": [f"image_{k:06d}.png".encode() for k in ks],
    }


def write_cifar_py(folder: Path, per_file: int = 20, dump=py2_pickle) -> None:
    """The same images and labels as :func:`write_cifar`, as Python 2 pickles of batch dicts."""
    folder.mkdir(parents=True, exist_ok=True)
    for f, name in enumerate(PY_NAMES):
        (folder / name).write_bytes(dump(cifar_py_batch(range(f * per_file, (f + 1) * per_file))))


def assert_same_splits(a, b) -> None:
    for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


@pytest.fixture(scope="module")
def binary_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("bin")
    write_cifar(root / "cifar-10" / "cifar-10-batches-bin")
    return load_splits("cifar-10", root, val_size=10, split_seed=0, download=False)


def test_python_archive_is_the_official_one():
    assert cifar.PYTHON_ARCHIVE.md5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar.PYTHON_ARCHIVE.filename == "cifar-10-python.tar.gz"
    assert cifar.PYTHON_ARCHIVE.member_prefix == "cifar-10-batches-py/"


@pytest.mark.parametrize("subdir", ["cifar-10/cifar-10-batches-py", "cifar-10"])
def test_python_version_loads_exactly_like_the_binary_version(tmp_path, subdir, offline, binary_splits):
    write_cifar_py(tmp_path / subdir)
    s = load_splits("cifar-10", tmp_path, val_size=10, split_seed=0)
    assert_same_splits(s, binary_splits)
    # and both are the images as written: labels in file order, R, G, B planes in NCHW
    test_pix = unnormalize_cifar(s.test_x)
    for i in range(20):
        np.testing.assert_array_equal(test_pix[i], expected_cifar_image(100 + i))
    assert s.test_y.tolist() == [(100 + i) % 10 for i in range(20)]
    assert unnormalize_cifar(s.train_x[:1])[0, :, 0, 0].tolist() == [0, 60, 120]
    assert offline == []


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python_batches_repickled_by_python3_load_too(tmp_path, offline, binary_splits, protocol):
    write_cifar_py(tmp_path / "cifar-10" / "cifar-10-batches-py", dump=lambda d: pickle.dumps(d, protocol))
    assert_same_splits(load_splits("cifar-10", tmp_path, val_size=10, split_seed=0), binary_splits)


def test_binary_files_come_first_then_python_files_then_archives(tmp_path, offline):
    base = tmp_path / "cifar-10"
    write_cifar_py(base / "cifar-10-batches-py", per_file=3)
    # a binary archive that is not the official one: it would be rejected if it were used
    write(base / "cifar-10-binary.tar.gz", b"not an archive")
    s = load_splits("cifar-10", tmp_path, val_size=1, split_seed=0)
    assert len(s.test_x) == 3  # the extracted Python files won over the archive
    write_cifar(base / "cifar-10-batches-bin", per_file=4)
    s = load_splits("cifar-10", tmp_path, val_size=1, split_seed=0)
    assert len(s.test_x) == 4  # and extracted binary files win over both
    assert offline == []


def _cifar_py_tarball(tmp_path: Path) -> bytes:
    src = tmp_path / "tar-src-py"
    write_cifar_py(src, per_file=3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=f"cifar-10-batches-py/{p.name}")
        for name in ("cifar-10-batches-py/batches.meta", "../evil"):  # never extracted
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    return buf.getvalue()


def test_python_archive_is_md5_checked_and_extracted(tmp_path, monkeypatch, offline):
    tarball = _cifar_py_tarball(tmp_path)
    root = tmp_path / "root"
    archive = write(root / "cifar-10" / "cifar-10-python.tar.gz", tarball)
    with pytest.raises(DataError) as e:  # the real MD5: the hand-made archive must be rejected
        load_splits("cifar-10", root, val_size=3, split_seed=0)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "c58f30108f718f92721af3b95e74349a" in msg and str(archive) in msg
    monkeypatch.setattr(cifar, "PYTHON_ARCHIVE",
                        dataclasses.replace(cifar.PYTHON_ARCHIVE, md5=hashlib.md5(tarball).hexdigest()))
    s = load_splits("cifar-10", root, val_size=3, split_seed=0)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (12, 3, 3)
    np.testing.assert_array_equal(unnormalize_cifar(s.test_x)[2], expected_cifar_image(17))
    assert sorted(p.name for p in (root / "cifar-10" / "cifar-10-batches-py").iterdir()) == sorted(PY_NAMES)
    assert not (tmp_path / "evil").exists() and not (root / "evil").exists()
    # the same data set as the binary archive gives
    bin_root = tmp_path / "bin-root"
    bin_tar = write(bin_root / "cifar-10" / "cifar-10-binary.tar.gz", _cifar_tarball(tmp_path))
    _patch_md5(monkeypatch, hashlib.md5(bin_tar.read_bytes()).hexdigest())
    assert_same_splits(s, load_splits("cifar-10", bin_root, val_size=3, split_seed=0))
    assert offline == []


def test_missing_files_message_names_both_versions(tmp_path, offline):
    folder = tmp_path / "cifar-10" / "cifar-10-batches-py"
    write_cifar_py(folder, per_file=2)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError) as e:
        load_splits("cifar-10", tmp_path, val_size=1, split_seed=0)
    msg = str(e.value)
    assert "1 required file(s) missing: data_batch_2\n" in msg  # the most complete version's
    assert str(folder) in msg and "cifar-10-python.tar.gz" in msg and "cifar-10-binary.tar.gz" in msg


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def _bad_pickles(marker: Path) -> dict[str, tuple[bytes, list[str]]]:
    good = cifar_py_batch(range(2))
    object_data = {**good, b"data": np.array([[1] * 3072, [2] * 3072], dtype=object)}
    codec = (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\n\x00\x00\x00zlib_codec\x86R.")
    persid = b"\x80\x02X\x01\x00\x00\x00xQ."
    return {
        "os.system": (pickle.dumps({b"data": _Exploit(marker)}, 2), ["refused to unpickle", "system"]),
        "eval": (pickle.dumps(_Eval(), 2), ["refused to unpickle", "builtin__.eval"]),
        "object array": (pickle.dumps(object_data, 2), ["'data' is a object array", "uint8"]),
        "codec": (codec, ["not a readable", "codec 'zlib_codec'"]),
        "persistent id": (persid, ["not a readable", "persistent"]),
        "truncated": (py2_pickle(good)[:5000], ["not a readable", "truncated or corrupt"]),
        "trailing bytes": (py2_pickle(good) + b"\x00" * 7, ["7 unexpected bytes after the end"]),
        "not a dict": (py2_pickle([1, 2]), ["holds a list"]),
        "no labels": (py2_pickle({b"data": good[b"data"]}), ["lacks 'data' or 'labels'"]),
        "float data": (py2_pickle({**good, b"data": good[b"data"].astype(np.float32)}),
                       ["'data' is a float32 array of shape (2, 3072)", "uint8"]),
        "wrong width": (py2_pickle({**good, b"data": good[b"data"][:, :3000]}), ["shape (2, 3000)"]),
        "label count": (py2_pickle({**good, b"labels": [1, 2, 3]}), ["'labels' must be a list of 2 integers"]),
        "label type": (py2_pickle({**good, b"labels": [b"cat", b"dog"]}), ["'labels' must be a list of 2 integers"]),
        "big label": (pickle.dumps({**good, b"labels": [1, 2**40]}, 2), ["label 1099511627776 at index 1"]),
        "huge label": (pickle.dumps({**good, b"labels": [1, 2**70]}, 2), ["'labels' must be a list of 2 integers"]),
    }


@pytest.mark.parametrize("case", sorted(_bad_pickles(Path("x"))))
def test_bad_or_malicious_python_batches_give_one_clear_line(tmp_path, offline, case):
    marker = tmp_path / "pwned"
    payload, words = _bad_pickles(marker)[case]
    folder = tmp_path / "cifar-10" / "cifar-10-batches-py"
    write_cifar_py(folder, per_file=2)
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DataError) as e:
        load_splits("cifar-10", tmp_path, val_size=1, split_seed=0)
    msg = str(e.value)
    assert "\n" not in msg and "test_batch" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    assert not marker.exists()  # nothing the file asked for ran


@CORRUPTION
@given(m=mutation, which=st.sampled_from(["data_batch_1", "test_batch"]))
def test_corrupt_python_batch_is_rejected_or_loads_whole_images(tmp_path_factory, monkeypatch, m, which):
    monkeypatch.setattr(download, "_fetch", lambda url, dest: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    root = tmp_path_factory.mktemp("cifar-py")
    folder = root / "cifar-10" / "cifar-10-batches-py"
    write_cifar_py(folder, per_file=3)
    f = folder / which
    f.write_bytes(mutate(f.read_bytes(), m))
    try:
        s = load_splits("cifar-10", root, val_size=1, split_seed=0, download=False)
    except DataError as e:
        # the file's own name, or (for a bad training label) the training batches' pattern
        assert "\n" not in str(e) and (which in str(e) or "data_batch_*" in str(e)), str(e)
        return
    n_test = len(s.test_x)
    assert s.train_x.shape[1:] == s.test_x.shape[1:] == (3, 32, 32)
    assert len(s.train_x) + len(s.val_x) == 15 and n_test == 3  # only pixel or label values changed
    assert int(s.train_y.max()) <= 9 and int(s.test_y.max()) <= 9
