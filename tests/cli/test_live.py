"""lth.cli.live and how `lth run` chooses its display: a live rich display on a terminal (a real
pseudo-terminal here), plain lines into a pipe, nothing but the table with --quiet."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from lth.cli.live import LiveProgress
from lth.cli.run import progress_display
from lth.config import ExperimentConfig, get_preset
from lth.experiment import PlainProgress, Progress, ProgressSink, StartingUnit, UnitKey, all_units
from lth.report import aggregate, text_table, verdict
from lth.store import UnitRecord
from lth.training import EvalPoint

ARGS = ["run", "--preset", "digits-quick", "--levels", "1", "--trials", "1", "--iterations", "40",
        "--eval-every", "10"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(**extra: str) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    e.pop("LTH_FAULT", None)
    return e


def final_output(run_dir: Path) -> str:
    """What `lth run` prints last: the results table, where the summary is, and the verdict."""
    records = [UnitRecord.from_dict(r) for r in json.loads((run_dir / "summary.json").read_text())]
    rows = aggregate(records)
    levels = json.loads((run_dir / "config.json").read_text())["lottery"]["levels"]
    return (text_table(rows) + f"\nresults: {run_dir / 'summary.json'} (figures and report.html: lth report "
            f"{run_dir})\n\n" + verdict(rows, run_dir.name, planned_levels=levels).text())


class Terminal:
    """`lth` with its standard output a pseudo-terminal 120 columns wide (stderr a pipe)."""

    def __init__(self, args: list[str], cwd: Path):
        self.fd, child_fd = os.openpty()
        env = _env(COLUMNS="120", LINES="40", TERM="xterm")
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "lth", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=child_fd, stderr=subprocess.PIPE, env=env,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(child_fd)
        self.out = bytearray()

    def read(self, until=lambda text: False, timeout: float = 300) -> str:
        """What the terminal has shown, read until ``until(text)`` or the program closes it."""
        deadline = time.time() + timeout
        while time.time() < deadline and not until(self.text):
            ready, _, _ = select.select([self.fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the program has closed the terminal
                break
            if not chunk:
                break
            self.out += chunk
        return self.text

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def finish(self) -> tuple[int, str, str]:
        """(status, all the terminal showed, stderr) once the program has ended."""
        try:
            self.read()
            err = self.proc.stderr.read().decode()
            self.proc.wait(timeout=60)
        finally:
            self.proc.kill()
            os.close(self.fd)
        return self.proc.returncode, self.text, err


def test_on_a_terminal_run_shows_a_live_display_then_the_table(tmp_path):
    code, out, err = Terminal([*ARGS, "--out", str(tmp_path / "runs")], cwd=tmp_path).finish()
    assert code == 0, err
    assert err == ""
    assert "\x1b[" in out, "a live display redraws lines with escape sequences"
    text = ANSI.sub("", out).replace("\r", "")
    assert "units 0/4" in text and "units 4/4" in text and "ETA" in text and "elapsed" in text
    assert "it     40/40 val_loss" in text  # a unit's own line: its iteration and metrics
    # each unit's result stays above the display; the throttled plain progress lines are not there
    assert text.count("] done: early stop at it") == 4 and "training from iteration" not in text
    run_dir = next((tmp_path / "runs").iterdir())
    assert text.endswith("\n\n" + final_output(run_dir)), text[-600:]


def test_ctrl_c_ends_the_display_then_says_so_in_one_line(tmp_path):
    long = [a if a != "40" else "100000" for a in ARGS]  # still training when interrupted
    term = Terminal([*long, "--out", str(tmp_path)], cwd=tmp_path)
    term.read(until=lambda text: "it " in ANSI.sub("", text) and "val_loss" in text)
    term.proc.send_signal(signal.SIGINT)
    code, out, err = term.finish()
    assert code == -signal.SIGINT, err  # ended by the signal itself, as without the display
    assert err.strip().splitlines() == ["lth: interrupted; rerun the same command to continue"], err
    assert out.rstrip().endswith("\x1b[?25h"), "the display gave the terminal its cursor back"


def test_into_a_pipe_run_writes_the_plain_lines(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lth", *ARGS, "--out", str(tmp_path / "runs")], cwd=tmp_path,
                       capture_output=True, text=True, env=_env(TERM="xterm"), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and r.stderr == ""
    run_dir = next((tmp_path / "runs").iterdir())
    lines = r.stdout.splitlines()
    dense, *level1 = [re.escape(f"[trial 1/1 level {lv} {b:<11} {w}% weights]") for lv, b, w in [
        ("0/1", "ticket", "100.00"), ("1/1", "ticket", " 80.42"), ("1/1", "reinit", " 80.42"),
        ("1/1", "random_mask", " 80.42")]]
    done = r" done: early stop at it \d+, test acc there \d+\.\d\d%, final \d+\.\d\d% \(\ds\)"
    patterns = [
        r"data digits: 1137 train / 300 validation / 360 test; model mlp-100-50; device cpu",
        rf"run directory {re.escape(str(run_dir))}: 4 units \(1 trials x \(1 dense \+ 1 levels x 3 branches\)\), "
        r"0 already finished, 4 to train; up to 3 units at once",
        rf"{dense} training from iteration 0",
        rf"{dense} it      0/40 val_loss \d\.\d{{4}} val_acc [ \d]\d\.\d\d% test_acc [ \d]\d\.\d\d% \| ETA \?",
        dense + done,
        *[rf"{label} training from iteration 0" for label in level1],
        *[label + done for label in level1],
        rf"finished in \d+s; summary: {re.escape(str(run_dir / 'summary.json'))}",
    ]
    assert len(lines) >= len(patterns) and all(re.fullmatch(p, line) for p, line in zip(patterns, lines)), lines
    assert r.stdout.endswith("\n".join(lines[:len(patterns)]) + "\n\n" + final_output(run_dir))


def test_quiet_prints_the_table_and_nothing_else(tmp_path, capsys):
    from lth.cli import main

    assert main([*ARGS, "--out", str(tmp_path), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == final_output(next(tmp_path.iterdir())) and err == ""


def test_quiet_keeps_errors_as_one_line_on_stderr(tmp_path, capsys, monkeypatch):
    from lth.cli import main

    for name in [m for m in sys.modules if m == "torch.utils.tensorboard" or m.startswith("torch.utils.tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the package were not installed
    assert main([*ARGS, "--out", str(tmp_path), "--quiet", "--tensorboard"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "lth: error: --tensorboard needs the tensorboard package: pip install 'lth[tensorboard]'\n"
    assert not any(tmp_path.iterdir()), "refused before any work"


class _Stdout(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty, term, quiet, kind", [
    (True, "xterm", False, LiveProgress), (True, "dumb", False, PlainProgress), (False, "xterm", False, PlainProgress),
    (True, "xterm", True, ProgressSink), (False, "xterm", True, ProgressSink)])
def test_the_display_is_live_only_on_a_terminal_that_can_redraw(monkeypatch, tty, term, quiet, kind):
    monkeypatch.setattr(sys, "stdout", _Stdout(tty))
    monkeypatch.setenv("TERM", term)
    assert type(progress_display(quiet)) is kind


def _cfg() -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=1000)
    d["lottery"].update(levels=2, trials=1, branches=("ticket", "reinit"))
    return ExperimentConfig.from_dict(d)


def test_live_display_shows_the_run_and_each_training_unit(monkeypatch):
    cfg = _cfg()
    screen = io.StringIO()
    live = LiveProgress(Console(file=screen, force_terminal=True, width=150, color_system=None),
                        refresh_per_second=50)
    p = Progress(cfg, all_units(cfg), lambda u: u.level == 0)  # 4 units of 1,000 iterations left
    ticket, reinit = UnitKey(0, 1, "ticket"), UnitKey(0, 1, "reinit")
    live.message("run directory x")
    live.run_started(p)
    live.units_started([StartingUnit(ticket, 0.8, 300, True, (EvalPoint(0, None, 2.0, 0.1, 2.0, 0.1, 1e-3),)),
                        StartingUnit(reinit, 0.8, 300, True, ())])
    monkeypatch.setattr(p, "t0", p.t0 - 100.0)  # 100 s for the 2 x 200 iterations below: 3,600 left
    live.evaluated(ticket, EvalPoint(500, 0.2, 0.1234, 0.9512, 0.3, 0.9400, 1e-3))
    live.evaluated(reinit, EvalPoint(500, 0.2, 0.2345, 0.9012, None, None, 1e-3))
    assert live.overall_status() in ("1m40s elapsed | ETA 15m00s", "1m40s elapsed | ETA 15m01s")
    live.bars.refresh()
    shown = ANSI.sub("", screen.getvalue())
    assert "run directory x" in shown
    assert "[trial 1/1 level 1/2 ticket       80.00% weights] resuming from checkpoint at iteration 300" in shown
    assert "units 1/5" in shown and "trial 1/1 level 1/2 ticket       80.00% ━" in shown  # a row per unit
    assert "it    500/1000 val_loss 0.1234 val_acc 95.12% test_acc 94.00%" in shown
    rows = [row for row in re.split(r"[\r\n]", shown) if "reinit" in row and "500/1000" in row]
    assert rows and all("val_loss 0.2345 val_acc 90.12%" in r and "test_acc" not in r for r in rows)
    live.evaluated(ticket, EvalPoint(600, 0.2, 0.1300, 0.9500, None, None, 1e-3))  # test split not measured
    live.bars.refresh()
    assert "it    600/1000 val_loss 0.1300 val_acc 95.00% test_acc 94.00% (it 500)" in ANSI.sub("", screen.getvalue())
    p.done_iters += 2 * 700  # the driver counts a group's iterations once it has trained
    live.unit_finished(ticket, UnitRecord(0, 1, "ticket", 0.8, early_stop_iteration=500, early_stop_test_accuracy=0.94,
                                          final_test_accuracy=0.93, train_seconds=3.0))
    assert live.current_iters == 200  # the reinit unit's, still training (the ticket's 300 are done)
    mark = len(screen.getvalue())
    live.bars.refresh()
    now = ANSI.sub("", screen.getvalue()[mark:])
    assert "units 2/5" in now and "ticket" not in now and "trial 1/1 level 1/2 reinit       80.00% ━" in now
    assert "ticket       80.00% weights] done: early stop at it 500, test acc there 94.00%, final 93.00% (3s)" in (
        ANSI.sub("", screen.getvalue()))
    live.run_finished([])
    assert live.bars is None
    live.close()  # twice is harmless
