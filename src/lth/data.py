"""Data sets for lottery-ticket experiments: locating, verifying, parsing and splitting.

Every supported data set is small enough to live entirely in memory, so :func:`load_splits`
returns plain tensors (already normalized and on the requested device) instead of
``DataLoader`` objects: training loops then batch by indexing, which is faster than per-sample
Python datasets and makes runs exactly reproducible.

Layout of a data directory (the *root*), one folder per data set::

    <root>/mnist/train-images-idx3-ubyte.gz        (or the uncompressed file)
    <root>/mnist/train-labels-idx1-ubyte.gz
    <root>/mnist/t10k-images-idx3-ubyte.gz
    <root>/mnist/t10k-labels-idx1-ubyte.gz
    <root>/fashion-mnist/...                        (same four names)
    <root>/cifar-10/cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin
                                                    (or the .bin files directly in <root>/cifar-10/,
                                                    or the official cifar-10-binary.tar.gz there)

The root is chosen by :func:`resolve_data_dir`: explicit argument (``--data-dir``), else the
``LTH_DATA`` environment variable, else a per-user cache directory. ``digits`` (scikit-learn's
bundled 8x8 digits) needs no files at all, which makes it the data set for fast tests and CI.

Integrity policy (why it looks like this):

* IDX files (MNIST, Fashion-MNIST) are checked against the SHA-256 of their *uncompressed*
  content, so the check does not depend on how a mirror happened to gzip them, and a ``.gz``
  and a raw copy of the same file verify identically. Hashes are recorded per process (keyed by
  path, size, mtime and inode) so repeated loads do not re-hash unchanged files.
* CIFAR-10 is only published as an archive; its official MD5 is known but per-``.bin`` hashes are
  not, and none are invented here. The archive checksum is therefore enforced whenever an archive
  is downloaded or found, while loose ``.bin`` files get structural checks only (record size,
  label range). This is also what lets tests use tiny hand-written CIFAR files.
* In general a checksum is enforced exactly when the :class:`DatasetSpec` knows it
  (``FileSpec.sha256`` / ``ArchiveSpec.md5`` not ``None``).

All user-facing problems raise :class:`DataError` whose message names the file, the problem and
the fix. Nothing is done at import time (scikit-learn is imported lazily, nothing is read).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "ArchiveSpec",
    "DataError",
    "DatasetSpec",
    "FileSpec",
    "Splits",
    "dataset_info",
    "dataset_names",
    "load_splits",
    "read_idx",
    "resolve_data_dir",
    "split_indices",
]

log = logging.getLogger(__name__)

#: Environment variable naming the data root when no explicit directory is given.
ENV_VAR = "LTH_DATA"

#: Per-socket-operation timeout for downloads. Short, so that an offline machine fails fast
#: instead of hanging; it bounds each connect/read, not the whole (possibly large) transfer.
_DOWNLOAD_TIMEOUT_S = 20.0


class DataError(Exception):
    """A data set could not be found, downloaded, verified or parsed.

    The message is meant for the end user: it names the file or setting at fault, what is wrong
    with it, and how to fix it.
    """


# --------------------------------------------------------------------------------------------
# Specs and registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One required file of a data set.

    ``name`` is the canonical *uncompressed* file name; for IDX files a ``name + ".gz"`` copy is
    accepted too. ``sha256`` is the hash of the uncompressed content, or ``None`` when no
    trustworthy hash is known (then only structural checks apply).
    """

    name: str
    sha256: str | None = None


