"""Locating a finished unit (trial, level, branch) of a run directory and what it started from.

Everything comes from the store (records, masks, weights) and the experiment layer (a branch's
own start state, from the branch registry), so an export reads exactly what the driver used.
Nothing here writes to the run directory, and only an intact unit is exported (its files and the
inputs it started from match the checksums recorded when it finished): a file that is missing or
changed is an :class:`ExportError` naming it, never a silent fallback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ExportError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Unit", "final_state", "init_state", "model_spec", "resolve_unit", "unit_mask"]


def _ranges(xs: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    if not xs:
        return "none"
    out, start, prev = [], xs[0], xs[0]
    for x in [*xs[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(out)


def _dir_number(p: Path) -> int | None:
    """``level_12`` -> 12, ``trial_3`` -> 3; None for a name without a number."""
    num = p.name.partition("_")[2]
    return int(num) if num.isdigit() else None


@dataclass
class Unit:
    """A finished unit of a run: its config, coordinates and result record."""

    run_dir: Path
    cfg: Any  # ExperimentConfig
    trial: int
    level: int
    branch: str
    result: dict[str, Any]

    @property
    def dir(self) -> Path:
        return self.store.unit_dir(self.trial, self.level, self.branch)

    @functools.cached_property
    def store(self):
        """One reader for the whole export, so each file is hashed once (the store caches digests)."""
        from ..store import RunStore

        return RunStore(self.run_dir)


def _finished_levels(run_dir: Path, trial: int, branch: str) -> list[int]:
    from ..store import RunStore, StoreError

    try:
        records = RunStore(run_dir).records()
    except StoreError as e:
        raise ExportError(str(e)) from e
    return sorted(r.level for r in records if r.trial == trial and r.branch == branch and r.ok)


def resolve_unit(run_dir: Path | str, level: int, trial: int, branch: str) -> Unit:
    """Check that (trial, level, branch) is a finished unit of an lth run; clear errors if not."""
    from ..config import ConfigError
    from ..experiment import branch_names
    from ..store import CHECKPOINT, RESULT, RunStore, StoreError, config_from_run

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ExportError(f"run directory {run_dir} does not exist; pass the directory that "
                          "`lth run` printed (<out>/<name>-<hash>, holding config.json and summary.json)")
    if not (run_dir / "config.json").is_file():
        raise ExportError(f"{run_dir} is not an lth run directory (no config.json); pass the "
                          "directory that `lth run` created, <out>/<name>-<hash>")
    try:
        cfg = config_from_run(run_dir)
    except (ConfigError, StoreError, ValueError, TypeError) as e:
        raise ExportError(f"cannot read {run_dir / 'config.json'}: {e}") from e
    if cfg.model.name == "user":
        raise ExportError(f"{run_dir} was made by lth.find_tickets with your own model and data, which "
                          "`lth export` cannot rebuild; in Python use the TicketSearch it returned: "
                          ".mask(level) and .weights(level), with lth.save_mask / lth.save_weights")
    trials = sorted(n for p in run_dir.glob("trial_*") if p.is_dir() and (n := _dir_number(p)) is not None)
    if trial not in trials:
        have = f"trials present: {_ranges(trials)}" if trials else "no trial has started yet"
        raise ExportError(f"trial {trial} not found in {run_dir} ({have}); choose one with --trial")
    store = RunStore(run_dir)
    if level < 0:
        raise ExportError(f"level {level}: levels are 0 (dense) or more")
    branches = [b for b in branch_names() if b == "ticket" or b in cfg.lottery.branches]
    if branch not in branches:
        raise ExportError(f"unknown branch {branch!r}; this run has branches: "
                          f"{', '.join(branches)} (choose one with --branch)")
    if level == 0 and branch != "ticket":
        raise ExportError(f"level 0 is the dense network and has only the 'ticket' branch, "
                          f"not {branch!r}; use --branch ticket or a level of 1 or more")
    udir = store.unit_dir(trial, level, branch)
    done = _finished_levels(run_dir, trial, branch)
    hint = (f"finished levels of branch {branch!r} in trial {trial}: {_ranges(done)}. Choose one "
            f"with --level, or finish the run by rerunning the same `lth run` command")
    if not (udir / RESULT).exists():
        state = "still training or interrupted" if (udir / CHECKPOINT).exists() else "not started"
        raise ExportError(f"level {level} of trial {trial}, branch {branch!r}, is not finished "
                          f"({state}); {hint}")
    problems = store.unit_problems(trial, level, branch)
    if problems:
        raise ExportError(f"level {level} of trial {trial}, branch {branch!r}, is damaged: {'; '.join(problems)}. "
                          f"Rerun the same `lth run` command to redo it (`lth verify {run_dir}` lists all damage)")
    try:
        record = store.record(trial, level, branch)
    except StoreError as e:
        raise ExportError(str(e)) from e
    if not record.ok:
        raise ExportError(f"level {level} of trial {trial}, branch {branch!r}, failed during training "
                          f"({record.error or 'no error recorded'}) and has no trained weights; {hint}")
    unit = Unit(run_dir, cfg, trial, level, branch, record.to_dict())
    unit.store = store  # the reader that checked the unit: the files it hashed are not hashed again
    return unit


def model_spec(cfg: Any) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of the run's data set, which the model is built for."""
    from ..data import DataError, dataset_info

    try:
        info = dataset_info(cfg.data.dataset)
    except DataError as e:
        raise ExportError(str(e)) from e
    return tuple(info.input_shape), int(info.num_classes)


