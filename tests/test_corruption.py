"""Property tests: random corruptions of valid data files give a clear DataError, never a crash
from deep inside numpy/gzip and never a wrong-sized data set."""

from __future__ import annotations

import gzip
import hashlib
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lth import data
from lth.data import DataError, load_splits, read_idx

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

LABELS_SHA = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"  # ../shared/datasets/README.md


@pytest.fixture(scope="module")
def labels_raw(shared_data) -> bytes:
    raw = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == LABELS_SHA
    return raw


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 64), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
)


def mutate(b: bytes, m: tuple[str, int, int]) -> bytes:
    kind, a, v = m
    if kind == "flip":
        i = a % len(b)
        return b[:i] + bytes([b[i] ^ v]) + b[i + 1:]
    if kind == "truncate":
        return b[: a % len(b)]
    if kind == "append":
        return b + bytes([v]) * a
    i = a % (len(b) + 1)
    return b[:i] + bytes([v]) + b[i:]


@SETTINGS
@given(m=mutation, gz=st.booleans())
def test_any_change_to_a_checksummed_file_is_a_data_error(tmp_path_factory, labels_raw, m, gz):
    bad = mutate(labels_raw, m)
    path = tmp_path_factory.mktemp("c") / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(DataError) as e:
        read_idx(path, sha256=LABELS_SHA)
    assert str(path) in str(e.value)


@SETTINGS
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


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


@SETTINGS
@given(m=mutation, shape=st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_unchecksummed_idx_is_either_rejected_or_exactly_the_declared_size(tmp_path_factory, m, shape):
    arr = np.arange(math.prod(shape), dtype=np.uint8).reshape(shape)
    bad = mutate(_idx(arr), m)
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


RECORD = 1 + 3 * 32 * 32


def _write_cifar(root: Path, per_file: int = 3) -> None:
    d = root / "cifar-10" / "cifar-10-batches-bin"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        recs = rng.integers(0, 256, size=(per_file, RECORD), dtype=np.uint8)
        recs[:, 0] = np.arange(per_file) % 10
        (d / name).write_bytes(recs.tobytes())


@SETTINGS
@given(m=mutation, which=st.sampled_from(["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"]))
def test_corrupt_cifar_batch_is_rejected_or_exactly_whole_records(tmp_path_factory, monkeypatch, m, which):
    def offline(url, dest):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(data, "_fetch", offline)
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
