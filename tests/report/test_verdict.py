"""lth.report.verdict: the verdict of constructed runs whose answers are known by construction."""

from __future__ import annotations

import pytest

from lth.report import aggregate, verdict
from lth.store import UnitRecord


def rec(trial, level, branch, acc, it=100):
    return UnitRecord(trial, level, branch, 0.8 ** level, "ok", early_stop_iteration=it,
                      early_stop_test_accuracy=acc, early_stop_val_accuracy=acc, min_val_loss=0.1,
                      final_test_accuracy=acc, final_val_loss=0.2, final_iteration=1000, train_seconds=1.0)


def run(ticket, reinit=None, random_mask=None, dense=(0.97, 0.98), dense_it=(400, 600)):
    """Two trials per unit: dense accuracies ``dense``; per level, the pair of accuracies (and
    early-stop iterations) of each branch."""
    recs = [rec(t, 0, "ticket", a, i) for t, (a, i) in enumerate(zip(dense, dense_it))]
    for branch, levels in (("ticket", ticket), ("reinit", reinit or []), ("random_mask", random_mask or [])):
        for lv, (accs, its) in enumerate(levels, start=1):
            recs += [rec(t, lv, branch, a, i) for t, (a, i) in enumerate(zip(accs, its))]
    return aggregate(recs)


# The dense band is 97-98%. Tickets: level 1 97.5, level 2 97.0 (exactly the bar), level 3 96.5
# (below), level 4 97.2 (above again). reinit falls below at level 2; random_mask at level 1.
TICKET = [((0.975, 0.975), (200, 200)), ((0.97, 0.97), (150, 250)), ((0.96, 0.97), (300, 300)),
          ((0.972, 0.972), (100, 100))]
REINIT = [((0.975, 0.975), (500, 500)), ((0.90, 0.91), (800, 800)), ((0.85, 0.86), (900, 900)),
          ((0.80, 0.80), (400, 400))]
RANDOM = [((0.96, 0.96), (600, 600)), ((0.95, 0.95), (700, 700)), ((0.90, 0.90), (800, 800)),
          ((0.85, 0.85), (900, 900))]


def test_tickets_win_down_to_the_last_level_of_the_unbroken_run_of_matches():
    v = verdict(run(TICKET, REINIT, RANDOM), "r")
    assert v.found and v.bar == pytest.approx(97.0)
    assert v.match_down_to.level == 2  # 97.0 is at the bar: it matches
    assert v.first_miss.level == 3
    assert [r.level for r in v.later_matches] == [4]
    assert "winning tickets found down to 64% of weights (level 2)" in v.lines()[0]
    assert "at 51.2% it falls below (96.50%)" in v.lines()[0]


def test_controls_are_placed_where_they_first_fall_below_the_dense_band():
    v = verdict(run(TICKET, REINIT, RANDOM), "r")
    found = {c.branch: c.first_below.level for c in v.controls}
    assert found == {"random_mask": 1, "reinit": 2}
    text = v.text()
    assert "reinit falls below the dense band from 64% of weights (level 2: 90.50%)" in text
    assert "random_mask falls below the dense band from 80% of weights (level 1: 96.00%)" in text


def test_speedups_at_the_best_level_are_ratios_of_mean_early_stop_iterations():
    v = verdict(run(TICKET, REINIT, RANDOM), "r")
    assert v.best.level == 1  # 97.5% is the highest ticket accuracy
    assert v.speedup_vs_dense == pytest.approx(500 / 200)
    assert v.speedup_vs_reinit == pytest.approx(500 / 200)
    assert "speed-up: 2.50x the dense network's, 2.50x reinit's" in v.text()


def test_a_tolerance_widens_the_bar_by_that_many_points():
    v = verdict(run(TICKET, REINIT, RANDOM), "r", tolerance=0.6)
    assert v.bar == pytest.approx(96.4)
    assert v.first_miss is None and v.match_down_to.level == 4
    assert "less a tolerance of 0.6 points" in v.lines()[0]
    assert {c.branch: c.first_below.level for c in v.controls} == {"random_mask": 1, "reinit": 2}


