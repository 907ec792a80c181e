"""Fetching data files from public mirrors, and the error for files that are neither here nor
downloadable.

A download is accepted only after the caller's verification (checksum and structure) passes on
a temporary file, which is then renamed into place; so no corrupt or partial file ever appears
under a real name. Tests replace :func:`_fetch` (in this module, where it is looked up) to stay
offline.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import DataError
from .paths import ENV_VAR, DataRoot
from .registry import DatasetSpec

log = logging.getLogger(__name__)

#: Per-socket-operation timeout for downloads. Short, so that an offline machine fails fast
#: instead of hanging; it bounds each connect/read, not the whole (possibly large) transfer.
_DOWNLOAD_TIMEOUT_S = 20.0

#: Exceptions a download attempt may raise; anything else is a bug and propagates.
_FETCH_ERRORS = (OSError, urllib.error.URLError, http.client.HTTPException, ValueError, DataError)


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` into ``dest`` (overwritten). Tests monkeypatch this to stay offline."""
    request = urllib.request.Request(url, headers={"User-Agent": "lth-data"})
    with (
        urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response,  # noqa: S310
        open(dest, "wb") as out,
    ):
        shutil.copyfileobj(response, out, 1 << 20)


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest of ``folder`` and its parents that exists, if that is not a directory."""
    for p in (folder, *folder.parents):
        if p.is_dir():
            return None
        if p.exists() or p.is_symlink():
            return p
    return None


def _place(tmp: Path, dest: Path) -> None:
    """Move the verified ``tmp`` into the existing folder of ``dest``, atomically."""
    try:
        os.replace(tmp, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        # staged on another file system: copy beside dest first, so dest still appears whole
        part = dest.parent / f".{dest.name}.{os.getpid()}.part"
        try:
            shutil.copyfile(tmp, part)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)


def download_verified(urls: Sequence[str], dest: Path, verify: Callable[[Path], None]) -> list[str]:
    """Try ``urls`` in order until one yields a file that passes ``verify``.

    Each attempt goes to a temporary file and is renamed into place only after verification, so
    an interrupted or corrupt download never leaves a file under the real name (and concurrent
    processes never see a partial file). The temporary file is in the destination's folder if
    that exists; otherwise in a temporary folder of the system's, and the destination's folder is
    created only for a file that passed: a failed download creates no folder (not even an empty
    ``--data-dir``).

    Returns:
        An empty list on success, else one ``"url: error"`` line per failed attempt.
    """
    blocker = _file_in_the_way(dest.parent)
    if blocker is not None:
        return [f"cannot create directory {dest.parent}: {blocker} is a file, not a directory"]
    errors: list[str] = []
    with contextlib.ExitStack() as cleanup:
        staging = dest.parent if dest.parent.is_dir() else Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="lth-download-")))
        for url in urls:
            try:
                fd, tmp_name = tempfile.mkstemp(dir=staging, prefix=f".{dest.name}.", suffix=".part")
            except OSError as e:
                return [*errors, f"cannot write in {staging} ({e})"]
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                log.info("downloading %s", url)
                _fetch(url, tmp)
                verify(tmp)
            except _FETCH_ERRORS as e:
                errors.append(f"{url}: {e}")
                continue
            else:
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    return [f"cannot create directory {dest.parent} ({e})"]
                try:
                    _place(tmp, dest)
                except OSError as e:
                    return [f"cannot move the verified download into {dest} ({e})"]
                return []
            finally:
                tmp.unlink(missing_ok=True)
    return errors


def missing_files_error(
    spec: DatasetSpec,
    root: DataRoot,
    missing: Sequence[str],
    looked_in: Sequence[Path],
    download: bool,
    errors: Sequence[str],
    note: str = "",
) -> DataError:
    """Build the message for files that are neither present nor downloadable.

    It lists the missing files, the folders searched, which setting chose the data root, why
    downloading did not help, and every way to provide the files.
    """
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
