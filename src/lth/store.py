"""The experiment store: one directory per resolved configuration, written crash-safely.

Layout::

    <root>/<name>-<hash>/
        config.json                 resolved configuration (identity_dict decides the hash)
        summary.json                one record per finished (trial, level, branch)
        .lock                       held by the running process (fcntl)
        trial_<T>/
            theta0.pt               the initialisation
            rewind.pt               theta_k, when rewinding (k > 0)
            level_<L>/
                mask.pt             the level's mask (bool tensors)
                <branch>/
                    checkpoint.pt   while training (resume point), removed when done
        checkpoint-commit.json      briefly, while the checkpoints of units trained together
                                    are promoted from checkpoint.next.pt (see save_checkpoints)
                    metrics.jsonl   one evaluation per line
                    final.pt        trained weights
                    result.json     written last: its presence means "finished"

Every file appears atomically (temporary file in the same directory, fsync, rename), so a process
killed at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .config import ExperimentConfig, config_hash

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
NEXT_CHECKPOINT = "checkpoint.next.pt"
GROUP_COMMIT = "checkpoint-commit.json"


class StoreError(RuntimeError):
    """A problem with the run directory (locked, different config, unwritable)."""


def _fsync_dir(path: Path) -> None:
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _store_error(e, path) from e
    try:
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
        raise _store_error(e, path) from e
    _fsync_dir(path.parent)
    _fault_point("after-write", path)


def _store_error(e: OSError, path: Path) -> Exception:
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
    return e


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def torch_load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}." if isinstance(a.get(k, b.get(k)), dict)
                         else f"{prefix}{k}")
        return out
    if isinstance(a, list):
        a = tuple(a)
    if isinstance(b, list):
        b = tuple(b)
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} (stored) != {b!r} (now)"]


class RunStore:
    """Access to one run directory. Use :meth:`open` to create/lock it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ opening and locking
    @classmethod
    def open(cls, cfg: ExperimentConfig, root: Path | None = None, run_dir: Path | None = None,
             *, lock: bool = True) -> "RunStore":
        if run_dir is None:
            root = Path(root if root is not None else "runs")
            run_dir = root / f"{cfg.name}-{config_hash(cfg)}"
        store = cls(Path(run_dir))
        try:
            store.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create run directory {store.path}: {e.strerror}") from e
        if lock:
            store.acquire_lock()
        try:
            store._check_config(cfg)
        except BaseException:
            store.release_lock()
            raise
        return store

    def acquire_lock(self) -> None:
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _store_error(e, self.path / ".lock") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = ""
            try:
                holder = (self.path / ".lock").read_text().strip()
            except OSError:
                pass
            raise StoreError(
                f"run directory {self.path} is in use by another lth process"
                f"{f' ({holder})' if holder else ''}; wait for it to finish, or stop it and rerun "
                "the same command to continue"
            ) from None
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError:
            pass  # the note is informative only; the lock itself is held
        self._remove_stale_temporaries()
        self._finish_checkpoint_group()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoints(self, unit_dirs: list[Path], states: list[Any]) -> None:
        """Write the checkpoints of units trained together so that a kill at any moment leaves
        all of them at the old iteration or all at the new one, never a mix: a group then always
        resumes whole, with the arithmetic of the uninterrupted run.

        Two phases: every unit's state goes to ``checkpoint.next.pt``; a commit record listing
        them is written; each is renamed over ``checkpoint.pt``; the record is removed. On the
        next open, a record means phase two must be finished, and ``.next`` files without one
        are the remains of an unfinished phase one."""
        if len(unit_dirs) == 1:
            atomic_torch_save(unit_dirs[0] / CHECKPOINT, states[0])
            return
        for d, state in zip(unit_dirs, states):
            atomic_torch_save(d / NEXT_CHECKPOINT, state)
        atomic_write_json(self.path / GROUP_COMMIT, [str(Path(d).relative_to(self.path)) for d in unit_dirs])
        self._finish_checkpoint_group()

    def _finish_checkpoint_group(self) -> None:
        record = self.path / GROUP_COMMIT
        if record.exists():
            for rel in read_json(record):
                d = self.path / rel
                if (d / NEXT_CHECKPOINT).exists():
                    os.replace(d / NEXT_CHECKPOINT, d / CHECKPOINT)
                    _fsync_dir(d)
            record.unlink()
            _fsync_dir(self.path)
        for p in self.path.glob(f"trial_*/level_*/*/{NEXT_CHECKPOINT}"):
            p.unlink()  # phase one never completed: the unit's checkpoint.pt is the consistent one

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a writer that was killed mid-write; safe to drop under the lock."""
        for p in self.path.rglob(".*.tmp"):
            try:
                p.unlink()
            except OSError:
                pass

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_lock()

    def _check_config(self, cfg: ExperimentConfig) -> None:
        path = self.path / "config.json"
        if path.exists():
            stored = read_json(path)
            old = ExperimentConfig.from_dict(stored)
            diffs = _diff(old.identity_dict(), cfg.identity_dict())
            if diffs:
                raise StoreError(
                    f"run directory {self.path} holds results of a different configuration; "
                    "refusing to mix them. Differing fields:\n  " + "\n  ".join(diffs)
                    + "\nUse another --out/--run-dir, or rerun with the stored configuration."
                )
        atomic_write_json(path, cfg.to_dict())

    # ------------------------------------------------------------------ paths
    def trial_dir(self, trial: int) -> Path:
        return self.path / f"trial_{trial}"

    def level_dir(self, trial: int, level: int) -> Path:
        return self.trial_dir(trial) / f"level_{level}"

    def unit_dir(self, trial: int, level: int, branch: str) -> Path:
        return self.level_dir(trial, level) / branch

    def is_done(self, trial: int, level: int, branch: str) -> bool:
        return (self.unit_dir(trial, level, branch) / RESULT).exists()

    def result(self, trial: int, level: int, branch: str) -> dict[str, Any]:
        return read_json(self.unit_dir(trial, level, branch) / RESULT)

    def results(self) -> Iterator[dict[str, Any]]:
        for p in sorted(self.path.glob(f"trial_*/level_*/*/{RESULT}")):
            yield read_json(p)

    def write_summary(self) -> list[dict[str, Any]]:
        records = sorted(self.results(), key=lambda r: (r["trial"], r["level"], r["branch"]))
        atomic_write_json(self.path / "summary.json", records)
        return records


def config_from_run(run_dir: Path) -> ExperimentConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise StoreError(f"{run_dir} is not an lth run directory (no config.json)")
    return ExperimentConfig.from_dict(read_json(path))
