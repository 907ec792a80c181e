"""``lth report`` as a user runs it: the table and verdict printed, the report files written, and
bad input refused in one line."""

from __future__ import annotations

import json

import pytest

from lth.cli import main
from tests.report.test_bundle import FIGURES, make_run, png_size

pytest.importorskip("matplotlib")


def lth(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_report_prints_the_table_and_verdict_and_writes_the_report_into_the_run_directory(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    code, out, err = lth(capsys, "report", str(run))
    assert code == 0, err
    assert out.splitlines()[0].split()[:3] == ["level", "weights", "%"]
    assert "run: winning tickets found down to 80% of weights (level 1)" in out
    assert out.splitlines()[-1] == f"report: {run / 'report' / 'report.html'}" and err == ""
    for stem in FIGURES:
        assert png_size(run / "report" / f"{stem}.png") == (640, 420)
        assert (run / "report" / f"{stem}.svg").exists()
    code, out, err = lth(capsys, "verify", str(run))
    assert code == 0, out + err  # the report folder is not the run's business


def test_json_output_stays_the_rows_alone(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    code, out, _ = lth(capsys, "report", str(run), "--format", "json", "--no-files")
    rows = json.loads(out)
    assert [(r["level"], r["branch"]) for r in rows][:3] == [(0, "dense"), (1, "ticket"), (1, "reinit")]
    assert not (run / "report").exists()


def test_several_run_directories_print_each_and_share_one_report(tmp_path, capsys):
    a, b = make_run(tmp_path / "a", "alpha"), make_run(tmp_path / "b", "beta", -0.02)
    code, out, err = lth(capsys, "report", str(a), str(b), "--out", str(tmp_path / "both"))
    assert code == 0, err
    assert "\na: winning tickets found" in out and "\nb: " in out
    assert (tmp_path / "both" / "report.html").exists() and not (a / "report").exists()


def test_the_tolerance_moves_the_verdict(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    _, out, _ = lth(capsys, "report", str(run), "--no-files", "--tolerance", "2.5")
    assert "winning tickets found down to 51.2% of weights (level 3)" in out
    assert "less a tolerance of 2.5 points" in out


def test_curve_levels_choose_the_curves_drawn(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    code, _, err = lth(capsys, "report", str(run), "--curve-levels", "0,3", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert png_size(tmp_path / "o" / f"curves_{run.name}.png") == (1100, 400)


@pytest.mark.parametrize("args, words, status", [
    (["--curve-levels", "0,7"], ["level(s) 7", "choose from 0, 1, 2, 3"], 6),
    (["--curve-levels", "a,b"], ["not a comma-separated list of levels"], 2),
    (["--tolerance", "-1"], ["percentage points >= 0"], 2),
    (["--tolerance", "nan"], ["percentage points >= 0"], 2),
    (["SECOND"], ["2 run directories: give --out DIR"], 6),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, words, status):
    run = make_run(tmp_path / "run")
    args = [str(run) if a == "SECOND" else a for a in args]
    code, _, err = lth(capsys, "report", str(run), *args)
    assert code == status and err.startswith("lth: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    code, _, err = lth(capsys, "report", str(tmp_path))
    assert code == 6 and err.count("\n") == 1 and "not an lth run directory" in err


def test_the_report_of_a_run_trained_in_the_test_holds_its_figures_tables_and_curves(tmp_path, capsys):
    code, out, err = lth(capsys, "run", "--preset", "digits-quick", "--trials", "2", "--levels", "2",
                         "--iterations", "120", "--eval-every", "20", "--threads", "1", "--out", str(tmp_path))
    assert code == 0, err
    run = next(tmp_path.glob("digits-quick-*"))
    tail = out[out.index("\nresults: "):].splitlines()[3:]  # lth run ends with the verdict
    assert tail[0].startswith(f"{run.name}: ") and "winning ticket" in tail[0]
    assert all(line.startswith("  ") for line in tail[1:]) and any("best ticket level" in t for t in tail)
    code, out, err = lth(capsys, "report", str(run))
    assert code == 0, err
    report = run / "report"
    assert png_size(report / f"curves_{run.name}.png") == (1100, 400)
    assert (report / "results.csv").read_text().count("\n") == 1 + 1 + 2 * 3  # header, dense, 2 levels x 3
    units = (report / "units.csv").read_text().splitlines()
    assert len(units) == 1 + 2 * 7 and all("logical CPUs" in u and "torch" in u for u in units[1:])
    page = (report / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 8 and "digits-quick" in page
    for stem in ("layers", "init", "overlap", "movement"):
        assert png_size(report / f"statistics_{stem}.png")[0] > 300
        assert (report / f"statistics_{stem}.csv").read_text().count("\n") > 1
    assert "Initial values of survivors and pruned weights" in page


def test_a_run_with_instability_results_gets_their_section_figure_tables_and_printed_lines(tmp_path, capsys):
    from tests.report.test_instability import result, write_results

    run = make_run(tmp_path / "run")
    write_results(run, [result(0, 0, 4.0), result(0, 100, 0.5), result(0, 500, 0.2)])
    assert main(["report", str(run), "--no-statistics"]) == 0
    out = capsys.readouterr().out
    assert ("instability (lth instability, test barrier below 2 points is stable):\n"
            "  the dense network: stable from k = 100 on, not below it (k = 0, 100, 500 measured)\n") in out
    folder = run / "report"
    assert "| 0 | 0 | 100.00 | 100 | 0.00 | 0.50 | 90.00 |" in (folder / "instability.md").read_text()
    assert (folder / "instability.csv").read_text().count("\n") == 4
    assert png_size(folder / "instability.png") == (780, 480)  # 6.5 x 4 inches at 120 dpi
    page = (folder / "report.html").read_text()
    assert "<h2>Instability (linear mode connectivity)</h2>" in page and "stable from k = 100 on" in page
    assert page.index("Instability (linear") < page.index("<h2>Configuration</h2>")


def test_a_run_without_instability_results_has_no_instability_section(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--no-statistics", "--no-figures"]) == 0
    assert "instability (lth instability" not in capsys.readouterr().out
    assert "Instability" not in (run / "report" / "report.html").read_text()
    assert not (run / "report" / "instability.md").exists()


def test_without_matplotlib_the_report_is_one_line_naming_no_figures_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import sys

    from tests.report.test_instability import result, write_results

    run = make_run(tmp_path / "run")
    write_results(run, [result(0, 0, 1.0)])
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, mod, None)  # import matplotlib now raises ImportError
    from lth.cli import EXIT_REPORT

    assert main(["report", str(run)]) == EXIT_REPORT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lth: error: figures need matplotlib: pip install 'lth[plot]' (or lth report --no-figures)"]
    assert not (run / "report").exists()
    assert main(["report", str(run), "--no-figures"]) == 0
    assert (run / "report" / "instability.md").exists() and not (run / "report" / "instability.png").exists()