@dataclass(frozen=True)
class ArchiveSpec:
    """A downloadable archive that contains a data set's files (used for CIFAR-10)."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None
    #: Path prefix of the members inside the archive (e.g. ``"cifar-10-batches-bin/"``).
    member_prefix: str


class _Root(NamedTuple):
    """A resolved data root plus a human-readable note on how it was chosen (for messages)."""

    path: Path
    source: str


class _Raw(NamedTuple):
    """Unnormalized data as loaded from disk: uint8 images (N, C, H, W), integer labels (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    #: Descriptions (usually file paths) used in validation messages.
    train_source: str
    test_source: str


#: Signature of a data set's loader: (spec, root or None, download allowed) -> raw arrays.
Loader = Callable[["DatasetSpec", "_Root | None", bool], _Raw]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one data set.

    Attributes:
        name: registry key, also ``Splits.name``.
        input_shape: shape of one image, channels first.
        num_classes: labels must lie in ``0 .. num_classes - 1``.
        default_val_size: recommended validation size (taken from the training set).
        mean, std: per-channel normalization constants applied after scaling to [0, 1].
        pixel_scale: raw pixel values are divided by this to land in [0, 1] (255, or 16 for digits).
        files: required files (in their canonical, uncompressed names) with known hashes.
        mirrors: base URLs; a file is fetched from ``mirror + name + ".gz"`` (IDX data sets).
        archive: archive to fetch instead of single files (CIFAR-10).
        needs_data_dir: ``False`` for data sets bundled with a library (digits).
        loader: function producing the raw arrays; see :data:`Loader`.
        description: one line for listings.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    default_val_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_scale: float
    loader: Loader = field(repr=False)
    files: tuple[FileSpec, ...] = ()
    mirrors: tuple[str, ...] = ()
    archive: ArchiveSpec | None = None
    needs_data_dir: bool = True
    description: str = ""


@dataclass(frozen=True, eq=False, repr=False)
class Splits:
    """Train/validation/test tensors of one data set, normalized and on one device.

    ``eq=False`` on purpose: comparing tensors with ``==`` is elementwise, so a generated
    ``__eq__`` would raise; compare fields with ``torch.equal`` instead.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def __repr__(self) -> str:  # the default repr would print tensor contents
        return (
            f"Splits(name={self.name!r}, train={tuple(self.train_x.shape)}, "
            f"val={tuple(self.val_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"num_classes={self.num_classes}, device={self.train_x.device})"
        )


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32
_DIGITS_TEST_PER_CLASS = 36  # 360 test images, balanced over the 10 classes
_DIGITS_TEST_SEED = 20190301  # fixed forever: the digits test set must never change


# Loaders are defined further down; the registry is filled by plain assignments at the end of
# this module (cheap: only small frozen dataclasses, no I/O).
DATASETS: dict[str, DatasetSpec] = {}

_ALIASES = {"cifar10": "cifar-10", "fashion": "fashion-mnist", "fashionmnist": "fashion-mnist"}


def dataset_names() -> list[str]:
    """Names of all registered data sets, in registration order."""
    return list(DATASETS)


def dataset_info(name: str) -> DatasetSpec:
    """Return the spec of ``name`` (case-insensitive, ``_`` and ``-`` interchangeable).

    Raises:
        DataError: unknown name; the message lists the valid names.
    """
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key.replace("-", ""), key)
    try:
        return DATASETS[key]
    except KeyError:
        raise DataError(
            f"unknown data set {name!r}; valid names are: {', '.join(dataset_names())}"
        ) from None


# --------------------------------------------------------------------------------------------
# Data directory
# --------------------------------------------------------------------------------------------


def _default_cache_dir() -> tuple[Path, str]:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "lth" / "data", "default cache directory ($XDG_CACHE_HOME/lth/data)"
    return Path.home() / ".cache" / "lth" / "data", "default cache directory (~/.cache/lth/data)"


def _resolve_root(data_dir: str | os.PathLike[str] | None) -> _Root:
    if data_dir is not None and str(data_dir) != "":
        path, source = Path(data_dir), "the --data-dir / data_dir argument"
    elif os.environ.get(ENV_VAR, ""):
        path, source = Path(os.environ[ENV_VAR]), f"the {ENV_VAR} environment variable"
    else:
        path, source = _default_cache_dir()
    # abspath (not resolve): messages should show the path the user gave, minus "..".
    return _Root(Path(os.path.abspath(path.expanduser())), source)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return the data root to use: ``data_dir`` if given, else ``$LTH_DATA``, else the cache.

    The cache is ``$XDG_CACHE_HOME/lth/data`` (if that variable is set to an absolute path) or
    ``~/.cache/lth/data``. Empty strings count as "not given". The path is made absolute but
    not created: only a download creates directories.
    """
    return _resolve_root(data_dir).path


# --------------------------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, tuple[np.dtype, str]] = {
    0x08: (np.dtype(np.uint8), "unsigned byte"),
    0x09: (np.dtype(np.int8), "signed byte"),
    0x0B: (np.dtype(">i2"), "short"),
    0x0C: (np.dtype(">i4"), "int"),
    0x0D: (np.dtype(">f4"), "float"),
    0x0E: (np.dtype(">f8"), "double"),
}
_GZIP_MAGIC = b"\x1f\x8b"

