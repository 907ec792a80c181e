"""lth.tickets.format: the ticket file is plain safetensors (readable by the library and by hand,
and lth reads what the library writes), and bad files fail with the file and the reason named."""

from __future__ import annotations

import hashlib
import json
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from lth.store import torch_load
from lth.tickets import ExportError, TicketFormatError, export_ticket, load_ticket, read_ticket
from lth.tickets.format import (
    CHECKSUM_KEY,
    FORMAT,
    FORMAT_VERSION,
    pack_state,
    read_safetensors,
    seal,
    serialize,
    unpack_state,
)
from lth.tickets.masks import encode_mask
from tests.tickets.helpers import library_read, parse_header, reference_decode, same_array, stored_mask

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
    with pytest.raises(TicketFormatError, match="lacks content_sha256"):  # version 2 needs its checksum ...
        read_ticket(tmp_path / "hand.safetensors")
    # ... which is the documented SHA-256 over the metadata's canonical JSON, a zero byte, the tensor
    # table's canonical JSON, a zero byte and the tensor bytes
    data = (tmp_path / "hand.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    table = {k: v for k, v in json.loads(data[8:8 + n]).items() if k != "__metadata__"}
    digest = hashlib.sha256(json.dumps(hand_meta, sort_keys=True).encode() + b"\0"
                            + json.dumps(table, sort_keys=True).encode() + b"\0" + data[8 + n:]).hexdigest()
    save_file(hand, str(tmp_path / "hand.safetensors"), metadata={**hand_meta, CHECKSUM_KEY: digest})
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
    if CHECKSUM_KEY in changes:  # the checksum itself edited: written as it is
        save_file(tensors, str(out), metadata=meta)
    else:  # re-sealed: the edit reaches the metadata checks, not just the checksum
        meta.pop(CHECKSUM_KEY, None)
        out.write_bytes(seal(tensors, meta))
    return out


@pytest.mark.parametrize("changes, words", [
    ({"lth_format": "something-else"}, "not an lth ticket .metadata lth_format='something-else'"),
    ({"lth_format_version": "3"}, "ticket format version '3'; this lth reads versions 1, 2"),
    ({CHECKSUM_KEY: None}, "metadata lacks content_sha256, which every version 2 ticket has; the file was edited"),
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
    ({"input_shape": "[" * 5000 + "]" * 5000}, "metadata 'input_shape' is JSON nested too deeply to read"),
    ({"layers": json.dumps({"hidden.0.weight": {"shape": [2**20, 2**21], "nnz": 3, "mask_format": "indices"}})},
     r"layer 'hidden.0.weight' has shape \[1048576, 2097152\], more than 2\^40 weights"),
])
def test_missing_or_garbled_metadata_is_named(run, tmp_path, changes, words):
    path = _rewrite(export_ticket(run, 2, out=tmp_path / "t.safetensors"), tmp_path, **changes)
    with pytest.raises(TicketFormatError, match=words) as e:
        read_ticket(path)
    assert str(e.value).startswith(str(path))


def test_a_model_that_does_not_fit_the_tensors_is_named_before_it_is_built(run, tmp_path):
    path = export_ticket(run, 2, out=tmp_path / "t.safetensors")
    with pytest.raises(ExportError, match=r"edited.safetensors: cannot rebuild the ticket's model: unknown model"):
        load_ticket(_rewrite(path, tmp_path, model="nope"))
    with pytest.raises(TicketFormatError, match=r"edited.safetensors: the file's tensors do not fit model 'mlp-100-50' "
                       r"with input_shape \[1, 8, 9\] and num_classes 10: shape of hidden.0.weight \[100, 64\] "
                       r"\(the model has \[100, 72\]\)$"):
        load_ticket(_rewrite(path, tmp_path, input_shape="[1, 8, 9]"))
    # 50 * 10^12 float32 weights could not be allocated: the shapes are compared first, on the meta device
    with pytest.raises(TicketFormatError, match=r"shape of out.bias \[10\] \(the model has \[1000000000000\]\), "
                       r"out.weight \[10, 50\] \(the model has \[1000000000000, 50\]\)$"):
        load_ticket(_rewrite(path, tmp_path, num_classes=str(10**12)))
    tensors, meta = library_read(path)
    meta.pop(CHECKSUM_KEY)
    (tmp_path / "extra.safetensors").write_bytes(seal({**tensors, "extra": torch.ones(1)}, meta))
    with pytest.raises(TicketFormatError, match=r"extra.safetensors: the file.s tensors do not fit .*unexpected extra"):
        load_ticket(tmp_path / "extra.safetensors")


def test_a_directory_is_not_a_ticket_file(tmp_path):
    with pytest.raises(ExportError, match=f"^{tmp_path} is a directory, not a ticket file"):
        read_ticket(tmp_path)


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


# --------------------------------------------------------------------------- fuzzing

#: Every metadata key lth writes, and one it does not.
KEYS = ("lth_format", "lth_format_version", "lth_version", "model", "dataset", "input_shape", "num_classes",
        "level", "trial", "branch", "weights", "weights_remaining", "config_hash", "config", "dtype",
        "bitmap_bit_order", "mask_formats", "layers", "prunable", "source_run_dir", "final_test_accuracy",
        "early_stop_test_accuracy", "something_else")
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
#: Values that a layer's fields might plausibly hold, so that edits also reach the tensor checks.
layer_value = st.one_of(json_junk, st.sampled_from(["dense", "bitmap", "indices"]),
                        st.lists(st.integers(-1, 7000), max_size=4), st.integers(-1, 7000))
metadata_edit = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("text"), st.sampled_from(KEYS), st.text(max_size=24)),
    st.tuples(st.just("json"), st.sampled_from(KEYS), json_junk),
    # (layer index, field or None for the whole entry, new value or None to delete the field)
    st.tuples(st.just("layer"), st.integers(0, 8), st.sampled_from(["shape", "nnz", "mask_format", None]),
              st.none() | layer_value),
    st.tuples(st.just("nested"), st.integers(1, 5000)),  # input_shape as a deeply nested list
)
byte_damage = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(b"")),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("append"), st.just(0), st.binary(min_size=1, max_size=16)),
)


