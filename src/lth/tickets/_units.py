"""Locating a unit (trial, level, branch) in a run directory and recomputing what it started from.

STOPGAP: this re-derives the run-directory layout and the driver's mask/start-state rules by hand
(mirroring :class:`lth.lottery.Lottery`; tests compare the two). It is to be replaced by lookups
through the store and experiment layers; nothing else in :mod:`lth.tickets` knows the layout, and
this is the whole interface :mod:`lth.tickets.export` uses:

* :func:`resolve_unit` -> :class:`Unit` (a finished unit, or :class:`ExportError` saying why not
  and which units are finished),
* :func:`model_spec`, :func:`unit_mask`, :func:`final_state`, :func:`init_state`.
"""

from __future__ import annotations

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
        from ..store import RunStore

        return RunStore(self.run_dir).unit_dir(self.trial, self.level, self.branch)


def _finished_levels(trial_dir: Path, branch: str) -> list[int]:
    from ..store import RESULT, read_json

    done = []
    for d in trial_dir.glob(f"level_*/{branch}/{RESULT}"):
        lv = _dir_number(d.parent.parent)
        try:
            ok = read_json(d).get("status", "ok") == "ok"
        except (OSError, ValueError):
            ok = False
        if lv is not None and ok:
            done.append(lv)
    return sorted(done)


def resolve_unit(run_dir: Path | str, level: int, trial: int, branch: str) -> Unit:
    """Check that (trial, level, branch) is a finished unit of an lth run; clear errors if not."""
    from ..config import ConfigError
    from ..store import CHECKPOINT, RESULT, RunStore, StoreError, config_from_run, read_json

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
    trials = sorted(n for p in run_dir.glob("trial_*") if p.is_dir() and (n := _dir_number(p)) is not None)
    if trial not in trials:
        have = f"trials present: {_ranges(trials)}" if trials else "no trial has started yet"
        raise ExportError(f"trial {trial} not found in {run_dir} ({have}); choose one with --trial")
    store = RunStore(run_dir)
    trial_dir = store.trial_dir(trial)
    if level < 0:
        raise ExportError(f"level {level}: levels are 0 (dense) or more")
    branches = {"ticket", *cfg.lottery.branches}
    branches |= {p.name for p in trial_dir.glob("level_*/*") if p.is_dir()}
    if branch not in branches:
        raise ExportError(f"unknown branch {branch!r}; this run has branches: "
                          f"{', '.join(sorted(branches))} (choose one with --branch)")
    if level == 0 and branch != "ticket":
        raise ExportError(f"level 0 is the dense network and has only the 'ticket' branch, "
                          f"not {branch!r}; use --branch ticket or a level of 1 or more")
    udir = store.unit_dir(trial, level, branch)
    done = _finished_levels(trial_dir, branch)
    hint = (f"finished levels of branch {branch!r} in trial {trial}: {_ranges(done)}. Choose one "
            f"with --level, or finish the run by rerunning the same `lth run` command")
    if not (udir / RESULT).exists():
        state = "still training or interrupted" if (udir / CHECKPOINT).exists() else "not started"
        raise ExportError(f"level {level} of trial {trial}, branch {branch!r}, is not finished "
                          f"({state}); {hint}")
    result = read_json(udir / RESULT)
    if result.get("status", "ok") != "ok":
        raise ExportError(f"level {level} of trial {trial}, branch {branch!r}, failed during training "
                          f"({result.get('error', 'no error recorded')}) and has no trained weights; {hint}")
    return Unit(run_dir, cfg, trial, level, branch, result)


def model_spec(cfg: Any) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of the run's data set, which the model is built for."""
    from ..data import DataError, dataset_info

    try:
        info = dataset_info(cfg.data.dataset)
    except DataError as e:
        raise ExportError(str(e)) from e
    return tuple(info.input_shape), int(info.num_classes)


def unit_mask(unit: Unit, model: nn.Module) -> dict[str, torch.Tensor]:
    """The unit's mask: dense at level 0, the branch's own mask.pt (random_mask), else the level's."""
    import torch

    from ..models import prunable_tensors
    from ..pruning import full_mask
    from ..store import torch_load

    if unit.level == 0:
        return full_mask(prunable_tensors(model))
    for path in (unit.dir / "mask.pt", unit.dir.parent / "mask.pt"):
        if path.exists():
            mask = torch_load(path)
            return {n: m.to(torch.bool) for n, m in mask.items()}
    raise ExportError(f"{unit.dir.parent / 'mask.pt'} is missing although the level finished; the "
                      "run directory is incomplete (delete the level's directory and rerun `lth run`)")


def final_state(unit: Unit) -> dict[str, torch.Tensor]:
    """The unit's trained weights (``final.pt``)."""
    from ..store import torch_load

    path = unit.dir / "final.pt"
    if not path.exists():
        raise ExportError(f"{path} is missing although the unit finished; the run directory "
                          "is incomplete (delete the unit's directory and rerun `lth run`)")
    return torch_load(path)


def init_state(unit: Unit, model_factory: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """The weights the unit started training from (before masking).

    Mirrors :meth:`lth.lottery.Lottery.branch_spec`: ticket and random_mask start from theta0 (or
    theta_k when rewinding; the dense level always from theta0), reinit from a fresh draw seeded by
    ("reinit", trial, level).
    """
    from ..lottery import reinit_state
    from ..store import torch_load

    tdir = unit.dir.parent.parent
    k = unit.cfg.lottery.rewind_iteration
    if unit.branch in ("ticket", "random_mask"):
        path = tdir / ("theta0.pt" if unit.level == 0 or k == 0 else "rewind.pt")
        if not path.exists():
            raise ExportError(f"{path} is missing; the run directory is incomplete, so the "
                              "ticket's initialisation cannot be exported (use --weights final)")
        return torch_load(path)
    if unit.branch == "reinit":
        return reinit_state(model_factory(), unit.cfg, unit.trial, unit.level)
    raise ExportError(f"the starting weights of branch {unit.branch!r} are not known to "
                      "`lth export`; use --weights final")
