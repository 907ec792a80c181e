"""lth.experiment.progress: progress lines, ETA and the count of work left; the events a running
Lottery reports to its sink, in order, fresh and resumed."""

from __future__ import annotations

import pytest

from lth.config import ExperimentConfig, get_preset
from lth.experiment import Lottery, UnitKey, all_units
from lth.experiment.progress import PlainProgress, Progress, ProgressSink, Sinks, StartingUnit, fmt_seconds
from lth.store import RunStore, UnitRecord
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


# ---------------------------------------------------------------------- the sink interface
def _units_of(cfg):
    return [StartingUnit(UnitKey(0, 1, "ticket"), 0.8042, 0, False),
            StartingUnit(UnitKey(0, 1, "reinit"), 0.8042, 0, False)]


def test_plain_progress_writes_the_plain_lines_of_a_group(monkeypatch):
    """The default sink's lines, character for character (the lines `lth run` writes to a log)."""
    cfg = _cfg()
    lines: list[str] = []
    sink = PlainProgress(lines.append, min_interval=0.0)
    p = Progress(cfg, all_units(cfg), lambda u: False)
    sink.message("run directory x: 10 units")
    sink.run_started(p)
    first = EvalPoint(0, None, 2.3, 0.1, 2.3, 0.1, 1e-3)
    sink.units_started([StartingUnit(UnitKey(0, 0, "ticket"), 1.0, 300, True, (first,))])
    sink.units_started(_units_of(cfg))
    monkeypatch.setattr(p, "t0", p.t0 - 100.0)  # 100 s for 2 x 500 of the 10,000 iterations: 900 s left
    sink.evaluated(UnitKey(0, 1, "ticket"), EvalPoint(500, 0.3, 0.25, 0.9, 0.3, 0.88, 1e-3))
    assert len(lines) == 4, "one line per group evaluation, once every unit of the group has reported"
    sink.evaluated(UnitKey(0, 1, "reinit"), EvalPoint(500, 0.3, 0.35, 0.8, None, None, 1e-3))
    ok = UnitRecord(0, 1, "ticket", 0.8042, early_stop_iteration=400, early_stop_test_accuracy=0.9861,
                    final_test_accuracy=0.98, train_seconds=75.2)
    sink.unit_finished(UnitKey(0, 1, "ticket"), ok)
    sink.unit_finished(UnitKey(0, 1, "reinit"), UnitRecord(0, 1, "reinit", 0.8042, "failed",
                                                           error="validation loss became nan at iteration 500"))
    eta = lines[4][lines[4].index("| ETA "):]
    assert eta in ("| ETA 15m00s", "| ETA 15m01s")
    assert lines[:4] + [lines[4][:-len(eta)]] + lines[5:] == [
        "run directory x: 10 units",
        "[trial 1/2 level 0/2 ticket      100.00% weights] resuming from checkpoint at iteration 300",
        "[trial 1/2 level 1/2 ticket       80.42% weights] training from iteration 0",
        "[trial 1/2 level 1/2 reinit       80.42% weights] training from iteration 0",
        "[level 1/2, 2 units at once] it    500/1000 val_loss 0.2500-0.3500 val_acc 80.00-90.00% "
        "test_acc 88.00% (1/2 units tested) ",
        "[trial 1/2 level 1/2 ticket       80.42% weights] done: early stop at it 400, test acc there 98.61%, "
        "final 98.00% (1m15s)",
        "[trial 1/2 level 1/2 reinit       80.42% weights] FAILED: validation loss became nan at iteration 500; "
        "recorded as failed, other units continue",
    ]


def test_plain_progress_throttles_evaluation_lines():
    cfg = _cfg()
    lines: list[str] = []
    sink = PlainProgress(lines.append)  # at most one line per 15 s
    sink.run_started(Progress(cfg, all_units(cfg), lambda u: False))
    sink.units_started(_units_of(cfg)[:1])
    for it in (0, 50, 100):
        sink.evaluated(UnitKey(0, 1, "ticket"), EvalPoint(it, None, 0.5, 0.9, 0.5, 0.9, 1e-3))
    assert [line.split("]")[1].split()[:2] for line in lines[1:]] == [["it", "0/1000"]]