#: (path, size, mtime_ns, inode, device, expected sha256) of files already verified.
_VERIFIED: set[tuple[str, int, int, int, int, str]] = set()


def _read_maybe_gzip(path: Path) -> bytes:
    """Read a file, transparently gunzipping it if its content (not its name) is gzip.

    Detecting by content handles both ``x.gz`` files that a browser already decompressed and
    raw files; IDX starts with ``00 00`` and gzip with ``1f 8b``, so there is no ambiguity.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e})") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{path}: corrupt or truncated gzip stream ({e or type(e).__name__}); the file was "
                "probably cut off during download or copy. Delete it and download/copy it again."
            ) from None
    elif path.suffix == ".gz" and data:
        log.debug("%s is named .gz but is not gzip-compressed; reading it as raw", path)
    return data


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse IDX bytes into a writable, native-endian array, validating every header field."""
    n = len(data)
    if n == 0:
        raise DataError(f"{path}: file is empty (0 bytes). Delete it and download/copy it again.")
    if n < 4:
        raise DataError(f"{path}: only {n} bytes, too short for the 4-byte IDX magic number")
    if data[0] != 0 or data[1] != 0:
        hint = ""
        if data[:1] in (b"<", b"{") or data[:5].lower() in (b"<!doc", b"<html"):
            hint = " It looks like a web page or JSON, i.e. a failed download."
        raise DataError(
            f"{path}: bad magic number {data[:4].hex(' ')}: not an IDX file (IDX files start "
            f"with 00 00 <type> <ndim>).{hint} Replace it with the original file."
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X} ({d[1]})" for c, d in _IDX_DTYPES.items())
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02X}; valid codes: {valid}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    if n < header:
        raise DataError(
            f"{path}: truncated header: {ndim} dimensions need a {header}-byte header but the "
            f"file has only {n} bytes. Delete it and download/copy it again."
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype, type_name = _IDX_DTYPES[code]
    count = 1
    for d in dims:
        count *= d
    expected = header + count * dtype.itemsize
    if n != expected:
        what = (
            f"truncated: {expected - n} bytes missing"
            if n < expected
            else f"{n - expected} unexpected trailing bytes"
        )
        raise DataError(
            f"{path}: {what} (header declares shape {dims} of {type_name} = {expected} bytes "
            f"in total, file has {n}). The file is corrupt or incomplete; delete it and "
            "download/copy it again."
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    # Copy into a writable native-endian array (frombuffer on bytes is read-only).
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _file_key(path: Path, sha256: str) -> tuple[str, int, int, int, int, str]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, sha256.lower())


def read_idx(path: str | os.PathLike[str], *, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian numpy array.

    The header is validated completely (magic ``00 00``, data-type code, number of dimensions)
    and the byte length must match the declared shape exactly, so a truncated or padded file
    raises instead of yielding a partial or silently wrong array.

    Args:
        path: the file; gzip is detected from the content, not the extension.
        sha256: if given, the expected SHA-256 of the *uncompressed* content. Checked after the
            structural checks (whose messages are more specific); successful checks are
            remembered for the process so an unchanged file is hashed once.

    Raises:
        DataError: missing/unreadable file, corrupt gzip, malformed IDX, or checksum mismatch.
    """
    p = Path(path)
    data = _read_maybe_gzip(p)
    arr = _parse_idx(data, p)
    if sha256 is not None:
        key = _file_key(p, sha256)
        if key not in _VERIFIED:
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256.lower():
                raise DataError(
                    f"{p}: checksum mismatch, the file is corrupt or not the official version: "
                    f"expected SHA-256 {sha256.lower()} (of the uncompressed content), got "
                    f"{actual}. Delete it and download/copy it again."
                )
            _VERIFIED.add(key)
    return arr


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` into ``dest`` (overwritten). Tests monkeypatch this to stay offline."""
    request = urllib.request.Request(url, headers={"User-Agent": "lth-data"})
    with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
        with open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)


#: Exceptions a download attempt may raise; anything else is a bug and propagates.
_FETCH_ERRORS = (OSError, urllib.error.URLError, http.client.HTTPException, ValueError, DataError)


def _download(urls: Sequence[str], dest: Path, verify: Callable[[Path], None]) -> list[str]:
    """Try ``urls`` in order until one yields a file that passes ``verify``.

    Each attempt goes to a temporary file in the destination directory and is renamed into
    place atomically only after verification, so an interrupted or corrupt download never
    leaves a file under the real name (and concurrent processes never see a partial file).

    Returns:
        An empty list on success, else one ``"url: error"`` line per failed attempt.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return [f"cannot create directory {dest.parent} ({e})"]
    errors: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s", url)
            _fetch(url, tmp)
            verify(tmp)
            os.replace(tmp, dest)
            return []
        except _FETCH_ERRORS as e:
            errors.append(f"{url}: {e}")
        finally:
            tmp.unlink(missing_ok=True)
    return errors


def _missing_error(
    spec: DatasetSpec,
    root: _Root,
    missing: Sequence[str],
    looked_in: Sequence[Path],
    download: bool,
    errors: Sequence[str],
    note: str = "",
) -> DataError:
    """Build the message for files that are neither present nor downloadable."""
    lines = [
        f"{spec.name}: {len(missing)} required file(s) missing: {', '.join(missing)}",
        "Looked in:",
        *(f"  {d}" for d in looked_in),
        f"(data root {root.path}, chosen by {root.source})",
    ]
    if not download:
        lines.append("Downloading was disabled (download=False).")
    elif errors:
        lines.append("Download failed (offline?):")
        lines.extend(f"  {e}" for e in errors)
    wanted = looked_in[0]
    lines += [
        "To fix, do one of:",
        f"  - pass --data-dir DIR (data_dir=DIR in Python) where DIR/{spec.name}/ holds the files,",
        f"  - set {ENV_VAR}=DIR in the environment (used when --data-dir is not given),",
        f"  - copy the files into {wanted}/",
    ]
    if spec.mirrors or spec.archive:
        sources = spec.archive.urls if spec.archive else spec.mirrors
        lines.append(f"  - or download them on a machine with internet access from {sources[0]}")
    if note:
        lines.append(note)
    if root.path.name == spec.name:
        lines.append(
            f"Note: {root.path} looks like the {spec.name} folder itself; the data directory must "
            f"be its parent ({root.path.parent})."
        )
    return DataError("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dataset(spec: DatasetSpec, root: _Root | None, download: bool) -> _Raw:
    """Loader for MNIST-style data sets: four IDX files in ``<root>/<name>/``."""
    assert root is not None
    folder = root.path / spec.name
    found: dict[str, Path] = {}
    missing: list[FileSpec] = []
    for f in spec.files:
        p = _find_idx(folder, f.name)
        if p is None:
            missing.append(f)
        else:
            found[f.name] = p

    errors: list[str] = []
    if missing and download and spec.mirrors:
        for f in missing:

            def verify(tmp: Path, f: FileSpec = f) -> None:
                read_idx(tmp, sha256=f.sha256)

            dest = folder / f"{f.name}.gz"
            errs = _download([m + f.name + ".gz" for m in spec.mirrors], dest, verify)
            if errs:
                errors.extend(errs)
            else:
                found[f.name] = dest
        missing = [f for f in missing if f.name not in found]
    if missing:
        raise _missing_error(
            spec, root, [f"{f.name}(.gz)" for f in missing], [folder], download, errors
        )

    arrays = {}
    for f in spec.files:
        path = found[f.name]
        try:
            arrays[f.name] = read_idx(path, sha256=f.sha256)
        except DataError as e:
            raise DataError(f"{e}\n(part of the {spec.name} data set under {folder})") from None
    c, h, w = spec.input_shape
    out = []
    for images, labels in ((_IDX_FILES[0], _IDX_FILES[1]), (_IDX_FILES[2], _IDX_FILES[3])):
        x, y = arrays[images], arrays[labels]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (h, w):
            raise DataError(
                f"{found[images]}: expected uint8 images of shape (N, {h}, {w}), got "
                f"{x.dtype} array of shape {x.shape}; this is not a {spec.name} image file"
            )
        if y.dtype != np.uint8 or y.ndim != 1:
            raise DataError(
                f"{found[labels]}: expected a 1-D uint8 label array, got {y.dtype} array of "
                f"shape {y.shape}; this is not a {spec.name} label file"
            )
        out.append((x.reshape(-1, c, h, w), y, f"{found[images]} / {found[labels]}"))
    (trx, try_, trs), (tex, tey, tes) = out
    return _Raw(trx, try_, tex, tey, trs, tes)


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


def _extract_cifar(archive: Path, spec: ArchiveSpec, dest_dir: Path) -> None:
    """Verify and extract only the expected ``.bin`` members (never arbitrary archive paths)."""
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
    wanted = {spec.member_prefix + n: n for n in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)}
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


def _load_cifar10(spec: DatasetSpec, root: _Root | None, download: bool) -> _Raw:
    """Loader for CIFAR-10's binary version.

    Looks for the six ``.bin`` files in ``<root>/cifar-10/cifar-10-batches-bin/`` then in
    ``<root>/cifar-10/``. If neither is complete, an official archive found in
    ``<root>/cifar-10/`` (or downloaded there) is MD5-verified and extracted into
    ``cifar-10-batches-bin/``; a downloaded archive is deleted after extraction.
    """
    assert root is not None and spec.archive is not None
    base = root.path / spec.name
    batch_dir = base / spec.archive.member_prefix.rstrip("/")
    names = (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)
    candidates = (batch_dir, base)

    def complete(d: Path) -> bool:
        return all((d / n).is_file() for n in names)

    folder = next((d for d in candidates if complete(d)), None)
    errors: list[str] = []
    if folder is None:
        archive = base / spec.archive.filename
        if archive.is_file():
            _extract_cifar(archive, spec.archive, batch_dir)
            folder = batch_dir
        elif download:

            def verify(tmp: Path) -> None:
                _extract_cifar(tmp, spec.archive, batch_dir)  # type: ignore[arg-type]

            errors = _download(spec.archive.urls, archive, verify)
            archive.unlink(missing_ok=True)  # the extracted .bin files are all we need
            if not errors:
                folder = batch_dir
    if folder is None:
        present = max(candidates, key=lambda d: sum((d / n).is_file() for n in names))
        missing = [n for n in names if not (present / n).is_file()]
        note = f"Alternatively put the official {spec.archive.filename} into {base}/."
        raise _missing_error(spec, root, missing, candidates, download, errors, note)

    train_paths = [folder / n for n in _CIFAR_TRAIN_FILES]
    test_path = folder / _CIFAR_TEST_FILE
    trx, try_ = _read_cifar_batches(train_paths)
    tex, tey = _read_cifar_batches([test_path])
    return _Raw(trx, try_, tex, tey, f"{folder}/data_batch_*.bin", str(test_path))


def _load_digits(spec: DatasetSpec, root: _Root | None, download: bool) -> _Raw:
    """Loader for scikit-learn's bundled 8x8 digits (1797 images, values 0..16).

    There is no official test split, so a fixed, class-balanced one (36 images per class) is
    drawn with a constant seed: the test set is the same for every ``split_seed`` and every run,
    so test accuracies stay comparable.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(
            f"the 'digits' data set needs scikit-learn ({e}); install it with "
            "`pip install scikit-learn`"
        ) from None
    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target, dtype=np.int64)
    if images.min() < 0 or images.max() > 16 or not np.array_equal(images, np.round(images)):
        raise DataError("scikit-learn's digits data has unexpected values (not integers 0..16)")
    x = images.astype(np.uint8).reshape(-1, *spec.input_shape)

    # Stratified fixed test split: rank each image within its class along a fixed permutation.
    perm = np.random.Generator(np.random.PCG64(_DIGITS_TEST_SEED)).permutation(len(labels))
    by_class = perm[np.argsort(labels[perm], kind="stable")]
    counts = np.bincount(labels, minlength=spec.num_classes)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(len(labels)) - starts
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[by_class[rank < _DIGITS_TEST_PER_CLASS]] = True
    src = "sklearn.datasets.load_digits()"
    return _Raw(x[~is_test], labels[~is_test], x[is_test], labels[is_test], src, src)


