"""Random values for `lth run --dry-run`'s flags and settings: every one is either accepted or
refused with exactly one `lth: error:` line and a usage status, never a traceback, and a refused
configuration never creates a run directory."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lth.cli import main

INTS = st.one_of(st.integers(-10**30, 10**30), st.sampled_from([0, 1, -1, 2**63, 2**63 - 1, 2**64, 10**9]))
TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "0x10", "1_000", "../../x", "/etc", "a/b", "..",
                     "cuda", "cuda:99", "tpu", "cpu:0", "mps", "\x00", "é", "true", "[1, 2]", "{}"]),
)
VALUE = st.one_of(INTS.map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), TEXT)
FLAGS = ["--levels", "--trials", "--iterations", "--eval-every", "--rewind-iteration", "--seed", "--device",
         "--threads", "--parallel-units", "--branches", "--precision", "--test-eval", "--preset"]
FIELDS = ["name", "train.lr", "train.batch_size", "train.weight_decay", "train.momentum", "train.lr_gamma",
          "train.warmup_iterations", "train.lr_milestones", "train.iterations", "data.split_seed", "data.val_size",
          "lottery.levels", "lottery.seed", "lottery.branches", "prune.rate", "prune.output_rate",
          "prune.strategy", "runtime.device", "runtime.threads", "runtime.eval_batch_size",
          "runtime.checkpoint_every", "model.name", "data.dataset", "nosuch.field", "train"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.lists(st.tuples(st.sampled_from(FLAGS), VALUE), max_size=3),
       sets=st.lists(st.tuples(st.sampled_from(FIELDS), VALUE), max_size=3))
def test_random_flag_values_are_accepted_or_one_error_line(tmp_path_factory, capsys, flags, sets):
    out = tmp_path_factory.mktemp("out")
    argv = ["run", "--dry-run", "--out", str(out)]
    for flag, value in flags:
        argv += [f"{flag}={value}"]  # `=` keeps a value that starts with '-' a value
    for field, value in sets:
        argv += ["--set", f"{field}={value}"]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a value of the wrong type for a typed flag
        code = e.code
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("lth: error: argument") and err.count("\n") == 1, err
        return
    _, err = capsys.readouterr()
    assert "Traceback" not in err, err
    if code == 0:
        assert err == ""
    else:
        assert code in (2, 3), (code, err)  # configuration, or a data set name the registry does not know
        assert err.startswith("lth: error:") and err.count("\n") == 1, err
    assert not any(out.iterdir()), "--dry-run must not create anything"


@pytest.mark.parametrize("value", ["../../x", "a/b", "..", ".hidden", "x" * 101])
def test_a_name_cannot_leave_the_output_folder(tmp_path, capsys, value):
    assert main(["run", "--dry-run", "--out", str(tmp_path / "out"), "--set", f"name={value}"]) == 2
    assert "the run directory is named after it" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()
