"""Tests for lth.data: IDX parsing, integrity checks, splitting, downloads and CIFAR-10 layout.

Real MNIST / Fashion-MNIST come from ../shared/datasets (tests/conftest.py; a missing copy is a
failure, not a skip). CIFAR-10 is not available, so its tests write tiny files in the exact binary
format. No test touches the network: ``lth.data._fetch`` is monkeypatched wherever a download
could happen.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import find_data_root, require_data
from lth import data
from lth.data import (
    DATASETS,
    DataError,
    Splits,
    dataset_info,
    dataset_names,
    load_splits,
    read_idx,
    resolve_data_dir,
    split_indices,
)

SHARED = find_data_root("mnist") or Path("/nonexistent/lth-test-data")
MNIST_DIR = SHARED / "mnist"


def _require(dataset: str) -> pytest.MarkDecorator:
    """Tests on real data skip without it (tests/helpers.py), and fail under LTH_REQUIRE_DATA=1."""

    def check(fn):
        def wrapper(*a, **kw):
            require_data(dataset)
            return fn(*a, **kw)

        return functools.wraps(fn)(wrapper)

    return check


needs_mnist = _require("mnist")
needs_fashion = _require("fashion-mnist")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ------------------------------------------------------------------------------------ helpers


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Serialize ``arr`` as IDX (big-endian), written independently of the code under test."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + np.asarray(arr, dtype=dtypes[code]).tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_idx_set(folder: Path, n_train: int, n_test: int, train_labels=None, gz=True) -> None:
    """Write a small, structurally valid MNIST-style set of four IDX files."""
    rng = np.random.default_rng(0)
    imgs = lambda n: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)  # noqa: E731
    labels = np.arange(n_train) % 10 if train_labels is None else np.asarray(train_labels)
    sfx = ".gz" if gz else ""
    write(folder / (IDX_NAMES[0] + sfx), idx_bytes(imgs(n_train)), gz)
    write(folder / (IDX_NAMES[1] + sfx), idx_bytes(labels), gz)
    write(folder / (IDX_NAMES[2] + sfx), idx_bytes(imgs(n_test)), gz)
    write(folder / (IDX_NAMES[3] + sfx), idx_bytes(np.arange(n_test) % 10), gz)


@pytest.fixture
def no_checksums(monkeypatch):
    """Make the registry's MNIST spec hash-free, so tiny hand-written IDX files reach the
    structural checks (real hashes would reject them first)."""
    spec = DATASETS["mnist"]
    files = tuple(dataclasses.replace(f, sha256=None) for f in spec.files)
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, files=files))


@pytest.fixture
def offline(monkeypatch):
    """Any download attempt fails like an offline machine; the attempted URLs are recorded."""
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(data, "_fetch", fetch)
    return calls


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No LTH_DATA, and the cache dir pointed into tmp_path, so nothing real is consulted."""
    monkeypatch.delenv("LTH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def normalize(spec, raw_u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(raw_u8.astype(np.float32) / spec.pixel_scale)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------- registry and dirs


def test_registry_names_and_info():
    assert set(dataset_names()) == {"digits", "mnist", "fashion-mnist", "cifar-10"}
    assert dataset_info("MNIST") is DATASETS["mnist"]
    assert dataset_info("fashion_mnist") is DATASETS["fashion-mnist"]
    assert dataset_info("cifar10") is DATASETS["cifar-10"]
    for name in dataset_names():
        spec = dataset_info(name)
        assert spec.name == name
        assert len(spec.mean) == len(spec.std) == spec.input_shape[0]
        assert 0 < spec.default_val_size
    assert DATASETS["mnist"].input_shape == (1, 28, 28)
    assert DATASETS["digits"].input_shape == (1, 8, 8)
    assert DATASETS["cifar-10"].input_shape == (3, 32, 32)
    assert DATASETS["cifar-10"].archive.md5 == "c32a1d4ab5d03f1284b67883e8d87530"


@pytest.mark.parametrize(
    ("name", "mean", "std", "val_size"),
    [
        ("mnist", (0.1307,), (0.3081,), 5000),
        ("fashion-mnist", (0.2860,), (0.3530,), 5000),
        ("cifar-10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 5000),
        ("digits", (0.3053,), (0.3760,), 300),
    ],
)
def test_normalization_constants(name, mean, std, val_size):
    spec = dataset_info(name)
    assert spec.mean == mean and spec.std == std and spec.default_val_size == val_size


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError) as e:
        dataset_info("imagenet")
    msg = str(e.value)
    assert "imagenet" in msg
    for name in ("digits", "mnist", "fashion-mnist", "cifar-10"):
        assert name in msg
    with pytest.raises(DataError, match="imagenet"):
        load_splits("imagenet", val_size=0, split_seed=0)


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    explicit, env, xdg, home = (tmp_path / n for n in ("explicit", "env", "xdg", "home"))
    monkeypatch.setenv("LTH_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("HOME", str(home))
    assert resolve_data_dir(explicit) == explicit
    assert resolve_data_dir(str(explicit)) == explicit
    assert resolve_data_dir(None) == env
    monkeypatch.setenv("LTH_DATA", "")  # empty counts as unset
    assert resolve_data_dir(None) == xdg / "lth" / "data"
    monkeypatch.delenv("LTH_DATA")
    assert resolve_data_dir(None) == xdg / "lth" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored per the XDG spec
    assert resolve_data_dir(None) == home / ".cache" / "lth" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir(None) == home / ".cache" / "lth" / "data"
    assert resolve_data_dir("~/d") == home / "d"
    assert not explicit.exists() and not env.exists()  # resolving never creates anything


def test_import_does_no_work():
    src = Path(__file__).resolve().parents[1] / "src"
    code = "import sys, lth.data; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# ---------------------------------------------------------------------------------- read_idx


@needs_mnist
def test_read_idx_real_mnist():
    train_x = read_idx(MNIST_DIR / "train-images-idx3-ubyte.gz")
    train_y = read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")
    test_y = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert np.bincount(train_y, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert train_x.flags.writeable
    assert 0 < train_x.mean() < 255


@pytest.mark.parametrize(
    ("code", "values"),
    [
        (0x08, np.array([[0, 1], [254, 255]])),
        (0x09, np.array([-128, -1, 0, 127])),
        (0x0B, np.array([[-32768, 258], [1, 32767]])),
        (0x0C, np.array([-(2**31), 65536, 1, 2**31 - 1])),
        (0x0D, np.array([1.5, -2.25, 0.0])),
        (0x0E, np.array([[[1e300]], [[-1e-300]]])),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip_all_types(tmp_path, code, values, gz):
    path = write(tmp_path / ("f.gz" if gz else "f"), idx_bytes(values, code), gz)
    arr = read_idx(path)
    assert arr.shape == values.shape
    assert arr.dtype.isnative
    np.testing.assert_array_equal(arr, values)


def _gz_truncated(payload: bytes) -> bytes:
    return gzip.compress(payload)[:-20]


def _gz_garbled(payload: bytes) -> bytes:
    b = bytearray(gzip.compress(payload))
    for i in range(12, len(b) - 8):
        b[i] ^= 0x5A
    return bytes(b)


GOOD = idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10) % 251)


@pytest.mark.parametrize(
    ("payload", "keywords"),
    [
        pytest.param(b"\x01\x02" + GOOD[2:], ["magic", "not an IDX"], id="bad-magic"),
        pytest.param(b"<!DOCTYPE html><html>", ["magic", "web page"], id="html-error-page"),
        pytest.param(GOOD[:2] + b"\x07" + GOOD[3:], ["type code", "0x07"], id="bad-dtype-code"),
        pytest.param(GOOD[:-7], ["truncated", "7 bytes missing"], id="truncated-data"),
        pytest.param(GOOD + b"\0\0\0", ["3 unexpected trailing bytes"], id="trailing-bytes"),
        pytest.param(GOOD[:9], ["truncated header"], id="truncated-header"),
        pytest.param(b"\0\0\x08\0", ["0 dimensions"], id="zero-dims"),
        pytest.param(b"", ["empty", "0 bytes"], id="empty"),
        pytest.param(b"\0\0", ["too short"], id="two-bytes"),
        pytest.param(_gz_truncated(GOOD), ["gzip", "truncated"], id="truncated-gzip"),
        pytest.param(_gz_garbled(GOOD), ["gzip", "corrupt"], id="garbled-gzip"),
        pytest.param(gzip.compress(GOOD[:-1]), ["1 bytes missing"], id="gzip-of-truncated"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, payload, keywords):
    path = write(tmp_path / "bad-idx3-ubyte.gz", payload)
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert str(path) in msg
    for kw in keywords:
        assert kw in msg
    assert GOOD == idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10) % 251)


def test_read_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


def test_read_idx_checksum_and_cache_invalidation(tmp_path):
    payload = idx_bytes(np.arange(10, dtype=np.uint8))
    good_hash = hashlib.sha256(payload).hexdigest()
    path = write(tmp_path / "labels.gz", payload, gz=True)
    np.testing.assert_array_equal(read_idx(path, sha256=good_hash), np.arange(10))
    np.testing.assert_array_equal(read_idx(path, sha256=good_hash.upper()), np.arange(10))
    # Same size, new content: the per-process verification cache must not hide the change.
    tampered = idx_bytes(np.array([1, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.uint8))
    path.write_bytes(gzip.compress(tampered))
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000_000))
    with pytest.raises(DataError) as e:
        read_idx(path, sha256=good_hash)
    msg = str(e.value)
    assert "checksum mismatch" in msg and good_hash in msg
    assert hashlib.sha256(tampered).hexdigest() in msg
    assert "Delete it" in msg


def test_read_idx_hashes_unchanged_file_once(tmp_path, monkeypatch):
    payload = idx_bytes(np.arange(10, dtype=np.uint8))
    good_hash = hashlib.sha256(payload).hexdigest()
    path = write(tmp_path / "labels", payload)
    real_sha256 = hashlib.sha256
    hashed: list[int] = []

    def counting_sha256(b=b""):
        hashed.append(len(b))
        return real_sha256(b)

    monkeypatch.setattr(data.hashlib, "sha256", counting_sha256)
    for _ in range(3):
        read_idx(path, sha256=good_hash)
    assert hashed == [len(payload)]
    read_idx(path)  # no expected hash: never hashes
    assert len(hashed) == 1


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    cut=st.integers(-3, 3),
)
def test_read_idx_exact_length_property(tmp_path_factory, shape, cut):
    """Any byte-count deviation from the header's promise is rejected, never half-read."""
    arr = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    payload = idx_bytes(arr, 0x0C)
    payload = payload[: len(payload) + cut] if cut < 0 else payload + b"\x01" * cut
    path = tmp_path_factory.mktemp("prop") / "f"
    path.write_bytes(payload)
    if cut == 0:
        np.testing.assert_array_equal(read_idx(path), arr)
    else:
        with pytest.raises(DataError):
            read_idx(path)


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
    assert f"val_size={val_size}" in str(e.value)
    assert "between 0 and 99" in str(e.value)


@pytest.mark.parametrize("val_size", [1.5, "10", True, None])
def test_split_indices_rejects_non_int(val_size):
    with pytest.raises(DataError, match="integer"):
        split_indices(100, val_size, 0)


# ---------------------------------------------------------------------------- MNIST & co


@pytest.fixture(scope="module")
def mnist0() -> Splits:
    require_data("mnist")
    return load_splits("mnist", SHARED, val_size=5000, split_seed=0, download=False)


@needs_mnist
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


@needs_mnist
def test_mnist_split_matches_index_bookkeeping(mnist0):
    """Train/val are exactly the rows chosen by split_indices: disjoint, covering, normalized."""
    spec = dataset_info("mnist")
    raw_x = read_idx(MNIST_DIR / "train-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28)
    raw_y = read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz").astype(np.int64)
    train_idx, val_idx = split_indices(60000, 5000, 0)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 60000
    assert torch.equal(mnist0.train_y, torch.from_numpy(raw_y)[train_idx])
    assert torch.equal(mnist0.val_y, torch.from_numpy(raw_y)[val_idx])
    torch.testing.assert_close(mnist0.val_x, normalize(spec, raw_x[val_idx.numpy()]))
    torch.testing.assert_close(mnist0.train_x[:2000], normalize(spec, raw_x[train_idx[:2000]]))


@needs_mnist
def test_mnist_split_seeds(mnist0):
    again = load_splits("mnist", SHARED, val_size=5000, split_seed=0, download=False)
    assert torch.equal(again.val_y, mnist0.val_y) and torch.equal(again.val_x, mnist0.val_x)
    assert torch.equal(again.test_x, mnist0.test_x)
    other = load_splits("mnist", SHARED, val_size=5000, split_seed=1, download=False)
    assert not torch.equal(other.val_x, mnist0.val_x)
    assert torch.equal(other.test_x, mnist0.test_x)  # the test set never depends on the seed
    # Disjointness by content, independently of index bookkeeping: hash every row.
    hashes = lambda t: {hashlib.sha1(r.numpy().tobytes()).digest() for r in t}  # noqa: E731
    val_rows = hashes(other.val_x)
    assert not val_rows & hashes(other.train_x)


@needs_mnist
def test_mnist_val_size_out_of_range():
    with pytest.raises(DataError) as e:
        load_splits("mnist", SHARED, val_size=60000, split_seed=0, download=False)
    assert "val_size=60000" in str(e.value) and "between 0 and 59999" in str(e.value)


@needs_fashion
def test_fashion_mnist_loads():
    s = load_splits("fashion-mnist", SHARED, val_size=5000, split_seed=3, download=False)
    assert s.name == "fashion-mnist"
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (55000, 5000, 10000)
    assert s.train_x.shape[1:] == (1, 28, 28)
    counts = torch.bincount(s.train_y, minlength=10) + torch.bincount(s.val_y, minlength=10)
    assert counts.tolist() == [6000] * 10
    assert abs(s.train_x.mean().item()) < 0.02


@needs_mnist
def test_checksum_mismatch_on_local_copy(tmp_path, offline):
    """A single flipped byte in a real file (labels stay valid) is caught by SHA-256."""
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for name in IDX_NAMES:
        (folder / f"{name}.gz").symlink_to(MNIST_DIR / f"{name}.gz")
    labels = bytearray(gzip.decompress((MNIST_DIR / "train-labels-idx1-ubyte.gz").read_bytes()))
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


# ----------------------------------------------------------------- missing files / download


def test_offline_missing_files_error(tmp_path, monkeypatch, offline, isolated_env):
    root = tmp_path / "via-env"
    monkeypatch.setenv("LTH_DATA", str(root))
    write(root / "mnist" / "t10k-labels-idx1-ubyte", idx_bytes(np.arange(5) % 10))
    with pytest.raises(DataError) as e:
        load_splits("mnist", val_size=5000, split_seed=0)
    msg = str(e.value)
    assert "3 required file(s) missing" in msg
    for name in IDX_NAMES[:3]:
        assert name in msg
    assert "missing: t10k-labels" not in msg
    assert f"Looked in:\n  {root / 'mnist'}\n" in msg
    assert "LTH_DATA environment variable" in msg
    assert "--data-dir" in msg and "LTH_DATA=" in msg
    assert "network is unreachable" in msg
    assert len(offline) == 3 * 2  # every missing file tried on both mirrors
    assert all(u.startswith("https://") and u.endswith(".gz") for u in offline)
    leftovers = sorted(p.name for p in (root / "mnist").iterdir())
    assert leftovers == ["t10k-labels-idx1-ubyte"]  # no partial downloads left behind


def test_missing_files_with_download_disabled(tmp_path, offline, isolated_env):
    with pytest.raises(DataError) as e:
        load_splits("fashion-mnist", tmp_path, val_size=10, split_seed=0, download=False)
    msg = str(e.value)
    assert "4 required file(s) missing" in msg and "download=False" in msg
    assert str(tmp_path / "fashion-mnist") in msg and "--data-dir" in msg
    assert offline == []


def test_missing_files_cache_dir_reported(tmp_path, offline, isolated_env):
    with pytest.raises(DataError) as e:
        load_splits("mnist", val_size=10, split_seed=0, download=False)
    msg = str(e.value)
    assert str(tmp_path / "xdg" / "lth" / "data" / "mnist") in msg
    assert "cache" in msg


def test_pointing_at_the_dataset_folder_itself_gives_hint(tmp_path, offline):
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path / "mnist", val_size=10, split_seed=0, download=False)
    assert "must be its parent" in str(e.value)


@needs_mnist
def test_download_with_fake_fetch(tmp_path, monkeypatch):
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:  # serves the local copy instead of the internet
        calls.append(url)
        shutil.copyfile(MNIST_DIR / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(data, "_fetch", fetch)
    s = load_splits("mnist", tmp_path, val_size=5000, split_seed=0)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (55000, 5000, 10000)
    assert calls == [DATASETS["mnist"].mirrors[0] + n + ".gz" for n in IDX_NAMES]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        n + ".gz" for n in IDX_NAMES
    )
    calls.clear()
    load_splits("mnist", tmp_path, val_size=5000, split_seed=0)
    assert calls == []  # present files are not downloaded again


@needs_mnist
def test_download_checksum_mismatch_is_deleted(tmp_path, monkeypatch):
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        payload = bytearray(gzip.decompress((MNIST_DIR / name).read_bytes()))
        if name.startswith("t10k-labels"):
            payload[-1] = (payload[-1] + 1) % 10  # valid structure, wrong content
        dest.write_bytes(gzip.compress(bytes(payload), compresslevel=1))

    monkeypatch.setattr(data, "_fetch", fetch)
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=10, split_seed=0)
    msg = str(e.value)
    assert "missing: t10k-labels-idx1-ubyte" in msg
    assert "checksum mismatch" in msg
    assert sum("t10k-labels" in u for u in calls) == 2  # both mirrors tried
    present = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert present == sorted(n + ".gz" for n in IDX_NAMES[:3])  # bad one deleted, no .part


def test_download_into_unwritable_place_reports_it(tmp_path, offline):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(DataError) as e:
        load_splits("mnist", blocker, val_size=10, split_seed=0)
    assert "cannot create directory" in str(e.value)
    assert offline == []


# ------------------------------------------------------------------------------------ digits


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
    with pytest.raises(DataError, match=f"val_size={val_size}"):
        load_splits("digits", val_size=val_size, split_seed=0)


# ---------------------------------------------------------------------------------- CIFAR-10


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
    monkeypatch.setattr(data, "_fetch", lambda url, dest: Path(dest).write_bytes(tarball))
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
    monkeypatch.setattr(data, "_fetch", lambda url, dest: Path(dest).write_bytes(tarball))
    with pytest.raises(DataError) as e:
        load_splits("cifar-10", tmp_path / "root", val_size=3, split_seed=0)
    assert "checksum mismatch" in str(e.value) and "MD5" in str(e.value)
    leftover = [p for p in (tmp_path / "root" / "cifar-10").rglob("*") if p.is_file()]
    assert leftover == []
