"""lth.report.bundle: the report's files from run directories made in the test, and report.html
in a real headless browser."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest

from lth.config import ExperimentConfig
from lth.report import aggregate, load_run, write_report
from lth.report.bundle import UNIT_COLUMNS
from lth.store import RunStore, UnitRecord

from ..helpers import write_finished_unit
from .browser import chromium, load_page

pytest.importorskip("matplotlib")

FIGURES = ("early_stop_accuracy", "final_accuracy", "early_stop_iteration")


def rec(trial, level, branch, acc, it=100, seconds=2.5):
    return UnitRecord(trial, level, branch, 0.8 ** level, "ok", early_stop_iteration=it,
                      early_stop_test_accuracy=acc, early_stop_val_accuracy=acc, min_val_loss=0.1,
                      final_test_accuracy=acc - 0.01, final_val_loss=0.2, final_iteration=1000,
                      train_seconds=seconds, machine="Test CPU, 2 logical CPUs",
                      software="lth 0.1.0, torch 2.13.0+cpu, Python 3.11.7, Linux")


def make_run(path: Path, name: str = "t", shift: float = 0.0) -> Path:
    store = RunStore.open(ExperimentConfig(name=name), run_dir=path, lock=False)
    for t in range(2):
        write_finished_unit(store, rec(t, 0, "ticket", 0.95 + 0.01 * t + shift, 500))
        for lv in (1, 2, 3):
            write_finished_unit(store, rec(t, lv, "ticket", 0.96 - 0.01 * lv + shift, 300 + 10 * t, seconds=1.5))
            write_finished_unit(store, rec(t, lv, "reinit", 0.94 - 0.02 * lv + shift, 600))
    return store.path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from .test_instability import result, write_results

    tmp = tmp_path_factory.mktemp("bundle")
    run_dir = make_run(tmp / "run")
    write_results(run_dir, [result(0, 0, 3.0), result(0, 100, 1.0)])  # as `lth instability` leaves them
    run = load_run(run_dir)
    return run, write_report([run], tmp / "out")


def test_every_figure_is_written_as_png_and_svg(report):
    run, files = report
    for stem in (*FIGURES, f"curves_{run.name}"):
        png, svg = files.out_dir / f"{stem}.png", files.out_dir / f"{stem}.svg"
        assert png_size(png) == ((1100, 400) if stem.startswith("curves") else (640, 420))
        assert svg.read_text().lstrip().startswith("<?xml") and "</svg>" in svg.read_text()
    stats = ("statistics_layers", "statistics_init", "statistics_overlap", "statistics_movement")
    assert sorted(files.figures) == sorted((*FIGURES, f"curves_{run.name}", "instability", *stats))
    for stem in stats:
        assert png_size(files.out_dir / f"{stem}.png")[0] > 300


def test_the_csv_table_holds_every_row_with_mean_min_and_max(report):
    run, files = report
    rows = list(csv.DictReader(io.StringIO((files.out_dir / "results.csv").read_text())))
    want = aggregate(run.records)
    assert [(int(r["level"]), r["branch"]) for r in rows] == [(r.level, r.branch) for r in want]
    for got, row in zip(rows, want):
        s = row.early_stop_test_accuracy
        assert float(got["early_stop_test_accuracy_mean"]) == pytest.approx(s.mean, rel=1e-5)
        assert float(got["early_stop_test_accuracy_min"]) == pytest.approx(s.lo, rel=1e-5)
        assert float(got["early_stop_test_accuracy_max"]) == pytest.approx(s.hi, rel=1e-5)
        assert int(got["trials"]) == row.trials == 2


def test_the_markdown_tables_and_the_verdict_are_written(report):
    _, files = report
    names = {p.name for p in files.tables}
    assert names == {"results.md", "results.csv", "units.md", "units.csv", "verdict.md", "verdict.json",
                     "statistics.json", *(f"statistics_{k}.csv" for k in ("layers", "init", "overlap", "movement")),
                     *(f"statistics_{k}.md" for k in ("init", "overlap", "movement")),
                     "instability.md", "instability.csv"}
    results = (files.out_dir / "results.md").read_text()
    assert results.startswith("| level | weights % | branch |") and results.count("\n") == 2 + 7
    # dense 95-96%; tickets 95, 94, 93%: the ticket matches at level 1 only
    verdict = (files.out_dir / "verdict.md").read_text()
    assert "winning tickets found down to 80% of weights (level 1)" in verdict
    assert "reinit falls below the dense band from 80% of weights" in verdict


def test_the_units_table_states_each_units_wall_time_machine_and_software(report):
    run, files = report
    units = list(csv.DictReader(io.StringIO((files.out_dir / "units.csv").read_text())))
    assert len(units) == len(run.records) == 14 and list(units[0]) == list(UNIT_COLUMNS)
    assert {u["train seconds"] for u in units} == {"2.5", "1.5"}
    assert {u["machine"] for u in units} == {"Test CPU, 2 logical CPUs"}
    assert {u["software"] for u in units} == {"lth 0.1.0, torch 2.13.0+cpu, Python 3.11.7, Linux"}


def test_report_html_is_one_self_contained_file(report):
    run, files = report
    page = files.html.read_text()
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(files.figures) == 9
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for words in ("winning tickets found down to 80% of weights", "Test CPU, 2 logical CPUs",
                  '"name": "t"', "lth 0.1.0, torch 2.13.0+cpu"):
        assert words in page, words


def test_several_runs_share_the_axes_with_one_legend_entry_per_run_and_branch(tmp_path):
    runs = [load_run(make_run(tmp_path / "a", "alpha")), load_run(make_run(tmp_path / "b", "beta", -0.02))]
    files = write_report(runs, tmp_path / "out")
    svg = (tmp_path / "out" / "early_stop_accuracy.svg").read_text()
    for label in ("alpha: ticket", "alpha: reinit", "beta: ticket", "beta: reinit"):
        assert label in svg, label
    assert len(files.verdicts) == 2
    assert {f"curves_{r.name}" for r in runs} <= set(files.figures)


def test_report_files_replace_the_previous_ones_without_temporaries(tmp_path):
    run = load_run(make_run(tmp_path / "run"))
    first = write_report([run], tmp_path / "out")
    again = write_report([run], tmp_path / "out")
    assert first.html == again.html
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert (tmp_path / "out" / "early_stop_accuracy.svg").read_bytes() == \
        (tmp_path / "out" / "early_stop_accuracy.svg").read_bytes()


def browser_or_skip() -> None:
    if chromium() is None:
        if os.environ.get("LTH_REQUIRE_BROWSER"):
            pytest.fail("LTH_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run installs it)")


def test_report_html_renders_in_a_real_browser_without_errors(report):
    browser_or_skip()
    run, files = report
    page = load_page(files.html)
    assert page.errors == []
    assert page.title == f"lth report: {run.name}"
    assert len(page.images) == len(files.figures) == 9
    sizes = {stem.replace("_", " "): png_size(next(p for p in paths if p.suffix == ".png"))
             for stem, paths in files.figures.items()}
    sizes[f"training curves of {run.name}"] = sizes.pop(f"curves {run.name}")
    for img in page.images:
        want = sizes[img["alt"]]
        assert img["complete"] and (img["naturalWidth"], img["naturalHeight"]) == want, img
        assert img["shownWidth"] > 0.5 * want[0] and img["shownHeight"] > 0.5 * want[1], img
        assert img["colours"] > 5, img  # drawn, not blank


def test_the_browser_check_sees_console_errors_and_broken_images(tmp_path):
    browser_or_skip()
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                   '<img alt="broken" src="data:image/png;base64,AAAA">'
                   '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    page = load_page(bad)
    assert any("boom" in e for e in page.errors) and any("undefinedFunction" in e for e in page.errors)
    assert page.images[0]["naturalWidth"] == 0 and page.images[0]["colours"] == 0


def test_a_report_checks_each_finished_units_files_once(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "run")
    checked: list[tuple] = []
    original = RunStore.unit_problems

    def counting(self, *key):
        checked.append(key)
        return original(self, *key)

    monkeypatch.setattr(RunStore, "unit_problems", counting)
    run = load_run(run_dir)
    files = write_report([run], tmp_path / "out")
    assert (files.out_dir / "report.html").exists() and (files.out_dir / "statistics.json").exists()
    assert sorted(checked) == sorted({(r.trial, r.level, r.branch) for r in run.records}) and len(run.records) == 14
