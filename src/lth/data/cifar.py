"""CIFAR-10 in both published formats: the binary version and the Python (pickle) version.

Both hold five training batches and one test batch of 10,000 32x32 RGB images each, stored as
R, G, B planes of row-major 32x32 bytes, so either reshapes to NCHW without a transposition:

* binary (``cifar-10-binary.tar.gz``, folder ``cifar-10-batches-bin/``): ``data_batch_1.bin`` ..
  ``data_batch_5.bin`` and ``test_batch.bin``, records of 1 label byte + 3072 pixel bytes;
* Python (``cifar-10-python.tar.gz``, folder ``cifar-10-batches-py/``): ``data_batch_1`` ..
  ``data_batch_5`` and ``test_batch``, each a pickle of a dict whose ``b"data"`` is a uint8
  array of shape (10000, 3072) and ``b"labels"`` a list of 10000 ints.

Which one is used (the first that applies), under ``<root>/cifar-10/``:

1. complete extracted binary files, in ``cifar-10-batches-bin/`` or loose in ``cifar-10/``;
2. complete extracted Python files, in ``cifar-10-batches-py/`` or loose in ``cifar-10/``;
3. the official binary archive, then the official Python archive, MD5-verified and extracted
   (only the six batch files, never arbitrary archive paths);
4. a download of the binary archive (when allowed), MD5-verified before anything is extracted.

Binary comes first because it needs no unpickling and existing folders then load exactly as
before. Pickles are never loaded with plain :mod:`pickle`: a restricted unpickler admits only
what these files contain (dicts, lists, bytes, str, int and numpy arrays rebuilt by numpy's own
reconstruct functions) and refuses anything else, so a tampered file cannot run code.

CIFAR-10 is only published as archives; their official MD5s are known but per-file hashes are
not, and none are invented here. The archive checksum is therefore enforced whenever an archive
is downloaded or found, while loose batch files get structural checks only (record size, array
type and shape here, label range in :mod:`lth.data.splits`). This is also what lets tests use
tiny hand-written CIFAR files.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .download import download_verified, missing_files_error
from .errors import DataError
from .paths import DataRoot
from .registry import ArchiveSpec, DatasetSpec, FileSpec, RawData, register

_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32
_PIXELS = 3 * 32 * 32

#: The official Python-version archive. Found in ``<root>/cifar-10/`` it is verified and
#: extracted like the binary one; downloads fetch the binary archive (the spec's ``archive``).
PYTHON_ARCHIVE = ArchiveSpec(
    filename="cifar-10-python.tar.gz",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    md5="c58f30108f718f92721af3b95e74349a",
    member_prefix="cifar-10-batches-py/",
)


def _read_cifar_batches(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 binary batches: records of 1 label byte + R, G, B planes of 32x32 bytes.

    Because the pixel bytes are already planar (channel, row, column), a reshape gives NCHW
    without any transposition.
    """
    chunks = []
    for p in paths:
        try:
            raw = np.fromfile(p, dtype=np.uint8)
        except OSError as e:
            raise DataError(f"{p}: cannot read file ({e})") from None
        if raw.size == 0 or raw.size % _CIFAR_RECORD:
            raise DataError(
                f"{p}: size {raw.size} bytes is not a positive multiple of the "
                f"{_CIFAR_RECORD}-byte CIFAR-10 record (1 label byte + 3072 pixel bytes): the file "
                f"is truncated or not a CIFAR-10 binary batch (the last record has "
                f"{raw.size % _CIFAR_RECORD} bytes). Delete it and extract/download it again."
            )
        chunks.append(raw.reshape(-1, _CIFAR_RECORD))
    records = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    labels = records[:, 0].copy()
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return images, labels


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What ``_codecs.encode`` does for a bytes object pickled by Python 3 at protocol 2 or
    lower (``_codecs.encode(str, "latin1")``); any other codec is refused, so a pickle cannot
    reach the codec registry."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r}")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR-10 pickle may name: numpy's array and dtype reconstructors
    (under numpy 1's and numpy 2's module names, which pickles record) and bytes decoding."""
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RefusedGlobal(Exception):
    """A pickle named a callable outside :func:`_allowed_globals`."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, bytes, str, numbers and numpy arrays.

    Every global a pickle names goes through :meth:`find_class`, the only way a pickle reaches
    code; anything outside :func:`_allowed_globals` is refused before it is imported.
    Persistent ids are refused by :class:`pickle.Unpickler` itself (no ``persistent_load``).
    """

    def __init__(self, file: io.BytesIO) -> None:
        # Python 2 pickled str as bytes; "bytes" keeps them so (the official files' keys are
        # b"data" and b"labels"), and numpy accepts bytes for its array and dtype state.
        super().__init__(file, encoding="bytes")
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(repr(f"{module}.{name}")) from None


def _read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one Python-version batch with the restricted unpickler and check its structure."""
    fix = "Delete it and extract cifar-10-python.tar.gz (or download the data set) again."
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e})") from None
    stream = io.BytesIO(raw)
    try:
        # numpy may warn while rebuilding a damaged array or dtype state; the checks below (or
        # the exception) say what is wrong, once, instead
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = _RestrictedUnpickler(stream).load()
    except _RefusedGlobal as e:
        raise DataError(
            f"{path}: refused to unpickle: the file asks to call {e}, which a CIFAR-10 batch never "
            "contains (only dicts, lists, bytes, str, int and numpy arrays are allowed); it is not "
            f"an official file and may be malicious. {fix}"
        ) from None
    except Exception as e:  # noqa: BLE001
        # Unpickling damaged bytes can fail inside the pickle machine or inside numpy's
        # reconstructors with any exception type; every one of them means "not a valid batch".
        reason = " ".join(str(e).split())  # one line, whatever the exception's text
        raise DataError(
            f"{path}: not a readable CIFAR-10 Python batch ({type(e).__name__}: {reason}); the file "
            f"is truncated or corrupt. {fix}"
        ) from None
    if stream.tell() != len(raw):
        raise DataError(f"{path}: {len(raw) - stream.tell()} unexpected bytes after the end of the pickle; "
                        f"the file is corrupt. {fix}")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, not the dict of a CIFAR-10 Python batch. {fix}")
    fields = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = fields.get("data"), fields.get("labels")
    if data is None or labels is None:
        raise DataError(f"{path}: the batch dict lacks 'data' or 'labels' (keys: "
                        f"{sorted(map(str, fields))[:10]}); it is not a CIFAR-10 Python batch. {fix}")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[0] > 0 and data.shape[1] == _PIXELS):
        what = (f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else f"a {type(data).__name__}")
        raise DataError(f"{path}: 'data' is {what}, expected a uint8 array of shape (N, {_PIXELS}) "
                        f"(N images of R, G, B planes of 32x32). {fix}")
    try:
        label_arr = np.asarray(labels)
    except (ValueError, TypeError, OverflowError):
        label_arr = np.asarray([], dtype=object)
    if label_arr.ndim != 1 or label_arr.dtype.kind not in "iu" or len(label_arr) != len(data):
        raise DataError(f"{path}: 'labels' must be a list of {len(data)} integers, one per image, got "
                        f"{type(labels).__name__} of {len(labels) if hasattr(labels, '__len__') else '?'} "
                        f"{label_arr.dtype} entries. {fix}")
    images = np.ascontiguousarray(data).reshape(-1, 3, 32, 32)
    # int64 keeps any out-of-range label intact for lth.data.splits to report
    return images, label_arr.astype(np.int64)


