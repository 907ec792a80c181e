"""lth.report.tables: records -> rows (mean, min, max over trials) -> text, markdown, JSON."""

from __future__ import annotations

import json

import pytest

from lth.config import ExperimentConfig
from lth.report import ReportError, aggregate, load_records, markdown_table, report, text_table
from lth.store import RunStore, UnitRecord

from ..helpers import write_finished_unit


def rec(trial, level, branch, acc, it=100, final=None, status="ok", w=None):
    if status != "ok":
        return UnitRecord(trial, level, branch, w or 0.8 ** level, "failed", error="loss became nan")
    return UnitRecord(trial, level, branch, w or 0.8 ** level, "ok", early_stop_iteration=it,
                      early_stop_test_accuracy=acc, early_stop_val_accuracy=acc, min_val_loss=0.1,
                      final_test_accuracy=acc if final is None else final, final_val_loss=0.2,
                      final_iteration=1000, train_seconds=1.0)


RECORDS = [
    rec(0, 0, "ticket", 0.90, 300), rec(1, 0, "ticket", 0.94, 500),
    rec(0, 1, "random_mask", 0.80, 900), rec(1, 1, "random_mask", 0.70, 700),
    rec(0, 1, "reinit", 0.85), rec(1, 1, "reinit", 0.0, status="failed"),
    rec(0, 1, "ticket", 0.96, 200), rec(1, 1, "ticket", 0.98, 400),
]


def test_rows_hold_mean_min_max_over_ok_trials_and_count_failures():
    rows = {(r.level, r.branch): r for r in aggregate(RECORDS)}
    dense = rows[(0, "dense")]
    assert dense.early_stop_test_accuracy.mean == pytest.approx(92.0)
    acc = dense.early_stop_test_accuracy
    assert (acc.lo, acc.hi) == (pytest.approx(90), pytest.approx(94))
    assert (dense.early_stop_iteration.mean, dense.early_stop_iteration.n) == (400.0, 2)
    reinit = rows[(1, "reinit")]
    assert (reinit.trials, reinit.failed, reinit.early_stop_test_accuracy.mean) == (1, 1, pytest.approx(85))
    rm = rows[(1, "random_mask")].early_stop_iteration
    assert (rm.mean, rm.lo, rm.hi) == (800.0, 700.0, 900.0)


def test_rows_come_in_level_order_then_registry_order_of_branches():
    order = [(r.level, r.branch) for r in aggregate(RECORDS)]
    assert order == [(0, "dense"), (1, "ticket"), (1, "reinit"), (1, "random_mask")]


def test_a_group_with_only_failed_units_has_no_row():
    rows = aggregate([rec(0, 0, "ticket", 0.9), rec(0, 1, "reinit", 0, status="failed")])
    assert [(r.level, r.branch) for r in rows] == [(0, "dense")]


def test_dicts_and_records_aggregate_alike():
    assert aggregate([r.to_dict() for r in RECORDS]) == aggregate(RECORDS)


def test_text_and_markdown_tables_show_mean_and_range():
    rows = aggregate(RECORDS)
    md = markdown_table(rows)
    assert md.splitlines()[0].startswith("| level | weights % | branch |")
    assert "| 1 | 80.00 | ticket | 300 [200, 400] | 97.00 [96.00, 98.00] |" in md
    text = text_table(rows)
    assert "1 (+1 failed)" in text and len(text.splitlines()) == 2 + len(rows)


def _run_dir(tmp_path, records):
    store = RunStore.open(ExperimentConfig(name="t"), run_dir=tmp_path / "run", lock=False)
    for r in records:
        write_finished_unit(store, r)
    return store.path


def test_load_records_reads_the_units_not_a_stale_summary(tmp_path):
    path = _run_dir(tmp_path, RECORDS)
    assert len(load_records(path)) == len(RECORDS)
    (path / "trial_1/level_1/ticket/result.json").unlink()
    assert len(load_records(path)) == len(RECORDS) - 1  # summary.json still lists it: not used
    assert len(json.loads((path / "summary.json").read_text())) == len(RECORDS)


def test_report_formats(tmp_path):
    path = _run_dir(tmp_path, RECORDS)
    assert report(path, "markdown") == markdown_table(aggregate(RECORDS))
    rows = json.loads(report(path, "json"))
    assert rows[0]["branch"] == "dense" and rows[0]["early_stop_test_accuracy"]["mean"] == pytest.approx(92.0)


def test_not_a_run_directory_or_an_empty_one_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="not an lth run directory"):
        load_records(tmp_path)
    empty = _run_dir(tmp_path, [])
    with pytest.raises(ReportError, match="no finished unit"):
        load_records(empty)
