"""lth.report.figures: the paper's figure from a run directory."""

from __future__ import annotations

import pytest

from lth.config import ExperimentConfig
from lth.report import ReportError, plot
from lth.store import RunStore
from tests.report.test_tables import RECORDS


def test_plot_writes_a_png_of_the_expected_size(tmp_path):
    pytest.importorskip("matplotlib")
    store = RunStore.open(ExperimentConfig(name="t"), run_dir=tmp_path / "run", lock=False)
    for r in RECORDS:
        store.finish_unit(r)
    out = plot(store.path, tmp_path / "fig" / "f.png", title="t")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1320, 480)  # 11 x 4 inches at 120 dpi


def test_plot_of_a_directory_without_results_is_a_report_error(tmp_path):
    with pytest.raises(ReportError):
        plot(tmp_path, tmp_path / "f.png")
