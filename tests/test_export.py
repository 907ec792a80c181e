"""`lth export`, the sparse ticket file, and loading it as sparse modules (lth.export).

One tiny real run (digits, 60 iterations, 2 levels at 75% pruning per level) is built once per
module; tests that damage a run work on a copy of it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from lth.config import ExperimentConfig
from lth.data import load_splits
from lth.export import (
    ExportError,
    TicketFormatError,
    add_export_parser,
    cmd_export,
    decode_mask,
    decode_safetensors,
    dense_checkpoint_bytes,
    encode_mask,
    encode_safetensors,
    export_size,
    export_ticket,
    load_ticket,
    read_ticket,
)
from lth.lottery import Lottery
from lth.models import build_model
from lth.presets import get_preset
from lth.store import RunStore, torch_load
from lth.tickets.sparse import sparse_layers

BRANCHES = ("ticket", "reinit", "random_mask")


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits) -> Path:
    """A finished run: levels 0-2, branches ticket/reinit/random_mask; hidden layers keep 25%
    per level (6.25% at level 2), the output layer 62.5% per level."""
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=60, eval_every=30)
    d["lottery"].update(levels=2, trials=1, branches=BRANCHES)
    d["prune"].update(rate=0.75)
    cfg = ExperimentConfig.from_dict(d)
    with RunStore.open(cfg, root=tmp_path_factory.mktemp("runs")) as store:
        Lottery(cfg, store, digits, log=lambda s: None).run()
        return store.path


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    return dst


def stored_mask(run: Path, level: int, branch: str) -> dict[str, torch.Tensor]:
    udir = run / f"trial_0/level_{level}"
    path = udir / branch / "mask.pt" if (udir / branch / "mask.pt").exists() else udir / "mask.pt"
    return torch_load(path)


def masked(state: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v * mask[k] if k in mask else v for k, v in state.items()}


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
        spec = lottery.branch_spec(0, 2, branch, stored_mask(run, 2, "ticket"), theta0)
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


# --------------------------------------------------------------------------- the file format


def parse_header(data: bytes) -> tuple[dict, dict, int]:
    """An independent safetensors header parser (the spec: u64 LE length, JSON, raw bytes)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    return header, meta, 8 + n


def test_file_is_valid_safetensors(run, tmp_path):
    path = export_ticket(run, 2, out=tmp_path / "t.safetensors")
    data = path.read_bytes()
    header, meta, start = parse_header(data)
    assert start % 8 == 0  # header padded so tensor data is aligned
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I16": 2, "I32": 4, "I64": 8, "U8": 1}
    spans = sorted((h["data_offsets"][0], h["data_offsets"][1], n) for n, h in header.items())
    end = 0
    for lo, hi, name in spans:
        h = header[name]
        assert lo == end, f"hole or overlap before {name}"
        assert hi - lo == math.prod(h["shape"]) * sizes[h["dtype"]]
        assert (start + lo) % sizes[h["dtype"]] == 0, f"{name} is not aligned"
        end = hi
    assert start + end == len(data)
    # decode one tensor by hand: the first hidden layer's surviving values
    h = header["hidden.0.weight.values"]
    lo, hi = h["data_offsets"]
    values = np.frombuffer(data[start + lo:start + hi], dtype="<f4")
    final = torch_load(run / "trial_0/level_2/ticket/final.pt")["hidden.0.weight"]
    mask = stored_mask(run, 2, "ticket")["hidden.0.weight"]
    assert np.array_equal(values, final[mask].numpy())
    bits = header["hidden.0.weight." + json.loads(meta["mask_formats"])["hidden.0.weight"]]
    if bits["dtype"] == "U8":  # documented bit order: little, row-major
        lo, hi = bits["data_offsets"]
        unpacked = np.unpackbits(np.frombuffer(data[start + lo:start + hi], np.uint8), bitorder="little")
        assert np.array_equal(unpacked[:mask.numel()].astype(bool), mask.reshape(-1).numpy())


def test_reference_safetensors_reader_agrees(run, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    path = export_ticket(run, 2, dtype="bfloat16", out=tmp_path / "t.safetensors")
    ours, meta = decode_safetensors(path.read_bytes())
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == meta
        assert set(f.keys()) == set(ours)
        for k in f.keys():
            t = f.get_tensor(k)
            assert t.dtype == ours[k].dtype and torch.equal(t, ours[k]), k


def test_encoder_round_trips_every_dtype_and_empty_tensors():
    tensors = {
        "f32": torch.randn(3, 5), "f16": torch.randn(7).half(), "bf16": torch.randn(2, 2).bfloat16(),
        "i16": torch.tensor([1, -2, 300], dtype=torch.int16), "i64": torch.tensor(7),
        "u8": torch.tensor([0, 255], dtype=torch.uint8), "empty": torch.empty(0, dtype=torch.int32),
        "b": torch.tensor([True, False, True]),
    }
    got, meta = decode_safetensors(encode_safetensors(tensors, {"a": "1"}))
    assert meta == {"a": "1"}
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v), k


