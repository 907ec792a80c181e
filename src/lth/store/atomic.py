"""Crash-safe file writes and strict reads for the run directory.

Every file appears atomically (temporary file in the same directory, fsync, rename), so a process
killed at any moment leaves either the old file or the new one, never a torn one. Disk-full and
permission errors become a :class:`StoreError` saying that finished work is intact and what to do.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import torch

from .integrity import FileDigest, digest_bytes


class StoreError(RuntimeError):
    """A problem with the run directory (locked, different config, unwritable, damaged)."""


class DamagedFileError(StoreError):
    """A file of the run directory is missing, unreadable or not the one that was written."""

    def __init__(self, path: Path, problem: str, fix: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} {problem}; {fix}")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_FAULT_COUNTS: dict[str, int] = {}


def _fault_point(stage: str, path: Path) -> None:
    """Fault injection for the crash tests: ``LTH_FAULT=<stage>:<file name>:<n>`` makes this
    process SIGKILL itself at ``stage`` ("during-write" = after half the bytes reached the temporary
    file, "after-write" = right after the rename) of the n-th write of that file name. Unset in
    normal use; reading one environment variable per write costs nothing measurable."""
    spec = os.environ.get("LTH_FAULT")
    if not spec:
        return
    want_stage, name, n = spec.split(":")
    if want_stage != stage or name != path.name:
        return
    _FAULT_COUNTS[stage] = _FAULT_COUNTS.get(stage, 0) + 1
    if _FAULT_COUNTS[stage] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


@functools.cache
def _umask() -> int:
    """The process umask (read once; reading it means setting it, so never per write)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> FileDigest:
    """Write ``data`` to ``path`` atomically; returns the written file's digest."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise store_error(e, path) from e
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: give the file a normal file's mode
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            _fault_point("during-write", path)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise store_error(e, path) from e
    fsync_dir(path.parent)
    _fault_point("after-write", path)
    return digest_bytes(data)


def store_error(e: OSError, path: Path) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(
            f"no space left on the device while writing {path}; finished results and the previous "
            "version of this file are intact. Free some space and rerun the same command to continue."
        )
    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return StoreError(
            f"cannot write {path} ({e.strerror}); finished results are intact. Make the directory "
            "writable, or choose another --out / --run-dir."
        )
    if e.errno == errno.EISDIR:
        return StoreError(f"{path} is a directory, where lth keeps a file; remove it and rerun the same command")
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return StoreError(f"a file is in the way of the folder {path.parent} (or one above it); remove that "
                          "file and rerun the same command")
    return e


def atomic_write_json(path: Path, obj: Any) -> FileDigest:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(path: Path, obj: Any) -> FileDigest:
    return atomic_write_bytes(path, torch_bytes(obj))


def torch_load(path: Path) -> Any:
    """A tensor file of the run directory; a file torch cannot read is a :class:`DamagedFileError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types for a torn or foreign file: all mean damaged
        raise DamagedFileError(path, f"cannot be read as a tensor file ({type(e).__name__})",
                               "rerun the same `lth run` command to recompute it, or `lth verify` the "
                               "run directory to see all damage") from None


def read_json(path: Path) -> Any:
    """A JSON file of the run directory; invalid JSON or text is a :class:`DamagedFileError`."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise DamagedFileError(path, f"is not valid JSON ({type(e).__name__}: {str(e)[:80]})",
                               "restore it from a copy, or `lth verify` the run directory to see what "
                               "a rerun will redo") from None
    except IsADirectoryError:
        raise DamagedFileError(path, "is a directory, not a file", "remove it") from None
