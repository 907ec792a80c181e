"""Checking a whole run directory: what is intact, what is damaged, and what a rerun will redo.

Read-only: nothing is written, recomputed or locked, so a run directory can be audited while a run
is using it (a unit finishing meanwhile may then show as not yet trained). The checks are the
store's (:mod:`lth.store.run`, "Integrity"); this module adds the experiment's view: which units the
configuration expects and how a rerun repairs each kind of damage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, ExperimentConfig, config_hash
from ..store import CHECKSUMS, RunStore, StoreError, read_json
from .lottery import all_units

Key = tuple[int, int, str]


def _label(key: Key) -> str:
    return f"trial {key[0]} level {key[1]} {key[2]}"


@dataclass
class RunAudit:
    """The state of one run directory (see :func:`audit_run`)."""

    run_dir: Path
    config: ExperimentConfig | None
    config_problem: str | None = None
    checksums_problem: str | None = None
    inputs_intact: list[str] = field(default_factory=list)
    inputs_damaged: dict[str, str] = field(default_factory=dict)  # relative path -> problem
    units_intact: list[Key] = field(default_factory=list)
    units_damaged: dict[Key, list[str]] = field(default_factory=dict)
    units_unfinished: list[Key] = field(default_factory=list)
    summary_problem: str | None = None
    redo: list[str] = field(default_factory=list)  # what a rerun of the same command will do

    @property
    def damaged(self) -> bool:
        """True if anything finished is no longer what was written (a stale summary counts)."""
        return bool(self.config_problem or self.checksums_problem or self.inputs_damaged
                    or self.units_damaged or self.summary_problem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir), "damaged": self.damaged,
            "config_problem": self.config_problem, "checksums_problem": self.checksums_problem,
            "inputs": {"intact": self.inputs_intact, "damaged": self.inputs_damaged},
            "units": {"intact": [list(k) for k in self.units_intact],
                      "damaged": [{"trial": k[0], "level": k[1], "branch": k[2], "problems": v}
                                  for k, v in self.units_damaged.items()],
                      "not_yet_trained": [list(k) for k in self.units_unfinished]},
            "summary_problem": self.summary_problem, "rerun_will": self.redo,
        }

    def text(self) -> str:
        """A report for a person: counts, every problem, and what a rerun will redo."""
        lines = [f"run directory {self.run_dir}"]
        if self.config is not None:
            L = self.config.lottery
            lines[0] += (f": {self.config.name}, {L.trials} trials x (1 dense + {L.levels} levels x "
                         f"{len(set(L.branches) | {'ticket'})} branches)")
        if self.config_problem:
            lines.append(f"  config.json: {self.config_problem}")
        if self.checksums_problem:
            lines.append(f"  {CHECKSUMS}: {self.checksums_problem}")
        lines.append(f"inputs (theta0, rewind, level masks): {len(self.inputs_intact)} intact, "
                     f"{len(self.inputs_damaged)} damaged")
        lines += [f"  DAMAGED {rel}: {p}" for rel, p in self.inputs_damaged.items()]
        lines.append(f"units: {len(self.units_intact)} intact, {len(self.units_damaged)} damaged, "
                     f"{len(self.units_unfinished)} not yet trained")
        lines += [f"  DAMAGED {_label(k)}: {'; '.join(ps)}" for k, ps in self.units_damaged.items()]
        if self.summary_problem:
            lines.append(f"summary.json: {self.summary_problem}")
        if self.redo:
            lines.append("rerunning the same command will:")
            lines += [f"  - {r}" for r in self.redo]
        lines.append("DAMAGED: the numbers above marked DAMAGED are left out of reports until a rerun redoes them"
                     if self.damaged else "intact: every finished unit's files and numbers check out")
        return "\n".join(lines) + "\n"


def audit_run(run_dir: Path | str) -> RunAudit:
    """Check every file of a run directory against what was recorded when it was written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StoreError(f"run directory {run_dir} does not exist; pass the directory `lth run` printed "
                         "(<out>/<name>-<hash>)")
    path = run_dir / "config.json"
    store = RunStore(run_dir)
    exists = path.exists() or path.is_symlink()
    if not exists and not store.has_results():
        raise StoreError(f"{run_dir} is not an lth run directory (no config.json)")
    audit = RunAudit(run_dir, None)
    fix = ("rerunning the same `lth run` command rewrites it when this directory's name is that "
           "configuration's <name>-<hash>; otherwise restore it from a copy")
    try:
        if not exists:
            raise StoreError("it is missing")
        audit.config = ExperimentConfig.from_dict(read_json(path))
    except (StoreError, ConfigError, ValueError, TypeError) as e:
        audit.config_problem = f"damaged ({e}); {fix}"
    else:
        named = f"{audit.config.name}-{config_hash(audit.config)}"
        if re.fullmatch(r".+-[0-9a-f]{10}", run_dir.name) and run_dir.name != named:
            audit.config_problem = (f"edited: it hashes to {named}, not to this directory's name; {fix}")
    store.checksums()
    audit.checksums_problem = store.checksums_problem
    for p in store.input_paths():
        rel = store.rel(p)
        problem = store.input_problem(p)
        if problem is None:
            audit.inputs_intact.append(rel)
        else:
            audit.inputs_damaged[rel] = problem
    for key in store.finished_units():
        problems = store.unit_problems(*key)
        if problems:
            audit.units_damaged[key] = problems
        else:
            audit.units_intact.append(key)
    cfg = audit.config
    if cfg is not None:
        done = set(audit.units_intact) | set(audit.units_damaged)
        audit.units_unfinished = [u.as_tuple() for u in all_units(cfg) if u.as_tuple() not in done]
    audit.summary_problem = _summary_problem(store, audit.units_intact)
    audit.redo = _redo(audit)
    return audit