class Recorder(ProgressSink):
    """Every event as (name, what), for checking order; ``crash_at`` raises Crash at that event."""

    def __init__(self, crash_at=None):
        self.events: list[tuple] = []
        self.crash_at = crash_at

    def _add(self, *event):
        self.events.append(event)
        if event == self.crash_at:
            raise Crash

    def run_started(self, progress):
        self.progress = progress
        self._add("run_started", progress.total_units, progress.finished_units, progress.todo_iters)

    def units_started(self, units):
        for u in units:
            self._add("units_started", u.key, u.iteration, u.resumed, tuple(q.iteration for q in u.history))

    def evaluated(self, key, point):
        self._add("evaluated", key, point.iteration)

    def unit_finished(self, key, record):
        self._add("unit_finished", key, record.status)

    def message(self, text):
        self._add("message", text.split(":")[0].split()[0])

    def run_finished(self, records):
        self._add("run_finished", len(records))


class Crash(Exception):
    pass


def _tiny():
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=40, eval_every=10)
    d["lottery"].update(levels=1, trials=1, branches=("ticket", "reinit"))
    d["runtime"].update(checkpoint_every=10)
    return ExperimentConfig.from_dict(d)


def test_the_lottery_reports_each_unit_from_start_to_finish_in_order(tmp_path, digits):
    cfg = _tiny()
    sink = Recorder()
    with RunStore.open(cfg, root=tmp_path) as store:
        records = Lottery(cfg, store, digits, progress=sink).run()
    dense, ticket, reinit = UnitKey(0, 0, "ticket"), UnitKey(0, 1, "ticket"), UnitKey(0, 1, "reinit")
    evals = lambda *keys: [("evaluated", k, it) for it in (0, 10, 20, 30, 40) for k in keys]
    assert sink.events == [
        ("message", "run"), ("run_started", 3, 0, 3 * 40),
        ("units_started", dense, 0, False, ()), *evals(dense), ("unit_finished", dense, "ok"),
        ("units_started", ticket, 0, False, ()), ("units_started", reinit, 0, False, ()),
        *evals(ticket, reinit), ("unit_finished", ticket, "ok"), ("unit_finished", reinit, "ok"),
        ("message", "finished"), ("run_finished", 3),
    ]
    assert sorted(r.key for r in records) == [(0, 0, "ticket"), (0, 1, "reinit"), (0, 1, "ticket")]


def test_a_resumed_unit_starts_with_its_recorded_evaluations_and_reports_only_new_ones(tmp_path, digits):
    cfg = _tiny()
    ticket, reinit = UnitKey(0, 1, "ticket"), UnitKey(0, 1, "reinit")
    # the level-1 group stops after its checkpoint at 20 (evaluation 30 comes before checkpoint 30)
    with RunStore.open(cfg, root=tmp_path) as store, pytest.raises(Crash):
        Lottery(cfg, store, digits, progress=Recorder(crash_at=("evaluated", reinit, 30))).run()
    sink = Recorder()
    with RunStore.open(cfg, root=tmp_path) as store:
        Lottery(cfg, store, digits, progress=sink).run()
    assert sink.events == [
        ("message", "run"), ("run_started", 3, 1, 2 * 40),
        ("units_started", ticket, 20, True, (0, 10, 20)), ("units_started", reinit, 20, True, (0, 10, 20)),
        ("evaluated", ticket, 30), ("evaluated", reinit, 30), ("evaluated", ticket, 40), ("evaluated", reinit, 40),
        ("unit_finished", ticket, "ok"), ("unit_finished", reinit, "ok"),
        ("message", "finished"), ("run_finished", 3),
    ]
    # iterations 0-20 were trained before: the work left, and the rate the ETA uses, are 20-40 of each
    assert sink.progress.todo_iters == sink.progress.done_iters == 2 * 20


def test_sinks_sends_every_event_to_each_sink_and_closes_all_when_one_fails():
    a, b = Recorder(), Recorder()
    closed = []

    class Failing(ProgressSink):
        def close(self):
            closed.append("failing")
            raise OSError("disk full")

    class Closing(ProgressSink):
        def close(self):
            closed.append("closing")

    both = Sinks(a, b)
    both.message("hello there")
    both.evaluated(UnitKey(0, 0, "ticket"), EvalPoint(5, None, 1.0, 0.5, None, None, 1e-3))
    assert a.events == b.events == [("message", "hello"), ("evaluated", UnitKey(0, 0, "ticket"), 5)]
    with pytest.raises(OSError, match="disk full"):
        Sinks(Failing(), Closing()).close()
    assert closed == ["failing", "closing"]
