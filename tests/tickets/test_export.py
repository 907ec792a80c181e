"""lth.tickets.export: exporting a run's unit, reading it back, sizes, and run-directory errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth.config import ExperimentConfig
from lth.experiment import Lottery, UnitKey
from lth.models import build_model
from lth.store import RunStore, torch_load
from lth.tickets import (
    ExportError,
    dense_checkpoint_bytes,
    export_size,
    export_ticket,
    load_ticket,
    read_ticket,
    sparse_layers,
)
from tests.helpers import unwritable_folder
from tests.tickets.helpers import BRANCHES, lth_process, masked, parse_header, stored_mask

# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("level, branch", [(0, "ticket")] + [(lv, b) for lv in (1, 2) for b in BRANCHES])
def test_float32_round_trip_is_exact_and_masks_identical(run, tmp_path, level, branch):
    path = export_ticket(run, level, branch=branch, out=tmp_path / "t.safetensors")
    ticket = read_ticket(path)
    final = torch_load(run / f"trial_0/level_{level}/{branch}/final.pt")
    if level == 0:
        assert all(bool(m.all()) for m in ticket.masks.values())
        assert set(ticket.masks) == {"hidden.0.weight", "hidden.1.weight", "out.weight"}
        ref = final
    else:
        mask = stored_mask(run, level, branch)
        assert set(ticket.masks) == set(mask)
        for name in mask:
            assert torch.equal(ticket.masks[name], mask[name]), name
        ref = masked(final, mask)
        # training keeps pruned weights at 0, so the masked and unmasked checkpoints agree
        assert all(torch.equal(ref[k], final[k]) for k in final)
    assert set(ticket.state_dict) == set(ref)
    for k in ref:
        assert ticket.state_dict[k].dtype == torch.float32
        assert torch.equal(ticket.state_dict[k], ref[k]), k
    model = load_ticket(path)
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    meta = ticket.metadata
    assert (meta["level"], meta["trial"], meta["branch"], meta["weights"]) == (level, 0, branch, "final")
    summary = json.loads((run / "summary.json").read_text())
    rec = next(r for r in summary if (r["level"], r["branch"], r["trial"]) == (level, branch, 0))
    assert meta["weights_remaining"] == pytest.approx(rec["weights_remaining"], abs=0)
    assert meta["final_test_accuracy"] == rec["final_test_accuracy"]
    assert meta["model"] == "mlp-100-50" and meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10
    assert meta["config_hash"] == run.name.rsplit("-", 1)[1]
    assert Path(meta["source_run_dir"]) == run.resolve()


@pytest.mark.parametrize("dtype, rel", [("float16", 2**-11), ("bfloat16", 2**-8)])
def test_half_precision_round_trip_is_the_rounded_weights(run, tmp_path, dtype, rel):
    path = export_ticket(run, 2, dtype=dtype, out=tmp_path / "t.safetensors")
    ticket = read_ticket(path)
    mask = stored_mask(run, 2, "ticket")
    ref = masked(torch_load(run / "trial_0/level_2/ticket/final.pt"), mask)
    for name in mask:
        assert torch.equal(ticket.masks[name], mask[name])
    for k, v in ref.items():
        got = ticket.state_dict[k]
        assert got.dtype == torch.float32
        assert torch.equal(got, v.to(getattr(torch, dtype)).float()), k  # exactly the rounding
        assert torch.allclose(got, v, rtol=rel, atol=1e-6), k
    assert ticket.metadata["dtype"] == dtype
    st_dtype = {"float16": "F16", "bfloat16": "BF16"}[dtype]
    header = parse_header(path.read_bytes())[0]
    assert {h["dtype"] for n, h in header.items() if n.endswith((".values", ".bias"))} == {st_dtype}


def test_init_weights_are_the_units_starting_point_masked(run, tmp_path, digits):
    cfg = ExperimentConfig.from_dict(json.loads((run / "config.json").read_text()))
    theta0 = torch_load(run / "trial_0/theta0.pt")
    lottery = Lottery(cfg, RunStore(run), digits, log=lambda s: None)
    for branch in BRANCHES:
        ticket = read_ticket(export_ticket(run, 2, branch=branch, weights="init",
                                           out=tmp_path / f"{branch}.safetensors"))
        mask = stored_mask(run, 2, branch)
        # the driver's own start state for this unit (same seeds), masked
        spec = lottery.exp.unit_spec(UnitKey(0, 2, branch), stored_mask(run, 2, "ticket"), theta0)
        start = masked(spec.start_state, mask)
        assert ticket.metadata["weights"] == "init"
        for k in start:
            assert torch.equal(ticket.state_dict[k], start[k]), (branch, k)
        if branch != "reinit":
            assert all(torch.equal(ticket.state_dict[k], v) for k, v in masked(theta0, mask).items())
    dense_init = read_ticket(export_ticket(run, 0, weights="init", out=tmp_path / "d.safetensors"))
    assert all(torch.equal(dense_init.state_dict[k], v) for k, v in theta0.items())


def test_bitmap_and_indices_decode_identically_and_auto_picks_the_smaller(run, tmp_path):
    tickets, headers = {}, {}
    for fmt in ("bitmap", "indices", "auto"):
        path = export_ticket(run, 2, mask_format=fmt, out=tmp_path / f"{fmt}.safetensors")
        tickets[fmt], headers[fmt] = read_ticket(path), parse_header(path.read_bytes())[0]
    for name in tickets["bitmap"].masks:
        assert torch.equal(tickets["bitmap"].masks[name], tickets["indices"].masks[name])
    for k, v in tickets["bitmap"].state_dict.items():
        assert torch.equal(v, tickets["indices"].state_dict[k])
        assert torch.equal(v, tickets["auto"].state_dict[k])
    assert {n for n in headers["bitmap"] if n.endswith(".bitmap")} == {
        "hidden.0.weight.bitmap", "hidden.1.weight.bitmap", "out.weight.bitmap"}
    assert not any(n.endswith(".bitmap") for n in headers["indices"])
    for name, info in tickets["auto"].metadata["layers"].items():
        numel, nnz = math.prod(info["shape"]), info["nnz"]
        idx_bytes = nnz * (2 if numel <= 2**15 else 4)
        want = "indices" if idx_bytes < (numel + 7) // 8 else "bitmap"
        assert info["mask_format"] == want, (name, numel, nnz)
        assert f"{name}.{want}" in headers["auto"]
    assert tickets["indices"].metadata["mask_formats"] == {n: "indices" for n in tickets["indices"].masks}


def test_auto_stores_a_fully_kept_layer_dense_without_a_mask(run, tmp_path):
    path = export_ticket(run, 0, out=tmp_path / "dense.safetensors")
    header = parse_header(path.read_bytes())[0]
    assert "hidden.0.weight" in header and not any(n.endswith((".bitmap", ".indices")) for n in header)
    forced = parse_header(export_ticket(run, 0, mask_format="bitmap",
                                        out=tmp_path / "b.safetensors").read_bytes())[0]
    assert "hidden.0.weight.bitmap" in forced


def test_default_path_and_a_directory_as_out(run_copy):
    path = export_ticket(run_copy, 1, branch="reinit", dtype="bfloat16")
    assert path == run_copy / "exports" / "trial0_level1_reinit_final_bfloat16.safetensors"
    assert read_ticket(path).metadata["branch"] == "reinit"
    with pytest.raises(ExportError, match=r"is a directory; give a file name, e.g. .*trial0_level1_ticket_final"):
        export_ticket(run_copy, 1, out=run_copy / "exports")


def test_out_inside_a_file_is_refused_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    nowhere = tmp_path / "no-such-run"  # the destination is checked before the run is read
    for out in (afile / "x.safetensors", afile / "sub" / "x.safetensors"):
        with pytest.raises(ExportError) as e:
            export_ticket(nowhere, 2, out=out)
        assert str(e.value) == f"{afile} is a file, not a folder; choose another --out"
    assert afile.read_text() == "mine"


def test_missing_folders_of_out_are_created(run, tmp_path):
    out = tmp_path / "new" / "deeper" / "t.safetensors"
    assert export_ticket(run, 2, out=out) == out
    assert read_ticket(out).metadata["level"] == 2


def test_an_unwritable_out_is_an_export_error_naming_it(run, tmp_path):
    folder = unwritable_folder(tmp_path)
    for out in (folder / "t.safetensors", folder / "new" / "t.safetensors"):
        with pytest.raises(ExportError, match=r"^cannot write .*t\.safetensors \(.+\); make its folder "
                                              r"writable, or choose another --out$"):
            export_ticket(run, 2, out=out)
        assert not out.exists()


def test_a_writer_killed_mid_write_leaves_a_pid_temporary_that_the_next_export_removes(run, tmp_path):
    out = tmp_path / "exports" / "t.safetensors"
    killed = lth_process("export", str(run), "--level", "2", "--out", str(out),
                         fault=f"during-write:{out.name}:1")
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    stale = out.parent / f".{out.name}.{killed.pid}.tmp"
    assert stale.is_file() and not out.exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # a live writer's temporary, and files that only look alike, are not touched
        kept = [out.parent / f".{out.name}.{sleeper.pid}.tmp", out.parent / f".{out.name}.abc.tmp",
                out.parent / f".{out.name}.0.tmp", out.parent / f".other.{killed.pid}.tmp"]
        for p in kept:
            p.write_bytes(b"partial")
        export_ticket(run, 2, out=out)
        assert not stale.exists() and all(p.read_bytes() == b"partial" for p in kept)
    finally:
        sleeper.kill()
        sleeper.wait()
    fresh = read_ticket(export_ticket(run, 2, out=tmp_path / "fresh.safetensors"))
    ticket = read_ticket(out)
    assert ticket.raw_metadata == fresh.raw_metadata
    assert all(torch.equal(v, fresh.state_dict[k]) for k, v in ticket.state_dict.items())


def test_a_run_directory_named_in_bytes_that_are_not_utf8_exports(run, tmp_path):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    shutil.copytree(run, odd)
    ticket = read_ticket(export_ticket(odd, 2))
    assert ticket.raw_metadata["source_run_dir"] == str(tmp_path.resolve() / "run-\\xff")
    assert ticket.metadata["config_hash"] == run.name.rsplit("-", 1)[1]


# --------------------------------------------------------------------------- sizes


def test_export_is_much_smaller_than_the_dense_checkpoint_at_high_sparsity(run, tmp_path):
    final = torch_load(run / "trial_0/level_2/ticket/final.pt")
    dense = dense_checkpoint_bytes(final)
    assert dense == len((run / "trial_0/level_2/ticket/final.pt").read_bytes())
    sizes = {dt: export_size(export_ticket(run, 2, dtype=dt, out=tmp_path / f"{dt}.safetensors"))
             for dt in ("float32", "float16", "bfloat16")}
    meta = read_ticket(tmp_path / "float32.safetensors").metadata
    # 6.25% of the hidden weights and 39% of the output weights remain (~8% overall): values
    # 4 bytes each + masks about 1 bit per weight (4% of float32) + biases + header.
    assert meta["weights_remaining"] < 0.09
    assert sizes["float32"].dense_bytes == dense
    assert sizes["float32"].fraction < 0.25, sizes["float32"]
    assert sizes["float16"].file_bytes < sizes["float32"].file_bytes
    # same payload; only the header strings differ ("BF16", "bfloat16")
    assert abs(sizes["bfloat16"].file_bytes - sizes["float16"].file_bytes) <= 16
    dense_export = export_size(export_ticket(run, 0, out=tmp_path / "l0.safetensors"))
    assert dense_export.fraction < 1.0  # no pickle overhead, no mask at level 0
    assert "% of the dense float32 checkpoint" in str(sizes["float32"])


def test_file_size_is_payload_plus_header(run, tmp_path):
    """The bytes are what the format says they are: values, masks and dense tensors in their
    dtypes, plus the 8-byte length and the JSON header padded to a multiple of 8."""
    path = export_ticket(run, 2, out=tmp_path / "t.safetensors")
    data = path.read_bytes()
    header, _, start = parse_header(data)
    ticket = read_ticket(path)
    payload = 0
    for info in ticket.metadata["layers"].values():
        numel, nnz = math.prod(info["shape"]), info["nnz"]
        payload += 4 * nnz + ((numel + 7) // 8 if info["mask_format"] == "bitmap" else 2 * nnz)
    payload += sum(4 * t.numel() for k, t in ticket.state_dict.items() if k not in ticket.masks)
    assert len(data) == start + payload and start % 8 == 0
    assert len(header) == 2 * len(ticket.masks) + len(ticket.state_dict) - len(ticket.masks)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sparse_ticket_gives_the_dense_tickets_outputs_on_real_data(run, tmp_path, digits, dtype):
    path = export_ticket(run, 2, dtype=dtype, out=tmp_path / "t.safetensors")
    dense = load_ticket(path)
    every = load_ticket(path, sparse=True)
    auto = load_ticket(path, sparse="auto")
    assert set(sparse_layers(every)) == {"hidden.0", "hidden.1", "out"}
    # hidden layers keep 6.25% (< threshold), the output layer 39% (> threshold): stays dense
    assert set(sparse_layers(auto)) == {"hidden.0", "hidden.1"}
    with torch.no_grad():
        ref = dense(digits.test_x)
        for model in (every, auto):
            torch.testing.assert_close(model(digits.test_x), ref, rtol=1e-5, atol=1e-5)
    # compare against plain nn.Linear layers holding the run's masked trained weights
    plain = build_model("mlp-100-50", (1, 8, 8), 10)
    final = masked(torch_load(run / "trial_0/level_2/ticket/final.pt"), stored_mask(run, 2, "ticket"))
    plain.load_state_dict({k: v.to(getattr(torch, dtype)).float() for k, v in final.items()})
    with torch.no_grad():
        torch.testing.assert_close(every(digits.test_x), plain(digits.test_x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ExportError, match="sparse="):
        load_ticket(path, sparse="yes")
    # an explicit threshold overrides both defaults: 0.5 also takes the 39% output layer
    assert set(sparse_layers(load_ticket(path, sparse="auto", threshold=0.5))) == {"hidden.0", "hidden.1", "out"}


# --------------------------------------------------------------------------- errors


def test_missing_or_foreign_run_directory(tmp_path):
    with pytest.raises(ExportError, match=r"does not exist; pass the directory that `lth run` printed"):
        export_ticket(tmp_path / "nowhere", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="not an lth run directory .no config.json."):
        export_ticket(tmp_path / "empty", 1)


def test_unfinished_level_names_the_finished_ones(run, run_copy):
    with pytest.raises(ExportError) as e:
        export_ticket(run, 5)
    msg = str(e.value)
    assert "level 5 of trial 0, branch 'ticket', is not finished (not started)" in msg
    assert "finished levels of branch 'ticket' in trial 0: 0-2" in msg and "--level" in msg
    # a unit that is still training (checkpoint, no result.json)
    unit = run_copy / "trial_0/level_2/reinit"
    (unit / "result.json").unlink()
    (unit / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ExportError, match=r"still training or interrupted.*branch 'reinit' in trial 0: 1\b"):
        export_ticket(run_copy, 2, branch="reinit")


def test_failed_unit_unknown_branch_trial_and_bad_choices(run, run_copy):
    res = run_copy / "trial_0/level_1/ticket/result.json"
    rec = json.loads(res.read_text())
    res.write_text(json.dumps({**rec, "status": "failed", "error": "loss is nan at iteration 7"}))
    with pytest.raises(ExportError, match=r"failed during training \(loss is nan at iteration 7\).*: 0, 2"):
        export_ticket(run_copy, 1)
    with pytest.raises(ExportError,
                       match=r"unknown branch 'lucky'; this run has branches: ticket, reinit, random_mask"):
        export_ticket(run, 1, branch="lucky")
    with pytest.raises(ExportError, match=r"trial 3 not found .*trials present: 0"):
        export_ticket(run, 1, trial=3)
    with pytest.raises(ExportError, match="level 0 is the dense network"):
        export_ticket(run, 0, branch="reinit")
    with pytest.raises(ExportError,
                       match=r"dtype 'float64' is not supported; choose one of float32, float16, bfloat16"):
        export_ticket(run, 1, dtype="float64")
    with pytest.raises(ExportError, match="mask format 'csr'"):
        export_ticket(run, 1, mask_format="csr")
    with pytest.raises(ExportError, match="weights 'best'"):
        export_ticket(run, 1, weights="best")
    assert issubclass(ExportError, ValueError)


def test_a_damaged_unit_is_refused_naming_the_file(run_copy):
    (run_copy / "trial_0/level_2/ticket/final.pt").unlink()
    with pytest.raises(ExportError, match=r"level 2 of trial 0, branch 'ticket', is damaged: final.pt is missing"):
        export_ticket(run_copy, 2)
    (run_copy / "trial_0/level_1/mask.pt").write_bytes(b"edited")
    with pytest.raises(ExportError, match=r"its input trial_0/level_1/mask.pt has 6 bytes"):
        export_ticket(run_copy, 1)
    (run_copy / "trial_0/theta0.pt").unlink()  # every unit started from it
    with pytest.raises(ExportError, match=r"its input trial_0/theta0.pt is missing.*Rerun the same `lth run`"):
        export_ticket(run_copy, 2, branch="random_mask", weights="final")
