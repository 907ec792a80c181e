"""Every file of a finished run damaged in every way, then `lth verify`, `lth report`,
`lth export` and `lth run` as a user would call them: never a traceback, never a wrong number, a
one-line error or warning naming the problem, and a rerun that restores the undamaged results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lth.cli import main

RUN = ["run", "--preset", "digits-quick", "--levels", "2", "--trials", "1", "--iterations", "120",
       "--set", "train.eval_every=40", "--parallel-units", "1", "--quiet"]


def lth(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run, its report rows, and its exports."""
    root = tmp_path_factory.mktemp("ref")
    assert main([*RUN, "--out", str(root)]) == 0
    run_dir = next(p for p in root.iterdir() if p.is_dir())
    return run_dir


def report_rows(capsys, run_dir: Path) -> tuple[int, list[dict], str]:
    code, out, err = lth(capsys, "report", str(run_dir), "--format", "json", "--no-files")
    return code, (json.loads(out) if code == 0 else []), err


def assert_one_line(err: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith(("lth: error:", "lth: warning:")) for line in lines), err


def files_of(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock")


def damage(path: Path, how: str, data: bytes = b"") -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif how == "garbage":
        path.write_bytes(data or b"\xde\xad\xbe\xef" * 50)
    elif how == "directory":
        path.unlink()
        path.mkdir()


def same_ticket(a: Path, b: Path) -> bool:
    """Same tensors and metadata, apart from the run directory each was exported from."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    ta, tb = load_file(a), load_file(b)
    if ta.keys() != tb.keys() or not all(torch.equal(ta[k], tb[k]) for k in ta):
        return False
    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        ma, mb = fa.metadata(), fb.metadata()
    where = ("source_run_dir", "content_sha256")  # the checksum covers the path too
    return {k: v for k, v in ma.items() if k not in where} == {k: v for k, v in mb.items() if k not in where}


def check_damaged_copy(capsys, ref: Path, root: Path) -> None:
    run_dir = root / ref.name
    _, want, _ = report_rows(capsys, ref)
    # verify: runs, says damaged or intact, one-line errors only
    code, out, err = lth(capsys, "verify", str(run_dir))
    assert code in (0, 1), err
    assert_one_line(err)
    # report: every row shown is the undamaged run's row (damaged units are left out, never misreported)
    code, rows, err = report_rows(capsys, run_dir)
    assert_one_line(err)
    assert code == 0 or "lth: error:" in err
    for row in rows:
        assert row in want, (row, err)
    # export: either the right ticket or a one-line error
    for level, branch in ((1, "random_mask"), (2, "ticket")):
        out_file = root / f"x{level}.safetensors"
        code, _, err = lth(capsys, "export", str(run_dir), "--level", str(level), "--branch", branch,
                           "--out", str(out_file))
        assert_one_line(err)
        if code == 0:
            ref_file = root / f"ref{level}.safetensors"
            assert lth(capsys, "export", str(ref), "--level", str(level), "--branch", branch,
                       "--out", str(ref_file))[0] == 0
            assert same_ticket(out_file, ref_file)
    # rerun: repairs, and the results equal the undamaged run's
    code, _, err = lth(capsys, *RUN, "--out", str(root))
    assert_one_line(err)
    if code != 0 and "is a directory, where lth keeps a file; remove it" in err:
        shutil.rmtree(err.split(" is a directory")[0].split("lth: error: ")[-1])  # as the message says
        code, _, err = lth(capsys, *RUN, "--out", str(root))
    assert code == 0, err
    assert lth(capsys, "verify", str(run_dir))[0] == 0
    assert report_rows(capsys, run_dir)[1] == want


@pytest.mark.slow
@pytest.mark.parametrize("how", ["delete", "truncate", "garbage", "directory"])
def test_every_file_damaged_every_way_is_caught_and_repaired(tmp_path, capsys, finished, how):
    for rel in files_of(finished):
        root = tmp_path / rel.replace("/", "_")
        shutil.copytree(finished, root / finished.name)
        damage(root / finished.name / rel, how)
        try:
            check_damaged_copy(capsys, finished, root)
        except AssertionError as e:
            raise AssertionError(f"{rel} ({how}): {e}") from e
        shutil.rmtree(root)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bytes_overwritten_anywhere_are_caught_and_repaired(tmp_path_factory, capsys, finished, data):
    rel = data.draw(st.sampled_from(files_of(finished)))
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(finished, root / finished.name)
    path = root / finished.name / rel
    raw = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
    patch = data.draw(st.binary(min_size=1, max_size=16))
    raw[at: at + len(patch)] = patch
    path.write_bytes(bytes(raw))
    check_damaged_copy(capsys, finished, root)


def test_verify_says_intact_then_damaged_with_what_a_rerun_redoes(tmp_path, capsys, finished):
    shutil.copytree(finished, tmp_path / finished.name)
    run_dir = tmp_path / finished.name
    code, out, _ = lth(capsys, "verify", str(run_dir))
    assert code == 0 and "units: 7 intact, 0 damaged, 0 not yet trained" in out
    (run_dir / "trial_0/level_1/ticket/final.pt").unlink()
    code, out, _ = lth(capsys, "verify", str(run_dir))
    assert code == 1
    assert "DAMAGED trial 0 level 1 ticket: final.pt is missing" in out
    assert "  - retrain trial 0 level 1 ticket" in out
    code, out, _ = lth(capsys, "verify", str(run_dir), "--format", "json")
    d = json.loads(out)
    assert code == 1 and d["damaged"] and d["units"]["damaged"][0]["problems"] == ["final.pt is missing"]


def test_verify_counts_units_not_yet_trained_as_intact(tmp_path, capsys, finished):
    shutil.copytree(finished, tmp_path / finished.name)
    run_dir = tmp_path / finished.name
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["lottery"]["levels"] = 3  # extended: level 3 not yet run
    (run_dir / "config.json").write_text(json.dumps(cfg))
    code, out, _ = lth(capsys, "verify", str(run_dir))
    assert code == 0 and "3 not yet trained" in out and "train the 3 unit(s) not yet trained" in out


def test_verify_on_something_that_is_not_a_run_directory_is_a_one_line_error(tmp_path, capsys):
    code, out, err = lth(capsys, "verify", str(tmp_path))
    assert code != 0 and code != 1 and out == ""
    assert err.startswith("lth: error:") and "not an lth run directory" in err and len(err.splitlines()) == 1