# --------------------------------------------------------------------------------------------
# Splitting and the public loader
# --------------------------------------------------------------------------------------------


def split_indices(n: int, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Partition ``range(n)`` into sorted (train, validation) index tensors.

    The validation indices are the first ``val_size`` entries of
    ``torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))``; both index sets
    are returned sorted so the kept training data stays in file order. Deterministic for a given
    seed, disjoint, and exactly sized.

    Raises:
        DataError: ``val_size`` not an int in ``0 .. n - 1``.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)):
        raise DataError(f"val_size must be an integer, got {val_size!r}")
    if not 0 <= val_size < n:
        raise DataError(
            f"val_size={val_size} is out of range: the training set has {n} examples, so "
            f"val_size must be between 0 and {n - 1} (inclusive)"
        )
    gen = torch.Generator().manual_seed(int(split_seed))
    perm = torch.randperm(n, generator=gen)
    val_idx = perm[:val_size].sort().values
    train_idx = perm[val_size:].sort().values
    return train_idx, val_idx


def _validate(spec: DatasetSpec, raw: _Raw) -> None:
    """Check counts, image shapes and label ranges of raw data before any tensor is built."""
    for what, x, y, src in (
        ("training", raw.train_x, raw.train_y, raw.train_source),
        ("test", raw.test_x, raw.test_y, raw.test_source),
    ):
        if len(x) != len(y):
            raise DataError(
                f"{spec.name} {what} data ({src}): {len(x)} images but {len(y)} labels; the "
                "files do not belong together or one is corrupt"
            )
        if tuple(x.shape[1:]) != spec.input_shape:
            raise DataError(
                f"{spec.name} {what} data ({src}): images have shape {tuple(x.shape[1:])}, "
                f"expected {spec.input_shape}"
            )
        if len(y) == 0:
            raise DataError(f"{spec.name} {what} data ({src}) is empty")
        bad = np.flatnonzero((y < 0) | (y >= spec.num_classes))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{spec.name} {what} data ({src}): label {int(y[i])} at index {i} is outside "
                f"0..{spec.num_classes - 1} ({bad.size} bad labels in total); the label file is "
                "corrupt or belongs to another data set"
            )