def _edit(meta: dict[str, str], edit: tuple) -> None:
    kind = edit[0]
    if kind == "delete":
        meta.pop(edit[1], None)
    elif kind == "text":
        meta[edit[1]] = edit[2]
    elif kind == "json":
        meta[edit[1]] = json.dumps(edit[2])
    elif kind == "nested":
        meta["input_shape"] = "[" * edit[1] + "]" * edit[1]
    else:
        _, index, key, value = edit
        try:
            layers = json.loads(meta["layers"])
        except (KeyError, ValueError, TypeError):
            return  # an earlier edit deleted "layers" or made it invalid JSON
        if not isinstance(layers, dict) or not layers:
            return  # an earlier edit made it valid JSON of another shape (a string "0" sorts as ["0"])
        name = sorted(layers)[index % len(layers)]
        if key is None:
            layers[name] = value
        elif not isinstance(layers[name], dict):
            return
        elif value is None:
            layers[name].pop(key, None)
        else:
            layers[name][key] = value
        meta["layers"] = json.dumps(layers)


def _damage(data: bytes, damage: tuple) -> bytes:
    kind, at, junk = damage
    at = at % (len(data) + 1)
    if kind == "truncate":
        return data[:at]
    if kind == "overwrite":
        return data[:at] + junk + data[at + len(junk):]
    if kind == "insert":
        return data[:at] + junk + data[at:]
    return data + junk


class Sources(list):
    """(tensors, metadata) of real exports; a short repr keeps Hypothesis's reports readable."""

    def __repr__(self) -> str:
        return f"<{len(self)} exported tickets>"


@pytest.fixture(scope="module")
def sources(run, tmp_path_factory) -> Sources:
    """Bitmap and index masks in float32; dense layers in bfloat16; index masks only."""
    out = tmp_path_factory.mktemp("sources")
    return Sources([library_read(export_ticket(run, 2, out=out / "a.safetensors")),
                    library_read(export_ticket(run, 0, dtype="bfloat16", out=out / "b.safetensors")),
                    library_read(export_ticket(run, 1, branch="random_mask", mask_format="indices",
                                               out=out / "c.safetensors"))])


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(source=st.integers(0, 2), edits=st.lists(metadata_edit, max_size=2),
       damage=st.lists(byte_damage, max_size=1), sparse=st.sampled_from([False, "auto"]),
       reseal=st.booleans())
def test_edited_or_damaged_tickets_load_what_they_hold_or_raise_the_format_error(
        sources, tmp_path_factory, source, edits, damage, sparse, reseal):
    """``reseal``: the editor recomputed content_sha256 (the metadata checks must hold on their
    own); otherwise the checksum must catch every edit that changes what loads."""
    tensors, meta = sources[source]
    original = serialize(tensors, meta)
    meta = dict(meta)
    for e in edits:
        _edit(meta, e)
    if reseal:
        data = seal(tensors, {k: v for k, v in meta.items() if k != CHECKSUM_KEY})
    else:
        data = serialize(tensors, meta)
    for d in damage:
        data = _damage(data, d)
    path = tmp_path_factory.getbasetemp() / "fuzzed.safetensors"
    path.write_bytes(data)
    try:
        ticket = read_ticket(path)
    except TicketFormatError as e:
        assert str(path) in str(e)
        ticket = None
    try:
        model = load_ticket(path, sparse=sparse)
    except ExportError as e:
        assert str(path) in str(e)
        model = None
    event("read" if ticket is not None else "refused by read_ticket")
    event("loaded" if model is not None else "refused by load_ticket")
    if ticket is None:
        assert model is None
        return
    masks, state = reference_decode(data if reseal else original)  # unsealed: only the original loads
    assert set(ticket.masks) == set(masks) and set(ticket.state_dict) == set(state)
    assert all(same_array(ticket.masks[k], masks[k]) for k in masks)
    assert all(same_array(ticket.state_dict[k], state[k]) for k in state)
    if model is not None and not sparse:
        loaded = model.state_dict()
        assert set(loaded) == set(state) and all(same_array(loaded[k], state[k]) for k in state)


def test_a_renamed_tensor_in_the_header_is_refused_by_the_checksum(run, tmp_path):
    """The checksum covers the tensor table too: an edit of a tensor's name (or dtype, shape,
    offsets) in the header never loads as another state dict."""
    path = export_ticket(run, 2, out=tmp_path / "t.safetensors")
    data = path.read_bytes()
    at = data.index(b'"hidden.1.bias"') + 1
    path.write_bytes(data[:at] + b" " + data[at + 1:])  # "hidden.1.bias" -> " idden.1.bias"
    with pytest.raises(TicketFormatError, match="does not match its content_sha256"):
        read_ticket(path)