@pytest.mark.parametrize("damage, words", [
    (lambda d: d[:5], "8-byte header length"),
    (lambda d: struct.pack("<Q", 10**9) + d[8:], "exceeds the file"),
    (lambda d: d[:8] + b"[" + d[9:], "not UTF-8 JSON"),
    (lambda d: d[:-4], "outside the data"),
    (lambda d: d + b"\0" * 8, "trailing bytes"),
])
def test_damaged_files_are_rejected_with_the_reason(run, tmp_path, damage, words):
    data = export_ticket(run, 1, out=tmp_path / "t.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(data))
    with pytest.raises(TicketFormatError, match=words):
        read_ticket(bad)


def test_a_safetensors_file_that_is_not_a_ticket_is_named_as_such(tmp_path):
    path = tmp_path / "other.safetensors"
    path.write_bytes(encode_safetensors({"w": torch.ones(2)}, {"format": "pt"}))
    with pytest.raises(TicketFormatError, match="not an lth ticket"):
        read_ticket(path)
    with pytest.raises(ExportError, match="does not exist"):
        read_ticket(tmp_path / "nope.safetensors")


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(1,), (7,), (8,), (3, 5), (181, 181), (32769,), (2, 3, 3, 3)]),
       p=st.sampled_from([0.0, 0.01, 0.3, 0.9, 1.0]), seed=st.integers(0, 2**16))
def test_mask_codec_round_trips(shape, p, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < p
    for fmt in ("bitmap", "indices"):
        enc = encode_mask(mask, fmt)
        assert torch.equal(decode_mask(fmt, enc, shape), mask)
        if fmt == "indices":
            assert enc.dtype == (torch.int16 if math.prod(shape) <= 2**15 else torch.int32)
        else:
            assert enc.numel() == (math.prod(shape) + 7) // 8


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


# --------------------------------------------------------------------------- sparse loading


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


# --------------------------------------------------------------------------- command line


def export_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lth")
    add_export_parser(parser.add_subparsers(dest="command"))
    return cmd_export(parser.parse_args(["export", *argv]))


def test_cli_export_writes_the_file_and_prints_its_size(run_copy, capsys):
    assert export_cli([str(run_copy), "--level", "2", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out.splitlines()
    path = run_copy / "exports" / "trial0_level2_ticket_final_float16.safetensors"
    assert out[0] == str(path) and path.is_file()
    size = export_size(path)
    assert f"{size.file_bytes:,} bytes = {100 * size.fraction:.1f}% of the dense" in out[1]
    assert "float16 values" in out[1]
    target = run_copy / "x" / "mine.safetensors"
    assert export_cli([str(run_copy), "--level", "1", "--branch", "random_mask", "--weights", "init",
                       "--mask-format", "indices", "--out", str(target)]) == 0
    meta = read_ticket(target).metadata
    assert (meta["branch"], meta["weights"], set(meta["mask_formats"].values())) == \
        ("random_mask", "init", {"indices"})


def test_cli_export_reports_errors_on_one_line_with_code_2(run, tmp_path, capsys):
    assert export_cli([str(tmp_path / "nowhere"), "--level", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error:") and "does not exist" in err
    with pytest.raises(SystemExit):  # argparse rejects an unknown dtype itself
        export_cli([str(run), "--level", "1", "--dtype", "float64"])


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
    with pytest.raises(ExportError, match=r"unknown branch 'lucky'; this run has branches: random_mask, reinit, ticket"):
        export_ticket(run, 1, branch="lucky")
    with pytest.raises(ExportError, match=r"trial 3 not found .*trials present: 0"):
        export_ticket(run, 1, trial=3)
    with pytest.raises(ExportError, match="level 0 is the dense network"):
        export_ticket(run, 0, branch="reinit")
    with pytest.raises(ExportError, match=r"dtype 'float64' is not supported; choose one of float32, float16, bfloat16"):
        export_ticket(run, 1, dtype="float64")
    with pytest.raises(ExportError, match="mask format 'csr'"):
        export_ticket(run, 1, mask_format="csr")
    with pytest.raises(ExportError, match="weights 'best'"):
        export_ticket(run, 1, weights="best")
    assert issubclass(ExportError, ValueError)
