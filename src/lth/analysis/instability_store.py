"""Instability results on disk: the typed records and the output directory, written crash-safely.

Layout (default: ``RUN_DIR/instability/``)::

    <out>/
        config.json                 the experiment's configuration (a sweep of another one is refused)
        .lock                       held by the running sweep (fcntl)
        trial_<T>/level_<L>/k_<K>/
            checkpoint.pt           while copies train: their training states (one file, so the
                                    copies trained together always resume together)
            copy_<c>.pt             copy c's trained weights
            copies.json             which copies are trained: what they started from (the start
                                    record: configuration hash, trial, level, k, digests of theta0
                                    and of the mask, seeds) and each copy's seeds, file digest and
                                    training time; written after the weight files it lists
            result.json             written last: the :class:`InstabilityResult`, its start record
                                    and the digests of the copies it was measured on
        instability.{md,csv,json,png,svg}   the tables and figure of ``lth instability``

Every file appears atomically (:mod:`lth.store.atomic`), and each one is written only after what
it vouches for, so a sweep killed at any moment leaves no ``result.json`` for unfinished work and
no ``copies.json`` entry for a copy whose weights are not on disk. A rerun reads a ``result.json``
only if its start record is the one the sweep would start from now and its protocol the one asked
for; finished copies are reused (after checking their file digests) to evaluate a path again,
e.g. with more points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, ExperimentConfig
from ..store import (
    LOCK,
    DamagedFileError,
    DigestCache,
    FileDigest,
    StoreError,
    atomic_torch_save,
    atomic_write_json,
    lock_folder,
    read_json,
    torch_load,
    unlock_folder,
)
from .interpolation import error_barrier

__all__ = ["InstabilityDir", "InstabilityProtocol", "InstabilityResult", "load_results"]

RESULT = "result.json"
COPIES_FILE = "copies.json"
CHECKPOINT = "checkpoint.pt"
RERUN = "rerun the same `lth instability` command to recompute it"


@dataclass(frozen=True)
class InstabilityProtocol:
    """How a path is evaluated (training the copies does not depend on it).

    ``points``: evenly spaced alphas, both endpoints included (the paper: 30). ``train_examples``:
    size of the seeded fixed subset of the training split on which the train error is measured
    (0: the whole training split). ``bn_batches``: training batches (of ``train.batch_size``) over
    which BatchNorm statistics are recomputed at each point (unused without BatchNorm)."""

    points: int = 30
    train_examples: int = 10_000
    bn_batches: int = 100

    def __post_init__(self) -> None:
        for name, lo, hi in (("points", 2, 10_000), ("train_examples", 0, 100_000_000), ("bn_batches", 1, 100_000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{name} = {v!r}: must be an integer from {lo} to {hi:,}")

    def to_dict(self) -> dict[str, Any]:
        return {"points": self.points, "train_examples": self.train_examples, "bn_batches": self.bn_batches}


@dataclass(frozen=True)
class InstabilityResult:
    """One rewind point's measurement: the errors along the line between the two trained copies
    and its barriers. Errors, barriers and accuracies are fractions in [0, 1]."""

    trial: int
    level: int
    rewind_iteration: int  # k: the copies started from theta_k (masked)
    iterations: int  # ... and trained to this iteration
    weights_remaining: float  # fraction of the prunable weights the mask keeps
    alphas: tuple[float, ...]  # copy 0 at alpha 0, copy 1 at alpha 1
    train_errors: tuple[float, ...]
    test_errors: tuple[float, ...]
    train_barrier: float  # error_barrier(train_errors)
    test_barrier: float
    endpoint_test_accuracy: tuple[float, ...]  # each copy's test accuracy (the path's ends)
    train_examples: int  # training images the train error was measured on
    bn_recomputed: bool  # BatchNorm statistics recomputed at each point
    data_seeds: tuple[int, ...]  # each copy's data-order (and augmentation) seed
    train_seconds: float  # training the copies (not the dense pass to theta_k)
    eval_seconds: float  # evaluating the path
    protocol: InstabilityProtocol = field(default_factory=InstabilityProtocol)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            d[name] = v.to_dict() if name == "protocol" else list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: Any) -> InstabilityResult:
        """Parse :meth:`to_dict`'s shape; anything else (a missing or unknown field, a wrong
        type, barriers that are not those of the errors) is a ValueError naming the field."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        names = set(cls.__dataclass_fields__)
        missing, unknown = names - set(d), set(d) - names
        if missing or unknown:
            raise ValueError(f"fields missing {sorted(missing)}, unknown {sorted(unknown)}")
        kw: dict[str, Any] = {}
        for name in ("trial", "level", "rewind_iteration", "iterations", "train_examples"):
            kw[name] = _count(name, d[name])
        for name in ("weights_remaining", "train_barrier", "test_barrier", "train_seconds", "eval_seconds"):
            kw[name] = _number(name, d[name])
        for name in ("alphas", "train_errors", "test_errors", "endpoint_test_accuracy"):
            if not isinstance(d[name], list):
                raise ValueError(f"{name} is not a list")
            kw[name] = tuple(_number(name, v) for v in d[name])
        if not isinstance(d["data_seeds"], list):
            raise ValueError("data_seeds is not a list")
        kw["data_seeds"] = tuple(_count("data_seeds", s) for s in d["data_seeds"])
        if not isinstance(d["bn_recomputed"], bool):
            raise ValueError("bn_recomputed is not true or false")
        kw["bn_recomputed"] = d["bn_recomputed"]
        p = d["protocol"]
        if not isinstance(p, dict) or set(p) != {"points", "train_examples", "bn_batches"}:
            raise ValueError("protocol is not {points, train_examples, bn_batches}")
        try:
            kw["protocol"] = InstabilityProtocol(**p)
        except ConfigError as e:
            raise ValueError(f"protocol: {e}") from None
        n = kw["protocol"].points
        if not len(kw["alphas"]) == len(kw["train_errors"]) == len(kw["test_errors"]) == n:
            raise ValueError(f"alphas, train_errors and test_errors must hold protocol.points = {n} values each")
        for name in ("train", "test"):
            if abs(error_barrier(kw[f"{name}_errors"]) - kw[f"{name}_barrier"]) > 1e-9:
                raise ValueError(f"{name}_barrier is not the barrier of {name}_errors")
        return cls(**kw)


