"""Small data files in the exact on-disk formats (written independently of the code under test),
and random corruptions of them for property tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: Per-class counts of real MNIST's 60000 training labels.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Serialize ``arr`` as IDX (big-endian)."""
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
    imgs = lambda n: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n_train) % 10 if train_labels is None else np.asarray(train_labels)
    sfx = ".gz" if gz else ""
    write(folder / (IDX_NAMES[0] + sfx), idx_bytes(imgs(n_train)), gz)
    write(folder / (IDX_NAMES[1] + sfx), idx_bytes(labels), gz)
    write(folder / (IDX_NAMES[2] + sfx), idx_bytes(imgs(n_test)), gz)
    write(folder / (IDX_NAMES[3] + sfx), idx_bytes(np.arange(n_test) % 10), gz)


#: One random corruption: (kind, position or count, byte value); see :func:`mutate`.
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("append"), st.integers(1, 64), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
)


def mutate(b: bytes, m: tuple[str, int, int]) -> bytes:
    """Apply one corruption: flip bits of a byte, truncate, append bytes, or insert a byte."""
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
