"""lth.cli.main's error contract: one `lth: error:` line and a status per kind of failure, a
traceback only for a bug, and signal handlers put back as they were."""

from __future__ import annotations

import signal

import pytest

from lth.cli import main
from lth.config import ConfigError, apply_overrides, get_preset
from lth.data import DataError
from lth.report import ReportError
from lth.store import DamagedFileError, StoreError
from lth.tickets import ExportError


@pytest.mark.parametrize("error, status", [
    (ConfigError("train.lr = -1: must be positive"), 2), (DataError("mnist is missing"), 3),
    (StoreError("run directory in use"), 4), (DamagedFileError("x/final.pt", "is missing", "rerun"), 4),
    (ExportError("no such unit"), 5), (ReportError("no finished unit"), 6), (MemoryError(), 7),
])
def test_each_kind_of_failure_is_one_line_with_its_own_status(monkeypatch, capsys, error, status):
    def fail(args):
        raise error

    monkeypatch.setattr("lth.cli.presets.run", fail)  # `lth presets` stands for any command
    assert main(["presets"]) == status
    out, err = capsys.readouterr()
    assert err.startswith("lth: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_bug_prints_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    monkeypatch.setattr("lth.cli.presets.run", lambda args: {}["missing"])
    assert main(["presets"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and err.rstrip().endswith(
        "please report it with the traceback above and the command you ran")


def test_usage_errors_are_one_line_with_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--levels", "many"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("lth: error: argument --levels: invalid int value: 'many' "
                                       "(see `lth run --help`)\n")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_inside_a_command_is_one_line_and_handlers_are_restored(monkeypatch, capsys, sig, status):
    # A test process started in the background by a shell ignores SIGINT; an interactive `lth`
    # has Python's own handler, which this test needs.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _signal_inside_a_command(monkeypatch, capsys, sig, status)
    finally:
        signal.signal(signal.SIGINT, outer)


def _signal_inside_a_command(monkeypatch, capsys, sig, status):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def interrupted(args):
        signal.raise_signal(sig)

    monkeypatch.setattr("lth.cli.presets.run", interrupted)
    assert main(["presets"]) == status
    assert capsys.readouterr().err == "\nlth: interrupted; rerun the same command to continue\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_set_parses_integers_exactly():
    cfg = apply_overrides(get_preset("digits-quick"), ["lottery.seed=9007199254740993", "train.iterations=1e3"])
    assert cfg.lottery.seed == 9007199254740993 and cfg.train.iterations == 1000


def test_importing_the_command_line_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, lth.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