def test_no_ticket_when_the_first_pruned_level_is_already_below_the_band():
    v = verdict(run([((0.96, 0.965), (100, 100))]), "r")
    assert not v.found and v.first_miss.level == 1
    assert v.lines()[0].startswith("r: no winning ticket: already at 80% of weights (level 1)")


def test_a_control_that_never_falls_below_says_so():
    v = verdict(run(TICKET[:1], REINIT[:1]), "r")
    assert v.controls[0].first_below is None
    assert "reinit stays at or above the dense band at all 1 levels measured" in v.text()


def test_one_dense_trial_makes_the_band_a_point():
    recs = [rec(0, 0, "ticket", 0.95), rec(0, 1, "ticket", 0.9499), rec(0, 2, "ticket", 0.96)]
    v = verdict(aggregate(recs), "r")
    assert not v.found and v.dense.n == 1
    assert "(95.00%)" in v.lines()[0]


def test_a_missing_level_stops_the_run_of_matches_and_is_named():
    recs = [rec(0, 0, "ticket", 0.95), rec(0, 1, "ticket", 0.96), rec(0, 3, "ticket", 0.96)]
    v = verdict(aggregate(recs), "r")
    assert v.match_down_to.level == 1 and v.first_miss is None
    assert any("ticket levels 2 have not finished" in n for n in v.notes)


def test_without_a_dense_network_there_is_no_verdict():
    with pytest.raises(ValueError, match="dense network"):
        verdict(aggregate([rec(0, 1, "ticket", 0.9)]), "r")
    with pytest.raises(ValueError, match="tolerance"):
        verdict(run(TICKET), "r", tolerance=-1)


def test_no_pruned_level_yet_is_said_plainly():
    v = verdict(aggregate([rec(0, 0, "ticket", 0.9)]), "r")
    assert v.pruned_levels == 0 and "no pruned level has finished yet" in v.text()


def test_a_mean_equal_to_the_bar_as_fractions_is_at_it_despite_float_rounding():
    # 353/360 is the dense minimum; the ticket's and reinit's means are (352 + 354) / 2 / 360
    dense = [rec(0, 0, "ticket", 353 / 360), rec(1, 0, "ticket", 355 / 360)]
    pair = [(352 / 360, 354 / 360)]
    recs = dense + [rec(t, 1, b, a) for b in ("ticket", "reinit") for t, a in enumerate(pair[0])]
    rows = aggregate(recs)
    ticket = next(r for r in rows if r.branch == "ticket" and r.level == 1)
    assert ticket.early_stop_test_accuracy.mean != rows[0].early_stop_test_accuracy.lo  # rounding differs
    v = verdict(rows, "r")
    assert v.found and v.controls[0].first_below is None


def test_early_stops_at_the_last_evaluation_are_flagged_as_saying_nothing_about_speed():
    recs = [rec(t, lv, b, 0.95, it=1000) for t in range(2) for lv in (0, 1) for b in ("ticket", "reinit")
            if lv or b == "ticket"]
    v = verdict(aggregate(recs), "r")
    assert v.speedup_vs_dense == 1.0
    assert any("too short for the early-stop iteration to measure speed" in n for n in v.notes)
    assert not verdict(run(TICKET, REINIT), "r").notes  # early stops before the end: no such note


def test_a_run_still_training_says_which_levels_are_to_come():
    rows = run(TICKET[:2])
    assert "(levels 3-8 of the run have not finished)" in verdict(rows, "r", planned_levels=8).lines()[0]
    assert "(level 3 of the run has not finished)" in verdict(rows, "r", planned_levels=3).lines()[0]
    assert "(every pruned level measured)" in verdict(rows, "r", planned_levels=2).lines()[0]
    assert "(every pruned level measured)" in verdict(rows, "r").lines()[0]