def _to_tensor(spec: DatasetSpec, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images -> float32 on ``device``, scaled to [0, 1], then per-channel standardized.

    The uint8 tensor is moved before conversion so a host-to-GPU copy moves 4x fewer bytes.
    """
    out = x.to(device).to(torch.float32).div_(spec.pixel_scale)
    shape = (1, -1) + (1,) * (out.dim() - 2)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(shape)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(shape)
    return out.sub_(mean).div_(std)


def load_splits(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_size: int,
    split_seed: int,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> Splits:
    """Load a data set as normalized train/validation/test tensors on ``device``.

    The validation set is carved from the official training set by :func:`split_indices`
    (``torch.Generator().manual_seed(split_seed)``), so experiments that share ``split_seed``
    share a split, and the official test set is never touched for model selection.

    Args:
        name: a key of :data:`DATASETS` (see :func:`dataset_names`).
        data_dir: data root (see :func:`resolve_data_dir`); ignored by ``digits``.
        val_size: validation examples, ``0 <= val_size < len(train)``; 0 gives empty tensors.
            ``dataset_info(name).default_val_size`` is the recommended value.
        split_seed: seed of the train/validation split.
        device: where the returned tensors live.
        download: allow fetching missing files from the public mirrors.

    Raises:
        DataError: unknown name, missing/corrupt files, bad labels, or out-of-range ``val_size``.
    """
    spec = dataset_info(name)
    if isinstance(val_size, (int, np.integer)) and not isinstance(val_size, bool) and val_size < 0:
        raise DataError(f"val_size={val_size} is out of range: it must be >= 0")
    root = _resolve_root(data_dir) if spec.needs_data_dir else None
    raw = spec.loader(spec, root, download)
    _validate(spec, raw)
    dev = torch.device(device)

    train_idx, val_idx = split_indices(len(raw.train_y), val_size, split_seed)
    full_x = torch.from_numpy(raw.train_x)
    full_y = torch.from_numpy(raw.train_y.astype(np.int64, copy=False))
    # Indexing copies, so the normalization below never writes into the numpy arrays.
    return Splits(
        name=spec.name,
        train_x=_to_tensor(spec, full_x[train_idx], dev),
        train_y=full_y[train_idx].to(dev),
        val_x=_to_tensor(spec, full_x[val_idx], dev),
        val_y=full_y[val_idx].to(dev),
        test_x=_to_tensor(spec, torch.from_numpy(raw.test_x), dev),
        test_y=torch.from_numpy(raw.test_y.astype(np.int64)).to(dev),
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
    )


# --------------------------------------------------------------------------------------------
# Registry contents
# --------------------------------------------------------------------------------------------

_MNIST_SHA256 = (
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
)
_FASHION_SHA256 = (
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
)

DATASETS.update(
    {
        "digits": DatasetSpec(
            name="digits",
            input_shape=(1, 8, 8),
            num_classes=10,
            default_val_size=300,
            # mean/std of all 1797 images scaled to [0, 1]; fixed so they never drift.
            mean=(0.3053,),
            std=(0.3760,),
            pixel_scale=16.0,
            loader=_load_digits,
            needs_data_dir=False,
            description="scikit-learn 8x8 digits: 1437 train / 360 fixed test, bundled",
        ),
        "mnist": DatasetSpec(
            name="mnist",
            input_shape=(1, 28, 28),
            num_classes=10,
            default_val_size=5000,
            mean=(0.1307,),
            std=(0.3081,),
            pixel_scale=255.0,
            loader=_load_idx_dataset,
            files=tuple(FileSpec(n, h) for n, h in zip(_IDX_FILES, _MNIST_SHA256, strict=True)),
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ),
            description="MNIST handwritten digits 28x28: 60000 train / 10000 test",
        ),
        "fashion-mnist": DatasetSpec(
            name="fashion-mnist",
            input_shape=(1, 28, 28),
            num_classes=10,
            default_val_size=5000,
            mean=(0.2860,),
            std=(0.3530,),
            pixel_scale=255.0,
            loader=_load_idx_dataset,
            files=tuple(FileSpec(n, h) for n, h in zip(_IDX_FILES, _FASHION_SHA256, strict=True)),
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            description="Fashion-MNIST clothing 28x28: 60000 train / 10000 test",
        ),
        "cifar-10": DatasetSpec(
            name="cifar-10",
            input_shape=(3, 32, 32),
            num_classes=10,
            default_val_size=5000,
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            pixel_scale=255.0,
            loader=_load_cifar10,
            # Per-.bin hashes are not known; integrity comes from the archive MD5.
            files=tuple(FileSpec(n) for n in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)),
            archive=ArchiveSpec(
                filename="cifar-10-binary.tar.gz",
                urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                md5="c32a1d4ab5d03f1284b67883e8d87530",
                member_prefix="cifar-10-batches-bin/",
            ),
            description="CIFAR-10 32x32 RGB: 50000 train / 10000 test (binary version)",
        ),
    }
)
