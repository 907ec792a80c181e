"""lth.tickets.format: the ticket file is plain safetensors (readable by the library and by hand,
and lth reads what the library writes), and bad files fail with the file and the reason named."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lth.store import torch_load
from lth.tickets import ExportError, TicketFormatError, export_ticket, load_ticket, read_ticket
from lth.tickets.format import FORMAT, FORMAT_VERSION, pack_state, read_safetensors, serialize, unpack_state
from lth.tickets.masks import encode_mask
from tests.tickets.helpers import library_read, parse_header, stored_mask

# --------------------------------------------------------------------------- the container


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
    """The safetensors library reads lth's files, and gets the bytes the spec says are there."""
    path = export_ticket(run, 2, dtype="bfloat16", out=tmp_path / "t.safetensors")
    data = path.read_bytes()
    header, meta, start = parse_header(data)
    by_hand = {"BF16": torch.bfloat16, "F32": torch.float32, "I16": torch.int16, "I32": torch.int32,
               "U8": torch.uint8}
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == meta
        names = f.keys()  # the handle is not iterable
        assert set(names) == set(header)
        for k in names:
            t = f.get_tensor(k)
            lo, hi = header[k]["data_offsets"]
            raw = torch.frombuffer(bytearray(data[start + lo:start + hi]), dtype=torch.uint8)
            ref = raw.view(by_hand[header[k]["dtype"]]).reshape(header[k]["shape"])
            assert t.dtype == ref.dtype and torch.equal(t, ref), k
    ours, raw_meta = read_safetensors(path)
    assert raw_meta == meta and set(ours) == set(header)


def test_lth_reads_a_ticket_the_library_wrote(run, tmp_path, digits):
    """Any writer that follows the format is read: tensors and metadata re-saved by the library,
    and a ticket assembled by hand from a model and a mask."""
    path = export_ticket(run, 2, out=tmp_path / "t.safetensors")
    tensors, meta = library_read(path)
    save_file(tensors, str(tmp_path / "resaved.safetensors"), metadata=meta)
    ours, theirs = read_ticket(path), read_ticket(tmp_path / "resaved.safetensors")
    assert ours.raw_metadata == theirs.raw_metadata
    for k, v in ours.state_dict.items():
        assert torch.equal(v, theirs.state_dict[k]), k

    model = load_ticket(path)
    layer = "hidden.0.weight"
    w, m = model.state_dict()[layer], ours.masks[layer]
    hand = {k: v.clone() for k, v in model.state_dict().items() if k != layer}
    hand[f"{layer}.indices"] = encode_mask(m, "indices")
    hand[f"{layer}.values"] = w[m].half()
    hand_meta = {"lth_format": FORMAT, "lth_format_version": FORMAT_VERSION, "model": "mlp-100-50",
                 "input_shape": "[1, 8, 8]", "num_classes": "10", "level": "2", "trial": "0",
                 "layers": json.dumps({layer: {"shape": list(w.shape), "nnz": int(m.sum()),
                                               "mask_format": "indices"}})}
    save_file(hand, str(tmp_path / "hand.safetensors"), metadata=hand_meta)
    ticket = read_ticket(tmp_path / "hand.safetensors")
    assert torch.equal(ticket.masks[layer], m)
    assert torch.equal(ticket.state_dict[layer], (w * m).half().float())
    with torch.no_grad():
        torch.testing.assert_close(ticket.build_model()(digits.test_x), model(digits.test_x),
                                   rtol=1e-2, atol=1e-2)


def test_serialize_round_trips_every_dtype_and_empty_tensors(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5), "f16": torch.randn(7).half(), "bf16": torch.randn(2, 2).bfloat16(),
        "i16": torch.tensor([1, -2, 300], dtype=torch.int16), "i64": torch.tensor(7),
        "u8": torch.tensor([0, 255], dtype=torch.uint8), "empty": torch.empty(0, dtype=torch.int32),
        "b": torch.tensor([True, False, True]),
    }
    path = tmp_path / "all.safetensors"
    path.write_bytes(serialize(tensors, {"a": "1"}))
    got, meta = read_safetensors(path)
    assert meta == {"a": "1"}
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v), k
    with pytest.raises(ExportError, match="strings to strings"):
        serialize(tensors, {"a": 1})


