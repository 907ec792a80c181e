"""What a report reads from one run directory: its configuration, its intact units' records and
evaluations, aggregated rows. Read-only over the store; damaged units are left out (with the
warning :func:`lth.report.tables.load_records` gives)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import RunStore, StoreError, UnitRecord
from .tables import ReportError, Row, aggregate, load_records

Key = tuple[int, int, str]


@dataclass(frozen=True)
class RunData:
    """One run directory as a report sees it."""

    path: Path
    name: str  # the directory's name, <config name>-<hash>
    config: dict[str, Any]  # config.json as written by the run
    records: list[UnitRecord]  # intact finished units
    rows: list[Row]  # aggregated over trials
    curves: dict[Key, list[dict[str, Any]]]  # (trial, level, branch) -> evaluations (metrics.jsonl)

    @property
    def planned_levels(self) -> int | None:
        """The configured number of pruning levels (``lottery.levels``), if the config says."""
        levels = self.config.get("lottery", {}).get("levels")
        return levels if isinstance(levels, int) else None

    @property
    def label(self) -> str:
        """A short name for legends: the configuration's name."""
        return str(self.config.get("name") or self.name)


def load_run(run_dir: Path) -> RunData:
    """A run directory's records, rows and curves; a :class:`ReportError` if it is not a run
    directory or has no finished unit."""
    run_dir = Path(run_dir)
    records = load_records(run_dir)
    store = RunStore(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{run_dir / 'config.json'} cannot be read ({type(e).__name__}); rerun the same "
                          "`lth run` command to rewrite it") from None
    curves: dict[Key, list[dict[str, Any]]] = {}
    for r in records:
        if not r.ok:
            continue
        try:
            curves[r.key] = store.load_metrics(*r.key)
        except StoreError:  # damaged since it was checked: the unit's curve is left out
            continue
    return RunData(run_dir, run_dir.resolve().name, config, records, aggregate(records), curves)
