"""Content digests of run-directory files: what a finished unit and the checksum list record, and
the check that a file on disk is still the one that was written.

A digest is the file's size and SHA-256. Files are hashed once per process and version: a
:class:`DigestCache` remembers a digest together with the file's ``stat`` signature (size,
modification and change times, inode), so a file is read again only when something touched it. The
change time cannot be set back by copying or sync tools, so a cached digest is never stale.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """A file's size in bytes and the hex SHA-256 of its content."""

    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: Any) -> FileDigest:
        """Parse ``{"size": int, "sha256": 64 hex digits}``; anything else is a ValueError."""
        if not isinstance(d, dict) or set(d) != {"size", "sha256"}:
            raise ValueError(f"expected {{size, sha256}}, got {d!r}")
        size, sha = d["size"], d["sha256"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"size {size!r} is not a byte count")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"sha256 {sha!r} is not 64 hex digits")
        return cls(size, sha)


def digest_bytes(data: bytes) -> FileDigest:
    return FileDigest(len(data), hashlib.sha256(data).hexdigest())


def signature(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's content may have: size, modification and change times, inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class DigestCache:
    """Digests of files, each computed once per version of the file (see the module docstring)."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, ...], FileDigest]] = {}

    def remember(self, path: Path, digest: FileDigest) -> None:
        """Record the digest of a file this process has just written."""
        try:
            self._known[Path(path)] = (signature(os.stat(path)), digest)
        except OSError:
            self._known.pop(Path(path), None)

    def digest(self, path: Path) -> FileDigest:
        """The file's digest; OSError (e.g. FileNotFoundError, IsADirectoryError) if unreadable."""
        path = Path(path)
        sig = signature(os.stat(path))
        hit = self._known.get(path)
        if hit is not None and hit[0] == sig:
            return hit[1]
        h, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        d = FileDigest(size, h.hexdigest())
        self._known[path] = (signature(os.stat(path)), d)
        return d

    def problem(self, path: Path, expected: FileDigest) -> str | None:
        """Why ``path`` is not the recorded file (missing, resized, changed), or None if it is."""
        path = Path(path)
        try:
            if path.is_dir():
                return "is a directory"
            got = self.digest(path)
        except FileNotFoundError:
            return "is missing"
        except OSError as e:
            return f"cannot be read ({e.strerror})"
        if got.size != expected.size:
            return f"has {got.size} bytes, {expected.size} were written"
        if got.sha256 != expected.sha256:
            return "content differs from what was written (SHA-256 mismatch)"
        return None
