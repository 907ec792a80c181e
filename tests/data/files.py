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


class Py2Pickler:
    """Serialize like Python 2's ``cPickle.dump(obj, f, 2)``, the writer of CIFAR-10's Python
    version, written opcode by opcode (not with this Python's pickle, which encodes bytes and str
    differently): ``bytes`` is a Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), a numpy array
    is ``numpy.core.multiarray._reconstruct`` + BUILD with numpy 1's state tuples, and containers
    are memoized with BINPUT and filled in batches of 1000 as cPickle does."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 0

    def put(self) -> None:
        self.memo += 1
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + self.memo.to_bytes(4, "little")

    def dump(self, obj) -> bytes:
        self.save(obj)
        self.out += b"."  # STOP
        return bytes(self.out)

    def save(self, obj) -> None:
        o = self.out
        if obj is None:
            o += b"N"
        elif obj is True or obj is False:
            o += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                o += b"K" + bytes([obj])
            elif 0 <= obj < 65536:
                o += b"M" + obj.to_bytes(2, "little")
            else:
                o += b"J" + obj.to_bytes(4, "little", signed=True)
        elif isinstance(obj, bytes):
            o += (b"U" + bytes([len(obj)])) if len(obj) < 256 else (b"T" + len(obj).to_bytes(4, "little"))
            o += obj
            self.put()
        elif isinstance(obj, tuple):
            if not obj:
                o += b")"
                return
            if len(obj) <= 3:
                for x in obj:
                    self.save(x)
                o += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(obj)]
            else:
                o += b"("
                for x in obj:
                    self.save(x)
                o += b"t"
            self.put()
        elif isinstance(obj, list):
            o += b"]"
            self.put()
            for i in range(0, len(obj), 1000):
                o += b"("
                for x in obj[i:i + 1000]:
                    self.save(x)
                o += b"e"  # APPENDS
        elif isinstance(obj, dict):
            o += b"}"
            self.put()
            o += b"("
            for k, v in obj.items():
                self.save(k)
                self.save(v)
            o += b"u"  # SETITEMS
        elif isinstance(obj, np.ndarray):
            self.glob(b"numpy.core.multiarray", b"_reconstruct")
            self.glob(b"numpy", b"ndarray")
            self.save((0,))
            self.save(b"b")
            o += b"\x87R"  # TUPLE3, REDUCE
            self.put()
            o += b"("
            self.save(1)
            self.save(tuple(obj.shape))
            self.glob(b"numpy", b"dtype")
            self.save((obj.dtype.str[1:].encode(), 0, 1))
            o += b"R"
            self.put()
            self.save((3, b"|", None, None, None, -1, -1, 0))
            o += b"b"  # BUILD (the dtype's state)
            self.save(False)
            self.save(np.ascontiguousarray(obj).tobytes())
            o += b"t"  # the array's state tuple
            self.put()
            o += b"b"  # BUILD
        else:
            raise TypeError(type(obj))

    def glob(self, module: bytes, name: bytes) -> None:
        self.out += b"c" + module + b"\n" + name + b"\n"
        self.put()


def py2_pickle(obj) -> bytes:
    """``obj`` as Python 2's ``cPickle.dump(obj, f, 2)`` wrote it (see :class:`Py2Pickler`)."""
    return Py2Pickler().dump(obj)