def _read_python_batches(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_python_batch(p) for p in paths]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


@dataclass(frozen=True)
class _Format:
    """One published layout of CIFAR-10: its archive, its batch files and their reader."""

    archive: ArchiveSpec
    train: tuple[str, ...]
    test: str
    read: Callable[[Sequence[Path]], tuple[np.ndarray, np.ndarray]]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.train, self.test)

    def folders(self, base: Path) -> tuple[Path, Path]:
        """Where extracted files are looked for: the archive's own folder, then ``base``."""
        return base / self.archive.member_prefix.rstrip("/"), base

    def complete(self, folder: Path) -> bool:
        return all((folder / n).is_file() for n in self.names)


def _formats(spec: DatasetSpec) -> tuple[_Format, _Format]:
    """Binary first, then Python (the precedence of the module docstring)."""
    assert spec.archive is not None
    return (
        _Format(spec.archive, _CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE, _read_cifar_batches),
        _Format(PYTHON_ARCHIVE, tuple(n.removesuffix(".bin") for n in _CIFAR_TRAIN_FILES),
                _CIFAR_TEST_FILE.removesuffix(".bin"), _read_python_batches),
    )


def _extract_cifar(archive: Path, spec: ArchiveSpec, names: Sequence[str], dest_dir: Path) -> None:
    """Verify and extract only the expected batch members (never arbitrary archive paths)."""
    if spec.md5 is not None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(archive, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != spec.md5:
            raise DataError(
                f"{archive}: checksum mismatch, the archive is corrupt or incomplete: expected "
                f"MD5 {spec.md5}, got {digest.hexdigest()}. Delete it and download it again."
            )
    wanted = {spec.member_prefix + n: n for n in names}
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            seen = set()
            for member in tar:
                if member.name in wanted and member.isfile():
                    src = tar.extractfile(member)
                    assert src is not None
                    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, suffix=".part")
                    try:
                        with os.fdopen(fd, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        os.replace(tmp_name, dest_dir / wanted[member.name])
                    finally:
                        Path(tmp_name).unlink(missing_ok=True)
                    seen.add(member.name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{archive}: cannot extract ({e}); the archive is corrupt. Delete it and download "
            "it again."
        ) from None
    if len(seen) != len(wanted):
        absent = sorted(set(wanted) - seen)
        raise DataError(f"{archive}: archive lacks the members {absent}; it is not {spec.filename}")


def load_cifar10(spec: DatasetSpec, root: DataRoot | None, download: bool) -> RawData:
    """Loader for CIFAR-10 in either published format (precedence: see the module docstring).

    Extracted files are looked for in ``<root>/cifar-10/cifar-10-batches-bin/`` or
    ``.../cifar-10-batches-py/``, then loose in ``<root>/cifar-10/``. If no format is complete,
    an official archive found in ``<root>/cifar-10/`` (or the binary one downloaded there) is
    MD5-verified and extracted into its folder; a downloaded archive is deleted after extraction.
    """
    assert root is not None and spec.archive is not None
    base = root.path / spec.name
    formats = _formats(spec)
    found = next(((f, d) for f in formats for d in f.folders(base) if f.complete(d)), None)
    errors: list[str] = []
    if found is None:
        for f in formats:
            archive = base / f.archive.filename
            if archive.is_file():
                folder = f.folders(base)[0]
                _extract_cifar(archive, f.archive, f.names, folder)
                found = (f, folder)
                break
    if found is None and download:
        binary = formats[0]
        folder = binary.folders(base)[0]

        def verify(tmp: Path) -> None:
            _extract_cifar(tmp, binary.archive, binary.names, folder)

        errors = download_verified(binary.archive.urls, base / binary.archive.filename, verify)
        (base / binary.archive.filename).unlink(missing_ok=True)  # the extracted files are all we need
        if not errors:
            found = (binary, folder)
    if found is None:
        # report the format and folder closest to complete (binary, the downloadable one, on ties)
        fmt, present = max(((f, d) for f in formats for d in f.folders(base)),
                           key=lambda fd: sum((fd[1] / n).is_file() for n in fd[0].names))
        missing = [n for n in fmt.names if not (present / n).is_file()]
        looked_in = (*formats[0].folders(base), formats[1].folders(base)[0])
        note = (f"Alternatively put the official {formats[0].archive.filename} or "
                f"{formats[1].archive.filename} into {base}/, or the extracted Python version "
                f"({', '.join(formats[1].names)}) into {looked_in[2]}/.")
        raise missing_files_error(spec, root, missing, looked_in, download, errors, note)

    fmt, folder = found
    trx, try_ = fmt.read([folder / n for n in fmt.train])
    tex, tey = fmt.read([folder / fmt.test])
    return RawData(trx, try_, tex, tey, f"{folder}/data_batch_*{'.bin' if fmt is formats[0] else ''}",
                   str(folder / fmt.test))


register(
    DatasetSpec(
        name="cifar-10",
        input_shape=(3, 32, 32),
        num_classes=10,
        default_val_size=5000,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        pixel_scale=255.0,
        loader=load_cifar10,
        # Per-file hashes are not known; integrity comes from the archive MD5. These are the
        # binary version's names (the Python version's are the same without ".bin").
        files=tuple(FileSpec(n) for n in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)),
        archive=ArchiveSpec(
            filename="cifar-10-binary.tar.gz",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
            md5="c32a1d4ab5d03f1284b67883e8d87530",
            member_prefix="cifar-10-batches-bin/",
        ),
        description="CIFAR-10 32x32 RGB: 50000 train / 10000 test (binary or Python version)",
    ),
    aliases=("cifar10",),
)
