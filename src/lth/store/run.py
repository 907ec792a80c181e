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

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig, config_hash
from .atomic import (
    StoreError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    read_json,
    store_error,
    torch_load,
)
from .records import UnitRecord

RESULT = "result.json"
METRICS = "metrics.jsonl"
FINAL = "final.pt"
MASK = "mask.pt"
THETA0 = "theta0.pt"
REWIND = "rewind.pt"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
NEXT_CHECKPOINT = "checkpoint.next.pt"
GROUP_COMMIT = "checkpoint-commit.json"


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
             *, lock: bool = True) -> RunStore:
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
            raise store_error(e, self.path / ".lock") from e
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
                    fsync_dir(d)
            record.unlink()
            fsync_dir(self.path)
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

    def __enter__(self) -> RunStore:
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

    # ------------------------------------------------------------------ per-trial and per-level state
    def load_theta0(self, trial: int) -> dict[str, torch.Tensor] | None:
        """The trial's initialisation, or None if not drawn yet."""
        return _load_if_exists(self.trial_dir(trial) / THETA0)

    def save_theta0(self, trial: int, state: dict[str, torch.Tensor]) -> None:
        atomic_torch_save(self.trial_dir(trial) / THETA0, _cpu(state))

    def load_rewind(self, trial: int) -> dict[str, torch.Tensor]:
        """theta_k of a trial (written by its dense unit at iteration k)."""
        path = self.trial_dir(trial) / REWIND
        if not path.exists():
            raise StoreError(f"{path} is missing although level 0 of trial {trial} finished; "
                             "delete the trial's level_0 directory and rerun to recreate it")
        return torch_load(path)

    def save_rewind(self, trial: int, state: dict[str, torch.Tensor]) -> None:
        atomic_torch_save(self.trial_dir(trial) / REWIND, _cpu(state))

    def load_level_mask(self, trial: int, level: int) -> dict[str, torch.Tensor] | None:
        """The IMP mask of a pruned level, or None if not pruned yet."""
        return _load_if_exists(self.level_dir(trial, level) / MASK)

    def save_level_mask(self, trial: int, level: int, mask: dict[str, torch.Tensor]) -> None:
        atomic_torch_save(self.level_dir(trial, level) / MASK, _cpu(mask))

    def load_unit_mask(self, trial: int, level: int, branch: str) -> dict[str, torch.Tensor] | None:
        """A unit's own mask (branches whose mask is not the level's, e.g. random_mask)."""
        return _load_if_exists(self.unit_dir(trial, level, branch) / MASK)

    def load_final(self, trial: int, level: int, branch: str) -> dict[str, torch.Tensor]:
        return torch_load(self.unit_dir(trial, level, branch) / FINAL)

    # ------------------------------------------------------------------ units
    def is_done(self, trial: int, level: int, branch: str) -> bool:
        return (self.unit_dir(trial, level, branch) / RESULT).exists()

    def record(self, trial: int, level: int, branch: str) -> UnitRecord:
        return _parse_record(self.unit_dir(trial, level, branch) / RESULT)

    def records(self) -> list[UnitRecord]:
        """Every finished unit's record, sorted by (trial, level, branch)."""
        recs = [_parse_record(p) for p in self.path.glob(f"trial_*/level_*/*/{RESULT}")]
        return sorted(recs, key=lambda r: r.key)

    def load_checkpoint(self, trial: int, level: int, branch: str) -> dict[str, Any] | None:
        return _load_if_exists(self.unit_dir(trial, level, branch) / CHECKPOINT)

    def finish_unit(self, record: UnitRecord, *, metrics: list[dict[str, Any]] | None = None,
                    final_state: dict[str, torch.Tensor] | None = None,
                    own_mask: dict[str, torch.Tensor] | None = None) -> None:
        """Write a finished unit's files, ``result.json`` last (its presence means finished), drop
        its checkpoint and refresh ``summary.json``."""
        udir = self.unit_dir(record.trial, record.level, record.branch)
        if metrics is not None:
            lines = "".join(json.dumps(m) + "\n" for m in metrics)
            atomic_write_bytes(udir / METRICS, lines.encode())
        if final_state is not None:
            atomic_torch_save(udir / FINAL, _cpu(final_state))
        if own_mask is not None:
            atomic_torch_save(udir / MASK, _cpu(own_mask))
        atomic_write_json(udir / RESULT, record.to_dict())
        ckpt = udir / CHECKPOINT
        if ckpt.exists():
            ckpt.unlink()
        self.write_summary()

    def write_summary(self) -> list[UnitRecord]:
        """``summary.json``: every finished unit's record, derived from the units' own files."""
        records = self.records()
        atomic_write_json(self.path / SUMMARY, [r.to_dict() for r in records])
        return records


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _load_if_exists(path: Path) -> Any:
    return torch_load(path) if path.exists() else None


def _parse_record(path: Path) -> UnitRecord:
    try:
        return UnitRecord.from_dict(read_json(path))
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path} is not a valid unit record ({e}); delete it and rerun the same "
                         "command to retrain that unit") from e


def config_from_run(run_dir: Path) -> ExperimentConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise StoreError(f"{run_dir} is not an lth run directory (no config.json)")
    return ExperimentConfig.from_dict(read_json(path))