def test_pack_and_unpack_are_inverse_and_share_no_memory_with_the_input():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 30, generator=g)
    m = torch.rand(40, 30, generator=g) < 0.04
    assert 2 * int(m.sum()) < 40 * 30 // 8  # int16 indices beat the 150-byte bitmap
    state = {"w": w * m, "b": torch.randn(40, generator=g), "steps": torch.tensor(3)}
    tensors, layers = pack_state(state, {"w": m}, dtype="float32", mask_format="auto")
    assert layers == {"w": {"shape": [40, 30], "nnz": int(m.sum()), "mask_format": "indices"}}
    assert set(tensors) == {"w.indices", "w.values", "b", "steps"}
    assert all(t.untyped_storage().data_ptr() != s.untyped_storage().data_ptr()
               for t in tensors.values() for s in state.values())
    masks, back = unpack_state(tensors, layers)
    assert torch.equal(masks["w"], m) and all(torch.equal(back[k], v) for k, v in state.items())
    with pytest.raises(TicketFormatError, match="<ticket>: layer w is stored both dense and as indices"):
        unpack_state({**tensors, "w": state["w"]}, layers)
    with pytest.raises(ExportError, match="dtype 'float64'"):
        pack_state(state, {"w": m}, dtype="float64")


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("damage, words", [
    (lambda d: d[:5], "8-byte header length"),
    (lambda d: struct.pack("<Q", 10**9) + d[8:], "exceeds the file"),
    (lambda d: d[:8] + b"[" + d[9:], "header is not valid safetensors JSON"),
    (lambda d: d[:8] + b"\xff" + d[9:], "header is not UTF-8"),
    (lambda d: d[:-4], r"truncated: the header describes \d[\d,]* bytes, the file holds"),
    (lambda d: d + b"\0" * 8, "8 trailing bytes"),
    (lambda d: b"", "only 0 bytes"),
    (lambda d: b"PK\x03\x04 a zip archive, say" * 4, "not a safetensors file"),
])
def test_damaged_files_are_rejected_with_the_reason(run, tmp_path, damage, words):
    data = export_ticket(run, 1, out=tmp_path / "t.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(data))
    with pytest.raises(TicketFormatError, match=words) as e:
        read_ticket(bad)
    assert str(e.value).startswith(f"{bad} is not a valid safetensors file: ")
    assert "Error while deserializing" not in str(e.value)  # restated, not the library's wording


def test_a_safetensors_file_that_is_not_a_ticket_is_named_as_such(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(TicketFormatError, match="not an lth ticket"):
        read_ticket(path)
    save_file({"w": torch.ones(2)}, str(path))  # no metadata at all
    with pytest.raises(TicketFormatError, match=f"{path} is a safetensors file but not an lth ticket"):
        read_ticket(path)
    with pytest.raises(ExportError, match="does not exist"):
        read_ticket(tmp_path / "nope.safetensors")


def _rewrite(path, tmp_path, **changes):
    """``path`` re-saved with metadata keys changed (None deletes one)."""
    tensors, meta = library_read(path)
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    out = tmp_path / "edited.safetensors"
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.mark.parametrize("changes, words", [
    ({"lth_format": "something-else"}, "not an lth ticket .metadata lth_format='something-else'"),
    ({"lth_format_version": "2"}, "ticket format version '2'; this lth reads version 1"),
    ({"layers": None}, "metadata lacks layers"),
    ({"layers": None, "model": None}, "metadata lacks model, layers"),
    ({"layers": "[1, 2]"}, "metadata 'layers' must be a JSON object, got list"),
    ({"layers": "{not json"}, "metadata 'layers' is not valid JSON"),
    ({"layers": json.dumps({"hidden.0.weight": {"shape": "100,64", "nnz": 3, "mask_format": "bitmap"}})},
     "layer 'hidden.0.weight' has shape '100,64'; expected a list of non-negative integers"),
    ({"layers": json.dumps({"hidden.0.weight": {"shape": [100, 64], "nnz": 3}})},
     "layer 'hidden.0.weight' lacks 'mask_format'"),
    ({"layers": json.dumps({"hidden.0.weight": {"shape": [100, 64], "nnz": -1, "mask_format": "bitmap"}})},
     r"has nnz -1; expected an integer in \[0, 6400\]"),
    ({"layers": json.dumps({"hidden.0.weight": {"shape": [100, 64], "nnz": 3, "mask_format": "csr"}})},
     "has mask_format 'csr'; expected one of dense, bitmap, indices"),
    ({"layers": json.dumps({"hidden.0.weight": 7})}, "layer 'hidden.0.weight' must be an object"),
    ({"level": "two"}, "metadata 'level' is 'two', not an integer"),
    ({"num_classes": "-3"}, "metadata 'num_classes' is -3; it cannot be negative"),
    ({"input_shape": '"1x8x8"'}, "metadata 'input_shape' must be a JSON list, got str"),
    ({"input_shape": "[1, 0, 8]"}, "metadata 'input_shape' must list positive integers"),
    ({"weights_remaining": "most"}, "metadata 'weights_remaining' is 'most', not a number"),
])
def test_missing_or_garbled_metadata_is_named(run, tmp_path, changes, words):
    path = _rewrite(export_ticket(run, 2, out=tmp_path / "t.safetensors"), tmp_path, **changes)
    with pytest.raises(TicketFormatError, match=words) as e:
        read_ticket(path)
    assert str(e.value).startswith(str(path))


def test_layers_that_disagree_with_the_tensors_are_named(run, tmp_path):
    path = export_ticket(run, 2, mask_format="bitmap", out=tmp_path / "t.safetensors")
    layers = read_ticket(path).metadata["layers"]
    wrong_nnz = {**layers, "out.weight": {**layers["out.weight"], "nnz": layers["out.weight"]["nnz"] + 1}}
    with pytest.raises(TicketFormatError, match=r"layer out.weight has \d+ values for a mask of \d+ .metadata says"):
        read_ticket(_rewrite(path, tmp_path, layers=json.dumps(wrong_nnz)))
    as_indices = {**layers, "out.weight": {**layers["out.weight"], "mask_format": "indices"}}
    with pytest.raises(TicketFormatError, match="layer out.weight: the indices mask tensor is missing"):
        read_ticket(_rewrite(path, tmp_path, layers=json.dumps(as_indices)))
    reshaped = {**layers, "out.weight": {**layers["out.weight"], "shape": [10, 51]}}
    with pytest.raises(TicketFormatError, match=r"layer out.weight: bitmap must be 64 uint8 bytes, got 63"):
        read_ticket(_rewrite(path, tmp_path, layers=json.dumps(reshaped)))
    as_dense = {**layers, "out.weight": {**layers["out.weight"], "mask_format": "dense"}}
    with pytest.raises(TicketFormatError, match=r"layer out.weight is missing or not a floating tensor"):
        read_ticket(_rewrite(path, tmp_path, layers=json.dumps(as_dense)))
