"""lth.report.figures: the paper's figure from a run directory, and every --out that cannot be
written refused in one line before the run is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lth.cli import main
from lth.config import ExperimentConfig
from lth.report import ReportError, plot
from lth.store import RunStore
from tests.report.test_tables import RECORDS

from ..helpers import unwritable_folder, write_finished_unit

pytest.importorskip("matplotlib")


def make_run(run_dir: Path) -> Path:
    store = RunStore.open(ExperimentConfig(name="t"), run_dir=run_dir, lock=False)
    for r in RECORDS:
        write_finished_unit(store, r)
    return store.path


def test_plot_writes_a_png_of_the_expected_size(tmp_path):
    out = plot(make_run(tmp_path / "run"), tmp_path / "fig" / "f.png", title="t")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1320, 480)  # 11 x 4 inches at 120 dpi


def test_plot_of_a_directory_without_results_is_a_report_error(tmp_path):
    with pytest.raises(ReportError):
        plot(tmp_path, tmp_path / "f.png")


def test_the_suffix_picks_the_format_in_any_case_and_missing_folders_are_created(tmp_path):
    run = make_run(tmp_path / "run")
    magic = {"f.PDF": b"%PDF", "f.svg": b"<?xml", "f.eps": b"%!PS"}
    for name, start in magic.items():
        out = plot(run, tmp_path / "new" / "deeper" / name)
        assert out.read_bytes().startswith(start), name
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == sorted(magic)  # no temporaries


@pytest.mark.parametrize("name, words", [
    ("fig.xyz", "has the suffix .xyz, which matplotlib cannot write; end the name with .png, .pdf or .svg "
                "(or one of .avif, "),
    ("fig", "has no suffix; end the name with .png, .pdf or .svg (or one of "),
])
def test_a_suffix_matplotlib_cannot_write_is_refused_before_the_run_is_read(tmp_path, name, words):
    with pytest.raises(ReportError) as e:
        plot(tmp_path / "no-such-run", tmp_path / name)
    assert str(e.value).startswith(f"--out {tmp_path / name} {words}")
    assert ".eps" in str(e.value) and "\n" not in str(e.value)


def test_out_inside_a_file_or_on_a_folder_is_refused_before_the_run_is_read(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile / "fig.png", afile / "sub" / "fig.png"):
        with pytest.raises(ReportError) as e:
            plot(tmp_path / "no-such-run", out)
        assert str(e.value) == f"{afile} is a file, not a folder; choose another --out"
    assert afile.read_text() == "mine"
    with pytest.raises(ReportError, match=f"^--out {tmp_path} is a folder; give a file name, e.g. "):
        plot(tmp_path / "no-such-run", tmp_path)


def test_an_unwritable_out_is_a_report_error_naming_it(tmp_path):
    run = make_run(tmp_path / "run")
    folder = unwritable_folder(tmp_path)
    for out in (folder / "fig.png", folder / "new" / "fig.png"):
        with pytest.raises(ReportError, match=r"^cannot write .*fig\.png \(.+\); make its folder writable, or "
                                              r"choose another --out$"):
            plot(run, out)
        assert not out.exists()


def test_lth_plot_errors_are_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (tmp_path / "afile").write_text("")
    for out in ("fig.xyz", "afile/fig.png"):
        assert main(["plot", str(run), "--out", str(tmp_path / out)]) != 0
        err = capsys.readouterr().err
        assert err.startswith("lth: error: --out") or err.startswith(f"lth: error: {tmp_path / 'afile'} is a file")
        assert err.count("\n") == 1


def test_lth_plot_of_a_run_directory_named_in_bytes_that_are_not_utf8(tmp_path, capsys):
    """The name shows its stray byte as an escape in the title and the printed path; $..$ in it is
    not read as math."""
    run = make_run(Path(os.fsdecode(bytes(tmp_path) + b"/run-$\\frac$-\xff")))
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out == f"{tmp_path}/run-$\\frac$-\\xff/figure.png\n"
    assert (run / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_title_matplotlib_cannot_draw_is_one_line_and_writes_nothing(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(ReportError) as e:
        plot(run, tmp_path / "f.png", title=r"acc $\frac$")
    assert str(e.value).startswith("matplotlib cannot draw the figure as .png (ParseSyntaxException: ")
    assert str(e.value).endswith("; write the $...$ of --title as matplotlib math, or leave out the $ signs")
    assert "\n" not in str(e.value) and list(tmp_path.glob("*f.png*")) == []


def test_without_matplotlib_every_figure_entry_is_one_report_error_naming_the_install(tmp_path, monkeypatch):
    import sys

    from lth.report.figures import save_figure
    from lth.report.paper import _pyplot

    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, mod, None)  # import matplotlib now raises ImportError
    with pytest.raises(ReportError, match=r"^figures need matplotlib: pip install 'lth\[plot\]'$"):
        plot(make_run(tmp_path / "run"), tmp_path / "f.png")
    with pytest.raises(ReportError, match=r"pip install 'lth\[plot\]' \(or lth report --no-figures\)$"):
        _pyplot()
    with pytest.raises(ReportError, match="figures need matplotlib"):
        save_figure(object(), tmp_path / "f", ("png",))
    assert not list(tmp_path.glob("f*"))


# ------------------------------------------------------------- the training curves' accuracy axis


def test_the_accuracy_axis_zooms_past_the_untrained_network():
    from lth.report.paper import accuracy_limits

    # iteration 0 at 10%, then 96-98.5%: the axis starts just below the trained range
    curves = [([0, 100, 1000, 5000, 50000], [10.0, 90.0, 96.0, 98.0, 98.2]),
              ([0, 1000, 50000], [11.0, 97.0, 98.5])]
    lo, hi = accuracy_limits(curves, after=0.02)  # from iteration 1,000 on
    span = 98.5 - 96.0
    assert lo == pytest.approx(96.0 - 0.05 * span) and hi == pytest.approx(98.5 + 0.05 * span)
    assert accuracy_limits(curves, after=0.0)[0] == pytest.approx(10.0 - 0.05 * 88.5)


def test_the_accuracy_axis_keeps_a_margin_for_flat_curves_and_leaves_empty_ones_to_matplotlib():
    from lth.report.paper import accuracy_limits

    assert accuracy_limits([([0, 100], [97.0, 97.0])], after=0.5) == pytest.approx((96.9, 97.1))
    assert accuracy_limits([([], [])]) is None
