"""The experiment store: one directory per resolved configuration, written crash-safely.

Layout::

    <root>/<name>-<hash>/
        config.json                 resolved configuration (identity_dict decides the hash)
        checksums.json              size and SHA-256 of every theta0, rewind (weights and
                                    optimizer) and level mask
        summary.json                one record per intact finished (trial, level, branch)
        .lock                       held by the running process (fcntl)
        trial_<T>/
            theta0.pt               the initialisation
            rewind.pt               theta_k, when rewinding (k > 0)
            rewind_optimizer.pt     the dense run's optimizer state at k (lottery.rewind_optimizer)
            level_<L>/
                mask.pt             the level's mask (bool tensors)
                <branch>/
                    checkpoint.pt   while training (resume point), removed when done
        checkpoint-commit.json      briefly, while the checkpoints of units trained together
                                    are promoted from checkpoint.next.pt (see save_checkpoints)
                    metrics.jsonl   one evaluation per line
                    final.pt        trained weights
                    mask.pt         the unit's own mask, for branches that have one
                    result.json     written last: the record, plus the size and SHA-256 of
                                    every file the unit wrote and of the inputs it started from
                                    (recorded inputs, and trained weights of another unit:
                                    a ticket's final.pt that finetune/lr_rewind/oneshot read)

Every file appears atomically (temporary file in the same directory, fsync, rename), so a process
killed at any moment leaves either the old file or the new one, never a torn one.

Integrity: damage after the fact (a partial copy, a sync tool, a hand edit) is detected, never
read. A finished unit is *intact* when every file its ``result.json`` lists still has the recorded
size and SHA-256, the inputs it lists (theta0 or theta_k, the level mask, the rewound optimizer
state, another unit's ``final.pt``) are still the recorded files (for a ``final.pt``: the file its
own unit's ``result.json`` records, intact on disk), and its numbers are the ones its
``metrics.jsonl`` gives. Only intact units count as finished: :meth:`RunStore.records` and
``summary.json`` hold them alone, and a rerun retrains the others. The checksum of a theta0,
rewind or level mask is recorded in ``checksums.json`` *before* the file is written, so a crash
between the two leaves a recorded file that is missing (recomputed by the rerun), never an
unrecorded one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig, config_hash
from .atomic import (
    DamagedFileError,
    StoreError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    read_json,
    store_error,
    torch_bytes,
    torch_load,
)
from .integrity import DigestCache, FileDigest, digest_bytes, signature
from .lock import LOCK, lock_folder, unlock_folder
from .records import UnitRecord

RESULT = "result.json"
METRICS = "metrics.jsonl"
FINAL = "final.pt"
MASK = "mask.pt"
THETA0 = "theta0.pt"
REWIND = "rewind.pt"
REWIND_OPTIMIZER = "rewind_optimizer.pt"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
NEXT_CHECKPOINT = "checkpoint.next.pt"
GROUP_COMMIT = "checkpoint-commit.json"
CHECKSUMS = "checksums.json"
_SOURCE = re.compile(r"trial_[0-9]+/level_[0-9]+/ticket/final\.pt")
_INPUT = re.compile(r"trial_[0-9]+/(theta0\.pt|rewind\.pt|rewind_optimizer\.pt|level_[0-9]+/mask\.pt)")
RERUN_FIX = "rerun the same `lth run` command to redo what depends on it (`lth verify RUN_DIR` lists all damage)"


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
        self._digests = DigestCache()
        self._checksums: dict[str, FileDigest] | None = None
        self._sources: dict[str, tuple[str, str]] = {}  # input -> (file it was computed from, its sha256)
        self._discarded: dict[str, FileDigest] = {}  # damaged inputs dropped, until recomputed
        self._results: dict[Path, tuple[tuple[int, ...], Any]] = {}  # parsed result.json by stat signature
        self._metrics_checked: dict[tuple[UnitRecord, FileDigest], str | None] = {}
        self.log: Callable[[str], None] = lambda s: None  # says how a recomputed input compares
        self.checksums_problem: str | None = None  # why checksums.json could not be read
        self.repaired_config: str | None = None  # set when open() rewrote a damaged config.json

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
        def in_use(holder: str) -> StoreError:
            return StoreError(
                f"run directory {self.path} is in use by another lth process"
                f"{f' ({holder})' if holder else ''}; wait for it to finish, or stop it and rerun "
                "the same command to continue"
            )

        self._lock_fd = lock_folder(self.path, in_use, lambda e: store_error(e, self.path / LOCK))
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
            try:
                rels = read_json(record)
                if not isinstance(rels, list) or not all(isinstance(r, str) for r in rels):
                    raise ValueError
            except (StoreError, ValueError):
                # Unreadable: promote nothing. Each unit's checkpoint.pt is a consistent state of
                # that unit, so the group may resume split, never wrong.
                rels = []
            for rel in rels:
                d = self.path / rel
                if not d.resolve().is_relative_to(self.path.resolve()):
                    continue
                if (d / NEXT_CHECKPOINT).exists():
                    os.replace(d / NEXT_CHECKPOINT, d / CHECKPOINT)
                    fsync_dir(d)
            record.unlink()
            fsync_dir(self.path)
        for p in self.path.glob(f"trial_*/level_*/*/{NEXT_CHECKPOINT}"):
            p.unlink()  # phase one never completed: the unit's checkpoint.pt is the consistent one

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            unlock_folder(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_lock()

    def _check_config(self, cfg: ExperimentConfig) -> None:
        path = self.path / "config.json"
        if not (path.exists() or path.is_symlink()) and self.has_results():
            if self.path.name != f"{cfg.name}-{config_hash(cfg)}":
                raise StoreError(
                    f"{path} is missing, so the results in {self.path} cannot be matched to a configuration; "
                    "restore config.json from a copy, or use a new --run-dir")
            self.repaired_config = f"{path} was missing and has been rewritten from the configuration"
        elif path.exists() or path.is_symlink():
            try:
                old = ExperimentConfig.from_dict(read_json(path))
            except (StoreError, ValueError, TypeError) as e:
                if self.path.name != f"{cfg.name}-{config_hash(cfg)}":
                    raise StoreError(
                        f"{path} is damaged ({e}), so the results in {self.path} cannot be matched to a "
                        "configuration; restore config.json from a copy, or use a new --run-dir") from None
                # The directory's name is this configuration's hash: the file can only have held it.
                self.repaired_config = f"{path} was damaged and has been rewritten from the configuration"
            else:
                diffs = _diff(old.identity_dict(), cfg.identity_dict())
                ours = f"{cfg.name}-{config_hash(cfg)}"
                if diffs and self.path.name == ours and f"{old.name}-{config_hash(old)}" != ours:
                    # The file no longer hashes to the directory's name, which is this configuration's.
                    self.repaired_config = (f"{path} had been edited (it no longer matches the directory's "
                                            "name) and has been rewritten from the configuration")
                elif diffs:
                    raise StoreError(
                        f"run directory {self.path} holds results of a different configuration; "
                        "refusing to mix them. Differing fields: " + "; ".join(diffs)
                        + ". Use another --out/--run-dir, or rerun with the stored configuration."
                    )
        atomic_write_json(path, cfg.to_dict())

    def has_results(self) -> bool:
        """Whether the directory holds anything a run wrote besides its configuration."""
        return (self.path / CHECKSUMS).exists() or any(self.path.glob("trial_*"))

    # ------------------------------------------------------------------ paths
    def trial_dir(self, trial: int) -> Path:
        return self.path / f"trial_{trial}"

    def level_dir(self, trial: int, level: int) -> Path:
        return self.trial_dir(trial) / f"level_{level}"

    def unit_dir(self, trial: int, level: int, branch: str) -> Path:
        return self.level_dir(trial, level) / branch

    def rel(self, path: Path) -> str:
        """``path`` relative to the run directory, with forward slashes (the key of checksums)."""
        return Path(path).relative_to(self.path).as_posix()

    def theta0_path(self, trial: int) -> Path:
        return self.trial_dir(trial) / THETA0

    def rewind_path(self, trial: int) -> Path:
        return self.trial_dir(trial) / REWIND

    def rewind_optimizer_path(self, trial: int) -> Path:
        return self.trial_dir(trial) / REWIND_OPTIMIZER

    def level_mask_path(self, trial: int, level: int) -> Path:
        return self.level_dir(trial, level) / MASK

    def final_path(self, trial: int, level: int, branch: str) -> Path:
        return self.unit_dir(trial, level, branch) / FINAL

    # ------------------------------------------------------------------ recorded inputs
    def checksums(self) -> dict[str, FileDigest]:
        """The recorded digest of every theta0, rewind and level mask (``checksums.json``). An
        unreadable list counts as empty (every input is then unrecorded, so damaged), and
        :attr:`checksums_problem` says why."""
        if self._checksums is None:
            path = self.path / CHECKSUMS
            sums: dict[str, FileDigest] = {}
            sources: dict[str, tuple[str, str]] = {}
            if path.exists() or path.is_symlink():
                try:
                    raw = read_json(path)
                    if not isinstance(raw, dict):
                        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
                    for rel, entry in raw.items():
                        if not _INPUT.fullmatch(rel) or not isinstance(entry, dict):
                            raise ValueError(f"unexpected entry {rel!r}")
                        entry = dict(entry)
                        src = entry.pop("source", None)
                        sums[rel] = FileDigest.from_dict(entry)
                        if src is not None:
                            if (not isinstance(src, dict) or set(src) != {"path", "sha256"}
                                    or not isinstance(src["path"], str) or not isinstance(src["sha256"], str)
                                    or not _SOURCE.fullmatch(src["path"])):
                                raise ValueError(f"source of {rel!r} is not {{path, sha256}}")
                            sources[rel] = (src["path"], src["sha256"])
                except (StoreError, ValueError, OSError) as e:
                    self.checksums_problem = f"{path} is damaged ({e})"
                    sums, sources = {}, {}
            self._checksums, self._sources = sums, sources
        return self._checksums

    def _write_checksums(self, sums: dict[str, FileDigest], sources: dict[str, tuple[str, str]]) -> None:
        out = {}
        for rel in sorted(sums):
            out[rel] = sums[rel].to_dict()
            if rel in sources:
                out[rel]["source"] = {"path": sources[rel][0], "sha256": sources[rel][1]}
        atomic_write_json(self.path / CHECKSUMS, out)
        self._checksums, self._sources = sums, sources
        self.checksums_problem = None

    def _save_input(self, path: Path, state: dict[str, torch.Tensor], source: Path | None = None) -> None:
        """Record the file's digest (and the digest of the file it was computed from), then write
        the file (see the module docstring for why)."""
        data = torch_bytes(_cpu(state))
        digest = digest_bytes(data)
        rel = self.rel(path)
        sums = self.checksums()  # loads self._sources too
        sources = {k: v for k, v in self._sources.items() if k != rel}
        if source is not None:
            sources[rel] = (self.rel(source), self._digests.digest(source).sha256)
        self._write_checksums({**sums, rel: digest}, sources)
        atomic_write_bytes(path, data)
        self._digests.remember(path, digest)
        if rel in self._discarded:
            same = self._discarded.pop(rel) == digest
            self.log(f"recomputed {rel}: " + ("identical to the file it replaces, so the units that started "
                                             "from it stay finished" if same else
                                             "it differs from the file it replaces, so the units that started "
                                             "from it are retrained"))

    def input_problem(self, path: Path) -> str | None:
        """Why an input file cannot be trusted (missing although recorded, changed, unrecorded,
        computed from a trained ticket that has since been retrained), or None if it is the
        recorded file or was simply never written."""
        rel = self.rel(path)
        expected = self.checksums().get(rel)
        if expected is None:
            if not (path.exists() or path.is_symlink()):
                return None
            return ("has no recorded checksum" + (f" ({self.checksums_problem})" if self.checksums_problem
                                                  else f" in {CHECKSUMS}"))
        problem = self._digests.problem(path, expected)
        if problem is None and rel in self._sources:
            src, sha = self._sources[rel]
            now = self._recorded_output(self.path / src)
            if now is not None and now.sha256 != sha:
                return f"was pruned from {src}, which has been retrained since"
        return problem

    def _recorded_output(self, path: Path) -> FileDigest | None:
        """The digest a finished unit's ``result.json`` records for one of its files; None if
        the unit is not finished or its record is unreadable."""
        try:
            return self._result(path.parent / RESULT)[1].get(path.name)
        except (OSError, StoreError):
            return None

    def _load_input(self, path: Path) -> Any:
        problem = self.input_problem(path)
        if problem is not None:
            raise DamagedFileError(path, problem, RERUN_FIX)
        if self.rel(path) not in self.checksums():
            return None  # never written
        return torch_load(path)

    def discard_input(self, path: Path) -> None:
        """Forget a damaged input (file and checksum) so that it is recomputed; the digest it had
        (recorded, else the file's own) is kept to say whether the recomputed file is identical."""
        rel = self.rel(path)
        sums = dict(self.checksums())
        was = sums.pop(rel, None)
        if was is None:  # unrecorded: compare the recomputed file with the one it replaces
            try:
                was = self._digests.digest(path)
            except OSError:
                pass
        if was is not None:
            self._discarded[rel] = was
        self._write_checksums(sums, {k: v for k, v in self._sources.items() if k != rel})
        _remove(path)

    def input_paths(self) -> list[Path]:
        """Every recorded input and every input file present, recorded or not."""
        found = {self.path / rel for rel in self.checksums()}
        for pattern in (f"trial_*/{THETA0}", f"trial_*/{REWIND}", f"trial_*/{REWIND_OPTIMIZER}",
                        f"trial_*/level_*/{MASK}"):
            found.update(self.path.glob(pattern))
        return sorted(found)

    # ------------------------------------------------------------------ per-trial and per-level state
    def load_theta0(self, trial: int) -> dict[str, torch.Tensor] | None:
        """The trial's initialisation, or None if not drawn yet; DamagedFileError if damaged."""
        return self._load_input(self.theta0_path(trial))

    def save_theta0(self, trial: int, state: dict[str, torch.Tensor]) -> None:
        self._save_input(self.theta0_path(trial), state)

    def load_rewind(self, trial: int) -> dict[str, torch.Tensor]:
        """theta_k of a trial (written by its dense unit at iteration k)."""
        state = self._load_input(self.rewind_path(trial))
        if state is None:
            raise DamagedFileError(self.rewind_path(trial), f"is missing although level 0 of trial {trial} "
                                   "finished", RERUN_FIX)
        return state

    def save_rewind(self, trial: int, state: dict[str, torch.Tensor]) -> None:
        self._save_input(self.rewind_path(trial), state)

    def load_rewind_optimizer(self, trial: int) -> dict[str, Any]:
        """The dense run's optimizer state at iteration k (``lottery.rewind_optimizer``), in the
        layout of a plain ``torch.optim`` optimizer over the model's parameters."""
        state = self._load_input(self.rewind_optimizer_path(trial))
        if state is None:
            raise DamagedFileError(self.rewind_optimizer_path(trial), f"is missing although level 0 of trial "
                                   f"{trial} finished", RERUN_FIX)
        return state

    def save_rewind_optimizer(self, trial: int, state: dict[str, Any]) -> None:
        self._save_input(self.rewind_optimizer_path(trial), state)

    def load_level_mask(self, trial: int, level: int) -> dict[str, torch.Tensor] | None:
        """The IMP mask of a pruned level, or None if not pruned yet; DamagedFileError if damaged."""
        return self._load_input(self.level_mask_path(trial, level))

    def save_level_mask(self, trial: int, level: int, mask: dict[str, torch.Tensor],
                        pruned_from: Path | None = None) -> None:
        """Store a level's mask; ``pruned_from`` is the trained ticket's ``final.pt`` it was pruned
        from: retraining that ticket to different weights makes this mask stale (recomputed)."""
        self._save_input(self.level_mask_path(trial, level), mask, pruned_from)

    # ------------------------------------------------------------------ a finished unit's files
    def _unit_file(self, trial: int, level: int, branch: str, name: str) -> Any:
        """A file a finished unit wrote, checked against its ``result.json``."""
        udir = self.unit_dir(trial, level, branch)
        files = self._unit_files(trial, level, branch)
        if name not in files:
            raise DamagedFileError(udir / name, "is not among the files its unit's result.json records", RERUN_FIX)
        problem = self._digests.problem(udir / name, files[name])
        if problem is not None:
            raise DamagedFileError(udir / name, problem, RERUN_FIX)
        return torch_load(udir / name)

    def _unit_files(self, trial: int, level: int, branch: str) -> dict[str, FileDigest]:
        path = self.unit_dir(trial, level, branch) / RESULT
        if not path.exists():
            raise DamagedFileError(path, "is missing: the unit is not finished", "rerun the same `lth run` command")
        return self._result(path)[1]

    def load_unit_mask(self, trial: int, level: int, branch: str) -> dict[str, torch.Tensor] | None:
        """A finished unit's own mask (branches whose mask is not the level's, e.g. random_mask),
        checked against its record; None if the unit has not finished or did not write one."""
        if not (self.unit_dir(trial, level, branch) / RESULT).exists():
            return None
        if MASK not in self._unit_files(trial, level, branch):
            return None
        return self._unit_file(trial, level, branch, MASK)

    def load_metrics(self, trial: int, level: int, branch: str) -> list[dict[str, Any]]:
        """A finished unit's evaluations (its ``metrics.jsonl`` lines, in iteration order), checked
        against its record; a :class:`DamagedFileError` if the file is not the recorded one."""
        udir = self.unit_dir(trial, level, branch)
        files = self._unit_files(trial, level, branch)
        if METRICS not in files:
            raise DamagedFileError(udir / METRICS, "is not among the files its unit's result.json records",
                                   RERUN_FIX)
        problem = self._digests.problem(udir / METRICS, files[METRICS])
        if problem is not None:
            raise DamagedFileError(udir / METRICS, problem, RERUN_FIX)
        try:
            return [json.loads(line) for line in (udir / METRICS).read_text().splitlines()]
        except (OSError, ValueError) as e:
            raise DamagedFileError(udir / METRICS, f"cannot be read ({type(e).__name__})", RERUN_FIX) from None

    def load_final(self, trial: int, level: int, branch: str) -> dict[str, torch.Tensor]:
        """A finished unit's trained weights, checked against its record."""
        return self._unit_file(trial, level, branch, FINAL)

    # ------------------------------------------------------------------ units
    def is_done(self, trial: int, level: int, branch: str) -> bool:
        """Finished and intact (see the module docstring); a damaged unit is not done."""
        return self.unit_problems(trial, level, branch) == []

    def unit_problems(self, trial: int, level: int, branch: str) -> list[str] | None:
        """None if the unit has not finished (no ``result.json``); else what is wrong with it,
        ``[]`` if it is intact."""
        udir = self.unit_dir(trial, level, branch)
        path = udir / RESULT
        if not (path.exists() or path.is_symlink()):
            return None
        try:
            record, files, inputs = self._result(path)
        except StoreError as e:
            return [str(e.problem if isinstance(e, DamagedFileError) else e)]
        if record.key != (trial, level, branch):
            return [f"result.json describes trial {record.trial} level {record.level} {record.branch}, "
                    "not this unit"]
        problems = [f"{name} {p}" for name, d in sorted(files.items())
                    if (p := self._digests.problem(udir / name, d)) is not None]
        required = (METRICS, FINAL) if record.ok else ()
        problems += [f"result.json records no {name}" for name in required if name not in files]
        sums = self.checksums()
        for rel, d in sorted(inputs.items()):
            if _SOURCE.fullmatch(rel):  # another unit's trained weights
                now = self._recorded_output(self.path / rel)
                if now is not None and now != d:
                    problems.append(f"its input {rel} is no longer the file it started from (that unit has "
                                    "been retrained since)")
                elif (p := self._digests.problem(self.path / rel, d)) is not None:
                    problems.append(f"its input {rel} {p}")
                elif now is None:
                    problems.append(f"its input {rel} belongs to a unit that is no longer finished")
            elif (p := self.input_problem(self.path / rel)) is not None:
                problems.append(f"its input {rel} {p}")
            elif sums.get(rel) != d:
                problems.append(f"its input {rel} is no longer the file it started from")
        if record.ok and METRICS in files and not any(p.startswith(METRICS) for p in problems):
            key = (record, files[METRICS])  # the metrics file is the recorded one: check it once
            if key not in self._metrics_checked:
                try:
                    metrics = [json.loads(line) for line in (udir / METRICS).read_text().splitlines()]
                    self._metrics_checked[key] = record.metrics_problem(metrics)
                except (OSError, ValueError) as e:
                    self._metrics_checked[key] = f"metrics.jsonl cannot be read ({type(e).__name__})"
            if self._metrics_checked[key] is not None:
                problems.append(self._metrics_checked[key])
        return problems

    def _result(self, path: Path) -> tuple[UnitRecord, dict[str, FileDigest], dict[str, FileDigest]]:
        """A unit's parsed ``result.json``, read again only when the file changed."""
        try:
            sig = signature(os.stat(path))
        except OSError:
            return _parse_result(path)
        hit = self._results.get(path)
        if hit is None or hit[0] != sig:
            hit = (sig, _parse_result(path))
            self._results[path] = hit
        return hit[1]

    def invalidate_unit(self, trial: int, level: int, branch: str) -> None:
        """Make a finished unit unfinished (its ``result.json`` goes, and any checkpoint with it),
        so that the next run retrains it from the start."""
        udir = self.unit_dir(trial, level, branch)
        for name in (RESULT, CHECKPOINT):
            _remove(udir / name)

    def record(self, trial: int, level: int, branch: str) -> UnitRecord:
        """A finished unit's record, whether intact or not (see :meth:`unit_problems`)."""
        return self._result(self.unit_dir(trial, level, branch) / RESULT)[0]

    def finished_units(self) -> list[tuple[int, int, str]]:
        """(trial, level, branch) of every unit with a ``result.json``, intact or not, sorted."""
        keys = []
        for p in self.path.glob(f"trial_*/level_*/*/{RESULT}"):
            t, lv = _number(p.parents[2].name), _number(p.parents[1].name)
            if t is not None and lv is not None:
                keys.append((t, lv, p.parent.name))
        return sorted(keys)

    def records(self) -> list[UnitRecord]:
        """Every intact finished unit's record, sorted by (trial, level, branch)."""
        return self.survey()[0]

    def damaged_units(self) -> dict[tuple[int, int, str], list[str]]:
        """Every finished unit that is not intact, with what is wrong with it."""
        return self.survey()[1]

    def survey(self) -> tuple[list[UnitRecord], dict[tuple[int, int, str], list[str]]]:
        """:meth:`records` and :meth:`damaged_units` from one check of every finished unit's files."""
        records, damaged = [], {}
        for k in self.finished_units():
            if problems := self.unit_problems(*k):
                damaged[k] = problems
            else:
                records.append(self.record(*k))
        return records, damaged

    def load_checkpoint(self, trial: int, level: int, branch: str) -> dict[str, Any] | None:
        return _load_if_exists(self.unit_dir(trial, level, branch) / CHECKPOINT)

    def finish_unit(self, record: UnitRecord, *, metrics: list[dict[str, Any]] | None = None,
                    final_state: dict[str, torch.Tensor] | None = None,
                    own_mask: dict[str, torch.Tensor] | None = None,
                    inputs: list[Path] = ()) -> None:
        """Write a finished unit's files, then ``result.json`` with the record and the digests of
        those files and of ``inputs`` (the recorded files it started from), last: its presence
        means finished. Drops the unit's checkpoint and refreshes ``summary.json``."""
        udir = self.unit_dir(record.trial, record.level, record.branch)
        files: dict[str, FileDigest] = {}
        if metrics is not None:
            lines = "".join(json.dumps(m) + "\n" for m in metrics)
            files[METRICS] = atomic_write_bytes(udir / METRICS, lines.encode())
        if final_state is not None:
            files[FINAL] = atomic_torch_save(udir / FINAL, _cpu(final_state))
        if own_mask is not None:
            files[MASK] = atomic_torch_save(udir / MASK, _cpu(own_mask))
        for name, d in files.items():
            self._digests.remember(udir / name, d)
        digests = {self.rel(p): self._input_digest(p) for p in inputs}
        missing = [rel for rel, d in digests.items() if d is None]
        if missing:
            raise StoreError(f"internal error: inputs {missing} of a unit have no recorded checksum")
        result = {**record.to_dict(), "files": {n: d.to_dict() for n, d in sorted(files.items())},
                  "inputs": {rel: d.to_dict() for rel, d in digests.items()}}
        atomic_write_json(udir / RESULT, result)
        ckpt = udir / CHECKPOINT
        if ckpt.exists():
            ckpt.unlink()
        self.write_summary()

    def _input_digest(self, path: Path) -> FileDigest | None:
        """What a unit records for an input it started from: the checksum list's digest of a
        theta0, rewind or level mask; for another unit's ``final.pt``, the digest that unit's
        ``result.json`` records. None if there is none."""
        rel = self.rel(path)
        if _SOURCE.fullmatch(rel):
            return self._recorded_output(Path(path))
        return self.checksums().get(rel)

    def write_summary(self) -> list[UnitRecord]:
        """``summary.json``: every intact finished unit's record, derived from the units' own files."""
        records = self.records()
        want = [r.to_dict() for r in records]
        try:
            if read_json(self.path / SUMMARY) == want:
                return records  # already derived from exactly these units
        except (OSError, StoreError):
            pass
        atomic_write_json(self.path / SUMMARY, want)
        return records


def _cpu(state: Any) -> Any:
    """Tensors moved to the CPU, in a state dict or in nested dicts and lists of them (an optimizer
    ``state_dict``); other values as they are."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu(v) for v in state)
    return state


def _load_if_exists(path: Path) -> Any:
    return torch_load(path) if path.exists() else None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        import shutil

        shutil.rmtree(path)


def _number(name: str) -> int | None:
    """``level_12`` -> 12, ``trial_3`` -> 3; None for a name without a number."""
    num = name.partition("_")[2]
    return int(num) if num.isdigit() and num.isascii() else None


def _parse_result(path: Path) -> tuple[UnitRecord, dict[str, FileDigest], dict[str, FileDigest]]:
    """A unit's ``result.json``: its record, the digests of its files and of its inputs."""
    raw = read_json(path)
    try:
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        raw = dict(raw)
        if "files" not in raw or "inputs" not in raw:
            raise ValueError("no checksums of its files (written by an lth before 0.2, or edited)")
        files, inputs = raw.pop("files"), raw.pop("inputs")
        if not isinstance(files, dict) or not isinstance(inputs, dict):
            raise ValueError("files and inputs must be JSON objects")
        bad = [n for n in files if n not in (METRICS, FINAL, MASK)]
        bad += [r for r in inputs if not isinstance(r, str) or not (_INPUT.fullmatch(r) or _SOURCE.fullmatch(r))]
        if bad:
            raise ValueError(f"unknown file(s) {', '.join(map(repr, bad))}")
        return (UnitRecord.from_dict(raw), {n: FileDigest.from_dict(d) for n, d in files.items()},
                {str(r): FileDigest.from_dict(d) for r, d in inputs.items()})
    except (ValueError, TypeError) as e:
        raise DamagedFileError(path, f"is not a valid unit record ({e})",
                               "rerun the same `lth run` command to retrain that unit") from None


def config_from_run(run_dir: Path) -> ExperimentConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise StoreError(f"{run_dir} is not an lth run directory (no config.json)")
    return ExperimentConfig.from_dict(read_json(path))
