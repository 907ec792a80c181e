"""The ticket file: one safetensors file holding only the weights a pruned network kept.

The container is plain `safetensors <https://github.com/huggingface/safetensors>`_, written and read
with the ``safetensors`` library, so any safetensors reader opens a ticket (no pickle, no code
execution on load). This module fixes what goes into the container; :mod:`lth.tickets.export`
fills it from a run directory and turns it back into a model.

Tensors, for every parameter/buffer ``P`` of the model's ``state_dict``:

* masked layer (``P`` in the ticket's mask), mask format ``bitmap``: ``P.bitmap`` (U8) and
  ``P.values`` (the chosen dtype, ``[nnz]``): the surviving weights in row-major order.
* masked layer, mask format ``indices``: ``P.indices`` (I16, I32 or I64) and ``P.values``.
  (The two encodings are defined in :mod:`lth.tickets.masks`.)
* masked layer with every weight kept (level 0) under ``auto``: ``P`` stored dense (format
  ``dense``), as a mask of all ones costs bytes and says nothing.
* anything else (biases, normalisation, excluded layers): ``P`` dense; floating tensors in the
  chosen dtype, integer buffers unchanged.

``mask_format="auto"`` picks, per layer, whichever of bitmap and indices is smaller.

``__metadata__`` (all strings; JSON where structured): ``lth_format`` ("lth-sparse-ticket"),
``lth_format_version``, ``lth_version``, ``model``, ``dataset``, ``input_shape``, ``num_classes``,
``level``, ``trial``, ``branch``, ``weights`` ("final" = trained, "init" = the ticket's starting
weights), ``weights_remaining``, ``config_hash``, ``config``, ``dtype``, ``bitmap_bit_order``,
``mask_formats`` ({layer: format}), ``layers`` ({layer: {"shape", "nnz", "mask_format"}}),
``prunable``, ``source_run_dir`` and, for trained weights, ``final_test_accuracy`` /
``early_stop_test_accuracy`` of the unit (the latter refers to the early-stopping iteration, not
to these final weights). A reader needs ``model``, ``input_shape``, ``num_classes``, ``level``,
``trial`` and ``layers``; the rest describes where the ticket came from.

``content_sha256`` (format version 2): SHA-256 over the rest of the metadata, the tensor table
(names, dtypes, shapes, offsets) and the tensor bytes
(:func:`content_sha256`); a reader refuses a file that does not match it, so a damaged or edited
ticket never loads as other weights. Version 1 files, which lack it, are still read.

The library writes the ``__metadata__`` keys in an arbitrary order, so two exports of one ticket
have the same size and content but not always the same bytes.

torch and safetensors.torch are imported inside the functions: the command line imports this
package and must start without them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ExportError, TicketFormatError
from .masks import STORED_MASK_FORMATS, choose_mask_format, decode_mask, encode_mask

if TYPE_CHECKING:
    import torch

__all__ = [
    "BITMAP_BIT_ORDER",
    "DTYPES",
    "FORMAT",
    "FORMAT_VERSION",
    "pack_state",
    "parse_metadata",
    "read_safetensors",
    "seal",
    "serialize",
    "unpack_state",
]

FORMAT = "lth-sparse-ticket"
FORMAT_VERSION = "2"  # 2 adds content_sha256; version 1 files (no checksum) are still read
READ_VERSIONS = ("1", "2")
CHECKSUM_KEY = "content_sha256"
DTYPES = ("float32", "float16", "bfloat16")
BITMAP_BIT_ORDER = "little"


# --------------------------------------------------------------------------- tensors


def pack_state(state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], *,
               dtype: str = "float32", mask_format: str = "auto",
               ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """The tensors a ticket file stores for ``state`` under ``masks``, and its ``layers`` metadata.

    Weights outside a mask are dropped (they are zero after training); floating tensors are
    stored as ``dtype``.
    """
    import torch

    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    value_dtype = getattr(torch, dtype)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name, tensor in state.items():
        # every stored tensor is a copy: safetensors refuses to save entries that share memory
        # (tied weights would)
        t = tensor.detach().to("cpu")
        if name in masks:
            m = masks[name].detach().to("cpu", torch.bool)
            nnz = int(m.sum())
            fmt = choose_mask_format(m.numel(), nnz, mask_format)
            layers[name] = {"shape": list(t.shape), "nnz": nnz, "mask_format": fmt}
            if fmt == "dense":
                tensors[name] = t.to(value_dtype, copy=True).contiguous()
            else:
                tensors[f"{name}.{fmt}"] = encode_mask(m, fmt)
                tensors[f"{name}.values"] = t[m].to(value_dtype)  # row-major order of survivors
        else:
            t = t.to(value_dtype, copy=True) if t.is_floating_point() else t.clone()
            tensors[name] = t.contiguous()
    return tensors, layers


def unpack_state(tensors: Mapping[str, torch.Tensor], layers: Mapping[str, Mapping[str, Any]],
                 source: str = "<ticket>") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Inverse of :func:`pack_state`: ``(masks, state)`` with every floating tensor as float32 and
    zeros where pruned. ``layers`` must have passed :func:`parse_metadata`."""
    import torch

    masks: dict[str, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, info in layers.items():
        shape, fmt = tuple(info["shape"]), info["mask_format"]
        if fmt == "dense":
            t = tensors.get(name)
            if t is None or t.numel() != math.prod(shape) or not t.is_floating_point():
                raise TicketFormatError(f"{source}: layer {name} is missing or not a floating "
                                        f"tensor of shape {list(shape)}")
            masks[name] = torch.ones(shape, dtype=torch.bool)
            state[name] = t.to(torch.float32).reshape(shape)
            used.add(name)
            continue
        try:
            m = decode_mask(fmt, tensors.get(f"{name}.{fmt}"), shape, name)
        except TicketFormatError as e:
            raise TicketFormatError(f"{source}: {e}") from None
        kept = int(m.sum())
        values = tensors.get(f"{name}.values")
        if values is None or values.numel() != kept or kept != info["nnz"]:
            raise TicketFormatError(f"{source}: layer {name} has {None if values is None else values.numel()} "
                                    f"values for a mask of {kept} (metadata says {info['nnz']})")
        if not values.is_floating_point():
            raise TicketFormatError(f"{source}: layer {name} has {values.dtype} values; weights are floating")
        w = torch.zeros(shape, dtype=torch.float32)
        w[m] = values.reshape(-1).to(torch.float32)
        masks[name], state[name] = m, w
        used |= {f"{name}.{fmt}", f"{name}.values"}
    for name, t in tensors.items():
        if name in used:
            continue
        if name in state:  # a dense copy beside the layer's mask and values: which one holds?
            raise TicketFormatError(f"{source}: layer {name} is stored both dense and as "
                                    f"{layers[name]['mask_format']} mask and values")
        state[name] = t.to(torch.float32) if t.is_floating_point() else t
    return masks, state


# --------------------------------------------------------------------------- the container


def serialize(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors bytes of ``tensors`` and string ``metadata`` (the library lays tensors out
    by decreasing alignment and pads the header, so every tensor starts aligned)."""
    from safetensors.torch import save

    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in metadata.items()):
        raise ExportError("safetensors metadata must map strings to strings")
    return save(dict(tensors), metadata=dict(metadata))


def content_sha256(data: bytes, metadata: Mapping[str, str]) -> str:
    """The checksum of the safetensors file ``data``: SHA-256 over its metadata (canonical JSON,
    every key but the checksum's own), a zero byte, its tensor table (canonical JSON of the header
    without ``__metadata__``: every tensor's name, dtype, shape and offsets), a zero byte, and the
    tensor bytes (the file after the header)."""
    n = int.from_bytes(data[:8], "little")
    table = {k: v for k, v in json.loads(data[8:8 + n]).items() if k != "__metadata__"}
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in metadata.items() if k != CHECKSUM_KEY}, sort_keys=True).encode())
    h.update(b"\0")
    h.update(json.dumps(table, sort_keys=True).encode())
    h.update(b"\0")
    h.update(data[8 + n:])
    return h.hexdigest()


def seal(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """:func:`serialize` with ``content_sha256`` added to the metadata, so that a reader can tell
    the file is exactly what was exported (the tensor table and bytes are laid out independently
    of the metadata, so the checksum of a first serialisation holds for the second)."""
    plain = serialize(tensors, metadata)
    return serialize(tensors, {**metadata, CHECKSUM_KEY: content_sha256(plain, metadata)})


def read_safetensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``({name: tensor}, metadata)`` of a safetensors file; a file the library rejects raises
    :class:`TicketFormatError` naming the file and, in words, what is wrong with it.

    The file is read into memory and decoded from there (a ticket is small), so any file name
    works, also one that is not valid UTF-8 (which the library's own file reader refuses)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise TicketFormatError(f"{path} is a directory, not a ticket file") from None
    except OSError as e:
        raise TicketFormatError(f"cannot read {path} ({e.strerror or e})") from None
    try:
        tensors = load(data)
    except SafetensorError as e:
        raise TicketFormatError(f"{path} is not a valid safetensors file: {_why_rejected(data, e)}") from None
    # the library accepted the header: a JSON object whose __metadata__ maps strings to strings
    n = int.from_bytes(data[:8], "little")
    try:
        metadata = json.loads(data[8:8 + n]).get("__metadata__") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata values must be strings")
    except (ValueError, AttributeError) as e:  # in case Python's JSON reads it otherwise
        raise TicketFormatError(f"{path} is not a valid safetensors file: the header's __metadata__ "
                                f"is not a map of strings ({e})") from None
    if CHECKSUM_KEY in metadata and metadata[CHECKSUM_KEY] != content_sha256(data, metadata):
        raise TicketFormatError(f"{path} is not the file that was exported: its content does not match its "
                                f"{CHECKSUM_KEY} (damaged or edited since); export it again")
    return tensors, dict(metadata)


def _why_rejected(data: bytes, error: Exception) -> str:
    """The library's reason for rejecting the file ``data``, restated with the numbers that locate it."""
    detail = str(error).partition(": ")[2] or str(error)
    size = len(data)
    if "header too small" in detail:
        return f"only {size} bytes, fewer than the 8-byte header length a safetensors file starts with"
    n = int.from_bytes(data[:8], "little")
    if "invalid header length" in detail or ("header too large" in detail and n > size - 8):
        return (f"its first 8 bytes give a header length of {n:,} bytes, which exceeds the file "
                f"({size:,} bytes): not a safetensors file, or truncated inside its header")
    if "header too large" in detail:
        return f"its header length of {n:,} bytes exceeds the 100 MB that safetensors allows"
    if "invalid UTF-8" in detail:
        return f"the header is not UTF-8 text ({detail})"
    if "invalid JSON" in detail or "header start" in detail:
        return f"the header is not valid safetensors JSON ({detail})"
    if "not fully covered" in detail:
        try:  # the header itself parsed, so the tensor data and the file length disagree
            header = json.loads(data[8:8 + n])
            end = 8 + n + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                              default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            return detail
        if size < end:
            return f"truncated: the header describes {end:,} bytes, the file holds {size:,}"
        return f"{size - end:,} trailing bytes after the last tensor's data"
    return detail


# --------------------------------------------------------------------------- metadata

#: Keys a reader needs to rebuild the network.
REQUIRED = ("model", "input_shape", "num_classes", "level", "trial", "layers")
_INTS = ("num_classes", "level", "trial")
_FLOATS = ("weights_remaining", "final_test_accuracy", "early_stop_test_accuracy")
_JSON = ("input_shape", "mask_formats", "layers", "config", "prunable")
_JSON_TYPES = {"input_shape": list, "mask_formats": dict, "layers": dict, "config": dict, "prunable": list}
_JSON_NAMES = {list: "a JSON list", dict: "a JSON object"}
#: More weights than any layer has (4 TiB as float32): a bigger shape is an edit, not a network.
MAX_LAYER_SIZE = 2**40


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse_metadata(raw: Mapping[str, str], source: str = "<ticket>") -> dict[str, Any]:
    """The metadata of a ticket with structured values parsed (ints, floats, lists, dicts) and
    checked; :class:`TicketFormatError` naming ``source`` and the key for anything else."""
    if raw.get("lth_format") != FORMAT:
        raise TicketFormatError(f"{source} is a safetensors file but not an lth ticket (metadata "
                                f"lth_format={raw.get('lth_format')!r}); `lth export` writes those")
    if raw.get("lth_format_version") not in READ_VERSIONS:
        raise TicketFormatError(f"{source} has ticket format version {raw.get('lth_format_version')!r}; "
                                f"this lth reads versions {', '.join(READ_VERSIONS)}. Upgrade lth or re-export")
    if raw["lth_format_version"] != "1" and CHECKSUM_KEY not in raw:
        raise TicketFormatError(f"{source}: metadata lacks {CHECKSUM_KEY}, which every version "
                                f"{raw['lth_format_version']} ticket has; the file was edited. Export it again")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise TicketFormatError(f"{source}: metadata lacks {', '.join(missing)}; the file was not "
                                "written by `lth export`, or was edited")

    def bad(key: str, why: str) -> TicketFormatError:
        return TicketFormatError(f"{source}: metadata {key!r} {why}")

    meta: dict[str, Any] = dict(raw)
    for k in _INTS:
        try:
            meta[k] = int(raw[k])
        except ValueError:
            raise bad(k, f"is {raw[k]!r}, not an integer") from None
        if meta[k] < 0:
            raise bad(k, f"is {meta[k]}; it cannot be negative")
    for k in _FLOATS:
        if k in raw:
            try:
                meta[k] = float(raw[k])
            except ValueError:
                raise bad(k, f"is {raw[k]!r}, not a number") from None
    for k in _JSON:
        if k in raw:
            try:
                meta[k] = json.loads(raw[k])
            except ValueError as e:
                raise bad(k, f"is not valid JSON ({e})") from None
            except RecursionError:
                raise bad(k, "is JSON nested too deeply to read") from None
            want = _JSON_TYPES[k]
            if not isinstance(meta[k], want):
                raise bad(k, f"must be {_JSON_NAMES[want]}, got {type(meta[k]).__name__} {raw[k][:60]!r}")
    if not meta["input_shape"] or not all(_is_count(s) and s > 0 for s in meta["input_shape"]):
        raise bad("input_shape", f"must list positive integers, got {meta['input_shape']!r}")
    if meta["num_classes"] == 0:
        raise bad("num_classes", "is 0")
    for name, info in meta["layers"].items():
        _check_layer(name, info, bad)
    return meta


def _check_layer(name: str, info: Any, bad: Any) -> None:
    where = f"layer {name!r}"
    if not isinstance(info, dict):
        raise bad("layers", f"{where} must be an object with shape, nnz and mask_format, got {info!r}")
    for key in ("shape", "nnz", "mask_format"):
        if key not in info:
            raise bad("layers", f"{where} lacks {key!r}")
    shape, nnz, fmt = info["shape"], info["nnz"], info["mask_format"]
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise bad("layers", f"{where} has shape {shape!r}; expected a list of non-negative integers")
    if math.prod(shape) > MAX_LAYER_SIZE:
        raise bad("layers", f"{where} has shape {shape!r}, more than 2^40 weights")
    if not _is_count(nnz) or nnz > math.prod(shape):
        raise bad("layers", f"{where} has nnz {nnz!r}; expected an integer in [0, {math.prod(shape)}]")
    if fmt not in STORED_MASK_FORMATS:
        raise bad("layers", f"{where} has mask_format {fmt!r}; expected one of {', '.join(STORED_MASK_FORMATS)}")
