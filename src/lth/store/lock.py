"""One writer per folder: an exclusive, non-blocking ``flock`` on ``FOLDER/.lock``, shared by the
run directory (:class:`~lth.store.RunStore`) and the instability output directory."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from .atomic import StoreError

LOCK = ".lock"


def lock_folder(path: Path, in_use: Callable[[str], StoreError], cannot_open: Callable[[OSError], Exception]) -> int:
    """Lock ``path/.lock`` without waiting, note this process's pid in it, then drop the temporary
    files a killed writer left (safe now that no other writer can be at work). Returns the lock's
    file descriptor for :func:`unlock_folder`. ``in_use(holder)`` is raised when another process
    holds the lock (``holder``: the note it left, or ""); ``cannot_open(e)`` when the file cannot
    be opened."""
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise cannot_open(e) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = ""
        try:
            holder = (path / LOCK).read_text().strip()
        except OSError:
            pass
        raise in_use(holder) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
    except OSError:
        pass  # the note is informative only; the lock itself is held
    remove_stale_temporaries(path)
    return fd


def unlock_folder(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files (``.<name>.tmp``) of a writer that was killed mid-write; safe to drop under
    the lock."""
    for p in path.rglob(".*.tmp"):
        try:
            p.unlink()
        except OSError:
            pass
