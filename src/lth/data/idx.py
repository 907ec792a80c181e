"""The IDX file format (MNIST, Fashion-MNIST): gzip detection, header validation, checksums.

Checksums are SHA-256 of the *uncompressed* content, so the check does not depend on how a
mirror happened to gzip a file, and a ``.gz`` and a raw copy of the same file verify identically.
Successful checks are remembered per process (keyed by path, size, mtime and inode) so repeated
loads do not re-hash unchanged files.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

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
