"""SIGINT (Ctrl-C) and SIGTERM sent to real `lth run` processes, at start-up and mid-training:
one clean line, an end by the signal itself after cleaning up, no traceback, and a rerun that finishes with the results
of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARGS = ["run", "--preset", "digits-quick", "--levels", "1", "--trials", "1", "--iterations", "3000",
        "--branches", "ticket", "--set", "train.eval_every=100", "--set", "runtime.checkpoint_every=100"]


def env() -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    e.pop("LTH_FAULT", None)
    return e


def deliverable_sigint() -> None:
    """In the child: SIGINT at its default disposition. A shell starts background commands with
    SIGINT ignored, Python then never turns it into KeyboardInterrupt, and the child would never
    see the signal this test sends (as a backgrounded `lth run` rightly ignores Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lth", *ARGS, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), preexec_fn=deliverable_sigint)


def summary(out: Path) -> list[dict]:
    run_dir = next(p for p in out.iterdir() if p.is_dir())
    return [{k: v for k, v in r.items() if k != "train_seconds"}
            for r in json.loads((run_dir / "summary.json").read_text())]


def importing_torch(pid: int) -> bool:
    """True once the process maps libtorch: it is inside lth's main (torch is imported only there)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ref")
    r = subprocess.run([sys.executable, "-m", "lth", *ARGS, "--out", str(out)], capture_output=True, text=True,
                       env=env(), timeout=600)
    assert r.returncode == 0, r.stderr
    return summary(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["start-up", "training"])
def test_a_signal_at_any_moment_is_one_line_and_the_rerun_finishes_the_same(tmp_path, reference, sig, moment):
    proc = spawn(tmp_path)
    try:
        deadline = time.time() + 120
        if moment == "start-up":
            if not Path("/proc").is_dir():
                pytest.skip("needs /proc to see when the process is importing torch")
            while not importing_torch(proc.pid) and time.time() < deadline and proc.poll() is None:
                time.sleep(0.005)
        else:
            for line in proc.stdout:
                if "training from iteration" in line or time.time() > deadline:
                    break
            time.sleep(0.5)  # well inside the training loop
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == -sig, err  # ended by the signal itself, after cleaning up (shell: 128 + sig)
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == ["lth: interrupted; rerun the same command to continue"], err
    rerun = subprocess.run([sys.executable, "-m", "lth", *ARGS, "--out", str(tmp_path)], capture_output=True,
                           text=True, env=env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    if moment == "training":
        assert "resuming from checkpoint" in rerun.stdout or "training from iteration 0" in rerun.stdout
    assert summary(tmp_path) == reference
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("checkpoint.pt"))
