"""lth.experiment.progress: progress lines, ETA and the count of work left."""

from __future__ import annotations

import pytest

from lth.config import ExperimentConfig, get_preset
from lth.experiment import UnitKey, all_units
from lth.experiment.progress import Progress, fmt_seconds
from lth.training import EvalPoint


@pytest.mark.parametrize("s, text", [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"),
                                     (7384, "2h03m")])
def test_fmt_seconds(s, text):
    assert fmt_seconds(s) == text


def _cfg(**lottery):
    d = get_preset("digits-quick").to_dict()
    d["lottery"].update(levels=2, trials=2, branches=("ticket", "reinit"), **lottery)
    d["train"].update(iterations=1000)
    return ExperimentConfig.from_dict(d)


def test_iterations_left_count_only_unfinished_units_and_rewinding_shortens_pruned_ones():
    cfg = _cfg()
    units = all_units(cfg)
    assert len(units) == 2 * (1 + 2 * 2)
    done = {UnitKey(0, 0, "ticket"), UnitKey(0, 1, "reinit")}
    p = Progress(cfg, units, lambda u: u in done)
    assert (p.finished_units, p.todo_iters) == (2, 8 * 1000)
    rewound = Progress(_cfg(rewind_iteration=200), units, lambda u: False)
    assert rewound.todo_iters == 2 * 1000 + 8 * 800  # pruned levels train from iteration 200


def test_eta_scales_the_elapsed_time_by_the_work_left(monkeypatch):
    cfg = _cfg()
    p = Progress(cfg, all_units(cfg), lambda u: False)
    assert p.eta(0) == "?"
    monkeypatch.setattr(p, "t0", p.t0 - 100.0)  # 100 s spent on the first 1,000 of 10,000 iterations
    assert p.eta(1000) in ("15m00s", "15m01s")


def test_eval_line_shows_ranges_over_the_units_and_how_many_were_tested():
    cfg = _cfg()
    p = Progress(cfg, all_units(cfg), lambda u: False)
    pts = [EvalPoint(500, 0.3, 0.25, 0.9, 0.3, 0.88, 1e-3), EvalPoint(500, 0.3, 0.35, 0.8, None, None, 1e-3)]
    line = p.eval_line("[level 1/2, 2 units at once]", pts, 0, 2)
    assert "it    500/1000" in line and "val_loss 0.2500-0.3500" in line and "val_acc 80.00-90.00%" in line
    assert "test_acc 88.00% (1/2 units tested)" in line
    assert "test_acc" not in p.eval_line("[x]", [pts[1]], 0, 1)
    assert p.unit_label(UnitKey(1, 2, "reinit"), 0.6471) == "[trial 2/2 level 2/2 reinit       64.71% weights]"
