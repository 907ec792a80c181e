"""What survives what: real ``lth run`` processes killed with SIGKILL, a full disk, a read-only
directory, two processes on one run directory. Each rerun must reproduce an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ARGS = ["run", "--preset", "digits-quick", "--levels", "2", "--trials", "1", "--iterations", "600",
        "--branches", "ticket,reinit", "--set", "runtime.checkpoint_every=100", "--set", "train.eval_every=100"]


def lth(out: Path, *extra: str, fault: str | None = None, args=ARGS) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LTH_FAULT", None)
    if fault:
        env["LTH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "lth", *args, *extra, "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)


def summary(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_seconds"}
            for r in json.loads((run_dir / "summary.json").read_text())]


def masks(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.relative_to(run_dir)): torch.load(p, weights_only=True)
            for p in sorted(run_dir.glob("trial_*/level_*/**/mask.pt"))}


def assert_same_results(run_dir: Path, ref_dir: Path) -> None:
    assert summary(run_dir) == summary(ref_dir)
    a, b = masks(run_dir), masks(ref_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert all(torch.equal(a[k][n], b[k][n]) for n in a[k]), k
    assert not list(run_dir.rglob("*.tmp")), "stale temporary files left behind"
    assert not list(run_dir.rglob("checkpoint.pt")), "checkpoints of finished units left behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    r = lth(out)
    assert r.returncode == 0, r.stderr
    return next(out.iterdir())


# Level 0 has checkpoints at 100..500 (5 writes of checkpoint.pt). Level 1's ticket and reinit train
# together: each group checkpoint writes both checkpoint.next.pt files, then the commit record,
# then renames them (RunStore.save_checkpoints).
@pytest.mark.parametrize(
    "fault, expect_resume, not_retrained",
    [
        ("after-write:checkpoint.pt:2", ("level 0/2 ticket", 200), None),
        ("after-write:mask.pt:1", None, "level 0/2"),
        ("during-write:checkpoint.next.pt:2", None, "level 0/2"),
        ("after-write:checkpoint-commit.json:1", ("level 1/2 ticket", 100), "level 0/2"),
        ("during-write:result.json:2", ("level 1/2 ticket", 500), "level 0/2"),
        ("during-write:summary.json:1", None, "level 0/2"),
        ("after-write:checksums.json:1", None, None),  # theta0 recorded, not yet written
        ("after-write:checksums.json:2", None, "level 0/2"),  # level 1's mask recorded, not yet written
    ],
    ids=["during-level-0", "between-levels", "during-group-checkpoint-write",
         "after-group-checkpoint-commit-record", "during-result-write",
         "during-summary-write", "theta0-recorded-not-written", "mask-recorded-not-written"],
)
def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, reference, fault, expect_resume, not_retrained):
    killed = lth(tmp_path, fault=fault)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    run_dir = next(tmp_path.iterdir())
    rerun = lth(tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    if expect_resume:
        unit, step = expect_resume
        lines = [line for line in rerun.stdout.splitlines() if unit in line]
        assert any(line.endswith(f"resuming from checkpoint at iteration {step}") for line in lines), lines
        # the interrupted unit resumed: it was not also trained again from scratch
        assert not any("training from iteration" in line for line in lines), lines
    if not_retrained:
        assert not any(not_retrained in line and ("training from" in line or "resuming" in line)
                       for line in rerun.stdout.splitlines())
    assert_same_results(run_dir, reference)
    assert not list(run_dir.rglob("checkpoint.next.pt")) and not (run_dir / "checkpoint-commit.json").exists()


def test_second_process_on_a_busy_run_directory_is_refused(tmp_path):
    long_args = [a if a != "600" else "200000" for a in ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LTH_FAULT", None)
    first = subprocess.Popen([sys.executable, "-m", "lth", *long_args, "--out", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob("*/trial_0/theta0.pt")):
            time.sleep(0.05)
        second = lth(tmp_path, args=long_args)
        assert second.returncode == 4
        assert "is in use by another lth process" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert first.poll() is None, "the first process must be unaffected"
    finally:
        first.kill()
        first.wait()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    if not _mount_tmpfs(mnt, "560k"):
        pytest.skip("needs root to mount a small tmpfs (CI and the dev machines run as root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_gives_a_clear_error_keeps_results_and_resumes(small_fs, reference):
    full = lth(small_fs)
    assert full.returncode == 4, (full.returncode, full.stdout[-2000:], full.stderr)
    assert "no space left on the device" in full.stderr and "rerun the same command" in full.stderr
    assert "Traceback" not in full.stderr
    run_dir = next(small_fs.iterdir())
    finished = list(run_dir.glob("trial_*/level_*/*/result.json"))
    assert finished, "some units finished before the disk filled"
    for p in finished:
        json.loads(p.read_text())  # every finished record is intact
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
    rerun = lth(small_fs)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_results(run_dir, reference)


def test_read_only_directory_gives_a_clear_error_and_loses_nothing(small_fs, reference):
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
    assert lth(small_fs).returncode == 0
    run_dir = next(small_fs.iterdir())
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    more = lth(small_fs, "--levels", "3")
    assert more.returncode == 4
    assert "Read-only file system" in more.stderr and "writable" in more.stderr
    assert "Traceback" not in more.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