def _count(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name}: {v!r} is not a non-negative integer")
    return v


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name}: {v!r} is not a finite number")
    return float(v)


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


class InstabilityDir:
    """An instability output directory (module docstring), locked while a sweep writes to it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._digests = DigestCache()

    # ------------------------------------------------------------------ opening and locking
    @classmethod
    def open(cls, path: Path, cfg: ExperimentConfig) -> InstabilityDir:
        """Create (or reopen) the directory, lock it, and check that it holds results of ``cfg``
        (its identity: the fields that change any number), or none."""
        out = cls(path)
        try:
            out.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the output directory {out.path}: {e.strerror}; choose another "
                             "--out") from None
        out._lock()
        try:
            cfg_path = out.path / "config.json"
            if cfg_path.exists():
                try:
                    stored = ExperimentConfig.from_dict(read_json(cfg_path)).identity_dict()
                except (ValueError, TypeError, StoreError) as e:
                    raise StoreError(f"{cfg_path} is damaged ({str(e)[:120]}); restore it, or use another --out") \
                        from None
                if stored != cfg.identity_dict():
                    raise StoreError(f"{out.path} holds instability results of another configuration; refusing to "
                                     "mix them. Use another --out")
            atomic_write_json(cfg_path, cfg.to_dict())
        except BaseException:
            out.close()
            raise
        return out

    def _lock(self) -> None:
        self._lock_fd = lock_folder(
            self.path,
            lambda holder: StoreError(f"{self.path} is in use by another lth instability process; wait for it to "
                                      "finish, or stop it and rerun the same command to continue"),
            lambda e: StoreError(f"cannot write {self.path / LOCK} ({e.strerror}); choose another --out"))

    def close(self) -> None:
        if self._lock_fd is not None:
            unlock_folder(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> InstabilityDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ one rewind point
    def point_dir(self, trial: int, level: int, k: int) -> Path:
        return self.path / f"trial_{trial}" / f"level_{level}" / f"k_{k}"

    def result(self, trial: int, level: int, k: int) -> tuple[InstabilityResult, dict[str, Any]] | None:
        """The finished measurement and its start record, or None if there is none;
        :class:`DamagedFileError` if ``result.json`` cannot be read as one."""
        path = self.point_dir(trial, level, k) / RESULT
        if not path.exists():
            return None
        return _parse_result(path)

    def write_result(self, result: InstabilityResult, start: dict[str, Any], files: dict[str, FileDigest]) -> Path:
        path = self.point_dir(result.trial, result.level, result.rewind_iteration) / RESULT
        atomic_write_json(path, {**result.to_dict(), "start": start,
                                 "files": {n: d.to_dict() for n, d in sorted(files.items())}})
        return path

    def drop_result(self, trial: int, level: int, k: int) -> None:
        (self.point_dir(trial, level, k) / RESULT).unlink(missing_ok=True)

    def finished_copies(self, trial: int, level: int, k: int, start: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """The copies of this rewind point that ``copies.json`` records for ``start`` and whose
        weight files are still the recorded ones: ``{copy: entry}``. Anything else (another
        start, an unreadable list, a changed file) counts as not trained."""
        d = self.point_dir(trial, level, k)
        try:
            raw = read_json(d / COPIES_FILE)
        except (FileNotFoundError, StoreError):
            return {}
        if not isinstance(raw, dict) or raw.get("start") != start or not isinstance(raw.get("copies"), dict):
            return {}
        seeds = start.get("data_seeds", [])
        out = {}
        for key, entry in raw["copies"].items():
            try:
                c, digest = int(key), FileDigest.from_dict(entry["file"])
                if (not 0 <= c < len(seeds) or entry["data_seed"] != seeds[c]
                        or not isinstance(entry["train_seconds"], (int, float))):
                    continue
            except (ValueError, TypeError, KeyError):
                continue
            if self._digests.problem(d / f"copy_{c}.pt", digest) is None:
                out[c] = entry
        return out

    def save_copy(self, trial: int, level: int, k: int, copy: int, state: dict[str, torch.Tensor]) -> FileDigest:
        path = self.point_dir(trial, level, k) / f"copy_{copy}.pt"
        digest = atomic_torch_save(path, _cpu(state))
        self._digests.remember(path, digest)
        return digest

    def write_copies(self, trial: int, level: int, k: int, start: dict[str, Any],
                     copies: dict[int, dict[str, Any]]) -> None:
        atomic_write_json(self.point_dir(trial, level, k) / COPIES_FILE,
                          {"start": start, "copies": {str(c): e for c, e in sorted(copies.items())}})

    def load_copy(self, trial: int, level: int, k: int, copy: int, digest: FileDigest) -> dict[str, torch.Tensor]:
        path = self.point_dir(trial, level, k) / f"copy_{copy}.pt"
        problem = self._digests.problem(path, digest)
        if problem is not None:
            raise DamagedFileError(path, problem, RERUN)
        return torch_load(path)

    def load_checkpoint(self, trial: int, level: int, k: int) -> Any:
        """The checkpoint of the copies training at this rewind point, or None (none, or
        unreadable: the copies then train from k)."""
        path = self.point_dir(trial, level, k) / CHECKPOINT
        if not path.exists():
            return None
        try:
            return torch_load(path)
        except DamagedFileError:
            return None

    def save_checkpoint(self, trial: int, level: int, k: int, record: dict[str, Any]) -> None:
        atomic_torch_save(self.point_dir(trial, level, k) / CHECKPOINT, _cpu(record))

    def drop_checkpoint(self, trial: int, level: int, k: int) -> None:
        (self.point_dir(trial, level, k) / CHECKPOINT).unlink(missing_ok=True)


def _parse_result(path: Path) -> tuple[InstabilityResult, dict[str, Any]]:
    raw = read_json(path)
    try:
        if not isinstance(raw, dict):
            raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
        raw = dict(raw)
        start, files = raw.pop("start", None), raw.pop("files", None)
        if not isinstance(start, dict) or not isinstance(files, dict):
            raise ValueError("no start record or file digests")
        for d in files.values():
            FileDigest.from_dict(d)
        return InstabilityResult.from_dict(raw), start
    except (ValueError, TypeError) as e:
        raise DamagedFileError(path, f"is not a valid instability result ({e})", RERUN) from None


def load_results(out: str | Path, damaged: list[DamagedFileError] | None = None) -> list[InstabilityResult]:
    """Every finished measurement in an instability output directory, sorted by (trial, level,
    k). A ``result.json`` that cannot be read as one is a :class:`DamagedFileError` naming it, or,
    where a ``damaged`` list is given, appended to it and left out."""
    out = Path(out)
    if not out.is_dir():
        raise StoreError(f"{out} is not a folder of instability results (run `lth instability` first)")
    found = []
    for p in sorted(out.glob(f"trial_*/level_*/k_*/{RESULT}")):
        try:
            found.append(_parse_result(p)[0])
        except DamagedFileError as e:
            if damaged is None:
                raise
            damaged.append(e)
    return sorted(found, key=lambda r: (r.trial, r.level, r.rewind_iteration))