def _experiment(unit: Unit, model_factory: Callable[[], nn.Module]):
    from ..experiment import Experiment

    input_shape, num_classes = model_spec(unit.cfg)
    return Experiment(unit.cfg, unit.store, input_shape, num_classes, model_factory=model_factory)


def unit_mask(unit: Unit, model: nn.Module) -> dict[str, torch.Tensor]:
    """The unit's mask as stored (:meth:`lth.experiment.Experiment.unit_mask`)."""
    import torch

    from ..experiment import UnitKey
    from ..store import StoreError

    try:
        mask = _experiment(unit, lambda: model).unit_mask(UnitKey(unit.trial, unit.level, unit.branch))
    except (FileNotFoundError, StoreError) as e:
        raise ExportError(str(e)) from e
    return {n: m.to(torch.bool) for n, m in mask.items()}


def final_state(unit: Unit) -> dict[str, torch.Tensor]:
    """The unit's trained weights (``final.pt``)."""
    from ..store import StoreError

    try:
        return unit.store.load_final(unit.trial, unit.level, unit.branch)
    except StoreError as e:
        raise ExportError(str(e)) from e


def init_state(unit: Unit, model_factory: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """The weights the unit started training from (before masking), as its branch defines them
    (:mod:`lth.experiment.branches`): the dense level from theta0; pruned levels from theta0 or
    theta_k as the branch says (reinit: a fresh draw seeded by ("reinit", trial, level))."""
    from ..experiment import UnitKey
    from ..store import StoreError

    store = unit.store
    try:
        theta0 = store.load_theta0(unit.trial)
    except StoreError as e:
        raise ExportError(f"{e}; the ticket's initialisation cannot be exported (use --weights final)") from e
    if theta0 is None:
        raise ExportError(f"{store.trial_dir(unit.trial) / 'theta0.pt'} is missing; the run directory is "
                          "incomplete, so the ticket's initialisation cannot be exported (use --weights final)")
    exp = _experiment(unit, model_factory)
    key = UnitKey(unit.trial, unit.level, unit.branch)
    if unit.level == 0:
        return exp.unit_spec(key).start_state
    try:
        start = theta0 if unit.cfg.lottery.rewind_iteration == 0 else store.load_rewind(unit.trial)
    except StoreError as e:
        raise ExportError(f"{e}; the ticket's initialisation cannot be exported (use --weights final)") from e
    return exp.unit_spec(key, unit_mask(unit, model_factory()), start).start_state