def _summary_problem(store: RunStore, intact: list[Key]) -> str | None:
    path = store.path / "summary.json"
    if not path.exists():
        return None
    try:
        stored = read_json(path)
    except StoreError as e:
        return f"{e}"
    if stored != [store.record(*k).to_dict() for k in intact]:  # what write_summary would write
        return "does not match the intact units (stale or edited); a rerun rewrites it"
    return None


def _redo(audit: RunAudit) -> list[str]:
    cfg = audit.config
    user = cfg is not None and cfg.model.name == "user"
    out = []
    for rel in audit.inputs_damaged:
        name = rel.rsplit("/", 1)[-1]
        trial = rel.split("/")[0]
        if name == "theta0.pt":
            how = "draw it again from the trial's seed"
        elif name in ("rewind.pt", "rewind_optimizer.pt"):
            what = "theta_k" if name == "rewind.pt" else "its optimizer state at k"
            how = f"retrain the dense network of {trial.replace('_', ' ')}, which writes {what} again"
        else:
            how = "prune it again from the previous level's trained ticket"
        users = [k for k, ps in audit.units_damaged.items() if all(rel in p for p in ps)]
        keep = (f"; the {len(users)} unit(s) that started from it are kept if it comes out identical "
                "(on the same machine and device it does), else retrained" if users else "")
        out.append(f"recompute {rel} ({how}){keep}")
    input_only = {k for k, ps in audit.units_damaged.items()
                  if all(any(rel in p for rel in audit.inputs_damaged) for p in ps)}
    retrain = [k for k in audit.units_damaged if k not in input_only]
    out += [f"retrain {_label(k)}" for k in retrain]
    if audit.units_unfinished:
        out.append(f"train the {len(audit.units_unfinished)} unit(s) not yet trained")
    if audit.summary_problem or audit.units_damaged:
        out.append("rewrite summary.json from the intact units")
    if user and out:
        out.insert(0, "(this run was made by lth.find_tickets: call it again with the same model, data and "
                      "configuration; `lth run` cannot rebuild your model)")
    return out


def audit_json(audit: RunAudit) -> str:
    return json.dumps(audit.to_dict(), indent=2) + "\n"
