"""Tests for lth.data.idx: IDX parsing and checksums, including property tests where random
corruptions of valid files must give a clear DataError, never a crash from deep inside
numpy/gzip and never a wrong-sized array."""

from __future__ import annotations

import gzip
import hashlib
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lth.data import DataError, idx, read_idx
from tests.data.files import MNIST_TRAIN_COUNTS, idx_bytes, mutate, mutation, write

LABELS_SHA = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"  # ../shared/datasets/README.md
CORRUPTION = settings(max_examples=60, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_read_idx_real_mnist(shared_data):
    mnist_dir = shared_data / "mnist"
    train_x = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    train_y = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    test_y = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
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
    assert idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10) % 251) == GOOD


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

    monkeypatch.setattr(idx.hashlib, "sha256", counting_sha256)
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


# ------------------------------------------------------------------ random corruptions


@pytest.fixture(scope="module")
def labels_raw(shared_data) -> bytes:
    raw = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == LABELS_SHA
    return raw


@CORRUPTION
@given(m=mutation, gz=st.booleans())
def test_any_change_to_a_checksummed_file_is_a_data_error(tmp_path_factory, labels_raw, m, gz):
    bad = mutate(labels_raw, m)
    path = tmp_path_factory.mktemp("c") / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(DataError) as e:
        read_idx(path, sha256=LABELS_SHA)
    assert str(path) in str(e.value)


@CORRUPTION
@given(m=mutation)
def test_corrupt_gzip_stream_is_a_data_error(tmp_path_factory, labels_raw, m):
    blob = gzip.compress(labels_raw)
    bad = mutate(blob, m)
    path = tmp_path_factory.mktemp("g") / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bad)
    try:
        arr = read_idx(path, sha256=LABELS_SHA)
    except DataError:
        return
    # gzip ignores some header bytes (mtime, flags it does not use): then the content is intact.
    assert arr.shape == (10_000,)
    assert hashlib.sha256(gzip.decompress(bad)).hexdigest() == LABELS_SHA


@CORRUPTION
@given(m=mutation, shape=st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_unchecksummed_idx_is_either_rejected_or_exactly_the_declared_size(tmp_path_factory, m, shape):
    arr = np.arange(math.prod(shape), dtype=np.uint8).reshape(shape)
    bad = mutate(idx_bytes(arr), m)
    path = tmp_path_factory.mktemp("u") / "x-idx"
    path.write_bytes(bad)
    try:
        out = read_idx(path)
    except DataError:
        return
    ndim = bad[3]
    dims = [int.from_bytes(bad[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    assert list(out.shape) == dims
    assert len(bad) == 4 + 4 * ndim + out.nbytes
