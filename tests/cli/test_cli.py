"""The ``lth`` command as a user runs it: real processes, real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lth.cli import main
from lth.config import preset_names


def lth(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lth", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=e)


def test_presets_lists_every_preset_with_one_line(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in out] == preset_names()
    assert all(len(line.split()) > 3 for line in out)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--preset", "nope"], ["unknown preset 'nope'", "lenet300-mnist"]),
        (["--branches", "ticket,lucky"], ["lucky", "random_mask"]),
        (["--iterations", "0"], ["train.iterations", "at most 100,000,000"]),
        (["--levels", "1000000000"], ["lottery.levels", "at most 100"]),
        (["--set", "name=../../x"], ["name = '../../x'", "run directory"]),
        (["--device", "tpu"], ["runtime.device", "tpu"]),
        (["--device", "cuda"], ["CUDA is not available", "--device cpu"]),
        (["--set", "train.batch_size=5000"], ["train.batch_size = 5000", "1137"]),
        (["--rewind-iteration", "5000", "--iterations", "100"], ["rewind_iteration", "100"]),
        (["--set", "prune.rate=1.5"], ["prune.rate", "1.5", "(0, 1)"]),
        (["--set", "train.batch=3"], ["train has no field 'batch'", "batch_size"]),
        (["--set", "data.dataset=cifar-100"], ["cifar-100", "mnist"]),
        (["--set", "model.name=lenet5"], ["unknown model 'lenet5'", "lenet300", "resnet20"]),
        (["--set", "train.optimizer=rmsprop"], ["rmsprop", "adam", "sgd"]),
        (["--set", "train.batch_size=0"], ["train.batch_size", "positive"]),
        (["--set", "model.name=vgg19"], ["vgg19", "digits", "(1, 8, 8)"]),
        (["--set", "data.val_size=5000"], ["val_size", "5000"]),
    ],
)
def test_bad_input_is_a_clear_one_line_error(args, words, tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == (3 if "data." in " ".join(args) else 2), err  # 3: the data set's own checks
    assert err.startswith("lth: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not any(tmp_path.iterdir()), "a refused run must not create its run directory"
    assert not list(tmp_path.glob("*/summary.json"))


def test_missing_data_names_the_files_and_where_it_looked(tmp_path, monkeypatch, capsys):
    from lth.data import download  # where the download looks _fetch up

    def offline(url, dest):
        raise OSError("network unreachable")

    monkeypatch.setattr(download, "_fetch", offline)
    code = main(["run", "--preset", "lenet300-mnist", "--data-dir", str(tmp_path / "nodata"),
                 "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert "train-images-idx3-ubyte" in err and str(tmp_path / "nodata") in err


def test_dry_run_prints_resolved_config_and_run_directory(tmp_path, capsys):
    assert main(["run", "--preset", "lenet300-mnist", "--levels", "3", "--set", "train.lr=0.002",
                 "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    cfg = json.loads(out[: out.rindex("}") + 1])
    assert cfg["lottery"]["levels"] == 3 and cfg["train"]["lr"] == 0.002
    assert f"run directory: {tmp_path}/lenet300-mnist-" in out


def test_test_eval_flag_sets_the_runtime_field_and_keeps_the_run_directory(tmp_path, capsys):
    dirs = []
    for extra in ([], ["--test-eval", "best"]):
        assert main(["run", "--preset", "lenet300-mnist", "--out", str(tmp_path), "--dry-run", *extra]) == 0
        out = capsys.readouterr().out
        cfg = json.loads(out[: out.rindex("}") + 1])
        assert cfg["runtime"]["test_eval"] == ("best" if extra else "every")
        assert cfg["runtime"]["flush_denormals"] is True
        dirs.append(out[out.rindex("run directory:"):].strip())
    assert dirs[0] == dirs[1]  # how often the test split is measured changes no reported number
    assert main(["run", "--preset", "lenet300-mnist", "--out", str(tmp_path), "--dry-run",
                 "--no-flush-denormals"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.rindex("}") + 1])["runtime"]["flush_denormals"] is False
    assert out[out.rindex("run directory:"):].strip() == dirs[0]


@pytest.mark.slow
def test_lenet_on_real_mnist_through_the_cli(tmp_path, shared_data):
    """A short version of the paper's experiment, exactly as the README shows it."""
    r = lth("run", "--preset", "lenet300-mnist", "--data-dir", str(shared_data), "--levels", "2",
            "--iterations", "600", "--eval-every", "100", "--branches", "ticket,reinit,random_mask",
            "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "55000 train / 5000 validation / 10000 test" in r.stdout
    assert "level 2/2" in r.stdout and "ETA" in r.stdout
    run_dir = next((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary) == 1 + 2 * 3
    dense = next(s for s in summary if s["level"] == 0)
    assert dense["early_stop_test_accuracy"] > 0.93  # 600 iterations of Adam on MNIST
    assert {round(s["weights_remaining"], 4) for s in summary} == {1.0, 0.8004, 0.6406}
    # the table and verdict printed at the end and `lth report`'s agree
    rep = lth("report", str(run_dir), "--no-files", cwd=tmp_path)
    assert rep.returncode == 0
    table, verdict = rep.stdout.split("\n\n", 1)
    assert table.strip() in r.stdout and verdict.strip() in r.stdout and "winning ticket" in verdict


@pytest.mark.slow
def test_sigkill_mid_unit_then_rerun_matches_an_uninterrupted_run(tmp_path):
    """A real process killed with SIGKILL mid-unit; the rerun resumes and gives identical numbers."""
    args = ["run", "--preset", "digits-quick", "--levels", "2", "--trials", "1", "--iterations", "1500",
            "--set", "runtime.checkpoint_every=100", "--quiet"]
    ref = lth(*args, "--out", str(tmp_path / "ref"), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "lth", *args, "--out", str(out)], cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if list(out.glob("*/trial_0/level_1/*/checkpoint.pt")):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run_dir = next(out.iterdir())
    assert not (run_dir / "trial_0/level_2/ticket/result.json").exists()
    r = lth(*args[:-1], "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming from checkpoint" in r.stdout
    strip = lambda p: [{k: v for k, v in x.items() if k != "train_seconds"}
                       for x in json.loads(p.read_text())]
    ref_dir = next((tmp_path / "ref").iterdir())
    assert strip(run_dir / "summary.json") == strip(ref_dir / "summary.json")


def test_run_help_names_every_registered_branch_and_the_optimizer_flag(capsys):
    from lth.experiment import branch_names

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    start = text.index("--branches BRANCHES comma-separated")
    listed = text[start:text.index("--rewind-optimizer", start)]
    assert all(name in listed for name in branch_names()), listed
    assert "--rewind-optimizer" in text


def test_rewind_optimizer_and_new_branches_from_the_command_line(tmp_path, capsys):
    base = ["run", "--preset", "lenet300-mnist", "--rewind-iteration", "500", "--out", str(tmp_path), "--dry-run"]
    assert main([*base, "--branches", "ticket,finetune,lr_rewind,oneshot", "--rewind-optimizer"]) == 0
    out = capsys.readouterr().out
    cfg = json.loads(out[: out.rindex("}") + 1])
    assert cfg["lottery"]["rewind_optimizer"] is True
    assert cfg["lottery"]["branches"] == ["ticket", "finetune", "lr_rewind", "oneshot"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.rindex("}") + 1])["lottery"]["rewind_optimizer"] is False
