"""Export a lottery ticket as one genuinely sparse file, and load it back (``lth export``).

A ticket in a run directory is a dense ``final.pt`` plus a boolean ``mask.pt``: at 3.6% of the
weights remaining it still takes the dense network's bytes twice over. :func:`export_ticket`
writes only what survives, into one `safetensors <https://github.com/huggingface/safetensors>`_
file that any safetensors reader can open (no pickle, no code execution on load).

File layout (safetensors, written by :func:`encode_safetensors` without the ``safetensors``
package): 8 bytes little-endian header length N, N bytes of UTF-8 JSON header (padded with
spaces so the data starts at a multiple of 8), then the raw little-endian tensor bytes. The header
maps every tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative
to the data start, contiguous, no holes) and holds ``"__metadata__"``, a string -> string dict.
Tensors are ordered by decreasing element size so each one starts aligned to its element size.

Tensors, for every parameter/buffer ``P`` of the model's ``state_dict``:

* masked layer (``P`` in the ticket's mask), mask format ``bitmap``:
  ``P.bitmap`` (U8, ``ceil(numel / 8)`` bytes): the mask of the row-major flattened weight packed
  with ``numpy.packbits(..., bitorder="little")``, i.e. bit ``i`` (least significant first) of
  byte ``j`` is element ``8 j + i``; pad bits are 0.
  ``P.values`` (chosen dtype, ``[nnz]``): the surviving weights in row-major order.
* masked layer, mask format ``indices``: ``P.indices`` (I16 when ``numel <= 32768``, else I32, or
  I64 beyond 2^31): the sorted flat row-major positions of the survivors; ``P.values`` as above.
* masked layer with every weight kept (level 0) under ``auto``: ``P`` stored dense (format
  ``dense``), as a mask of all ones costs bytes and says nothing.
* anything else (biases, normalisation, excluded layers): ``P`` dense; floating tensors in the
  chosen dtype, integer buffers unchanged.

``mask_format="auto"`` picks, per layer, whichever of bitmap and indices is smaller
(indices win below density ``1 / (8 * index bytes)``: 6.25% with I16, 3.1% with I32).

``__metadata__`` (all strings; JSON where structured): ``lth_format`` ("lth-sparse-ticket"),
``lth_format_version``, ``lth_version``, ``model``, ``dataset``, ``input_shape``, ``num_classes``,
``level``, ``trial``, ``branch``, ``weights`` ("final" = trained, "init" = the ticket's starting
weights), ``weights_remaining``, ``config_hash``, ``config``, ``dtype``, ``bitmap_bit_order``,
``mask_formats`` ({layer: format}), ``layers`` ({layer: {"shape", "nnz", "mask_format"}}),
``source_run_dir`` and, for trained weights, ``final_test_accuracy`` / ``early_stop_test_accuracy``
of the unit (the latter refers to the early-stopping iteration, not to these final weights).

This module is imported by the (torch-free at import time) command line, so torch and the rest of
the library are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "DTYPES",
    "ExportError",
    "ExportSize",
    "MASK_FORMATS",
    "Ticket",
    "TicketFormatError",
    "WEIGHTS",
    "add_export_parser",
    "cmd_export",
    "decode_safetensors",
    "dense_checkpoint_bytes",
    "encode_safetensors",
    "export_size",
    "export_ticket",
    "load_ticket",
    "read_ticket",
]

FORMAT = "lth-sparse-ticket"
FORMAT_VERSION = "1"
DTYPES = ("float32", "float16", "bfloat16")
MASK_FORMATS = ("auto", "bitmap", "indices")
WEIGHTS = ("final", "init")
#: Largest header accepted when reading (the safetensors reference reader uses the same bound).
MAX_HEADER_BYTES = 100 * 1024 * 1024


class ExportError(ValueError):
    """A ticket cannot be exported or loaded; the message names the problem and the fix."""


class TicketFormatError(ExportError):
    """A file is not a valid safetensors file or not a ticket written by ``lth export``."""


# --------------------------------------------------------------------------- safetensors codec

# safetensors dtype name -> (torch dtype attribute, bytes per element)
_ST_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8), "I64": ("int64", 8),
    "F32": ("float32", 4), "I32": ("int32", 4),
    "F16": ("float16", 2), "BF16": ("bfloat16", 2), "I16": ("int16", 2),
    "U8": ("uint8", 1), "I8": ("int8", 1), "BOOL": ("bool", 1),
}


def _st_name(dtype: "torch.dtype") -> str:
    for name, (attr, _) in _ST_DTYPES.items():
        if str(dtype) == f"torch.{attr}":
            return name
    raise ExportError(f"tensors of dtype {dtype} cannot be stored; supported: "
                      + ", ".join(a for a, _ in _ST_DTYPES.values()))


def _require_little_endian() -> None:
    if sys.byteorder != "little":  # the raw bytes below are the host's
        raise ExportError("ticket files are little-endian and this host is big-endian; "
                          "export/load on a little-endian machine (x86-64, ARM)")


def encode_safetensors(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str]) -> bytes:
    """Serialise ``tensors`` (CPU, any supported dtype) and string ``metadata`` to safetensors bytes.

    Tensors are laid out by decreasing element size, then name, after a header padded to a
    multiple of 8 bytes, so every tensor starts at a multiple of its element size.
    """
    import torch

    _require_little_endian()
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in metadata.items()):
        raise ExportError("safetensors metadata must map strings to strings")
    if "__metadata__" in tensors:
        raise ExportError("a tensor cannot be called '__metadata__'")
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    chunks, offset = [], 0
    for name in order:
        t = tensors[name].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _st_name(t.dtype), "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def decode_safetensors(data: bytes, source: str = "<bytes>") -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
    """Parse safetensors bytes into ``({name: tensor}, metadata)``, checking the header fully
    (bounds, dtypes, sizes, and that the data offsets tile the buffer without holes/overlaps)."""
    import torch

    _require_little_endian()

    def bad(why: str) -> TicketFormatError:
        return TicketFormatError(f"{source} is not a valid safetensors file: {why}")

    if len(data) < 8:
        raise bad(f"only {len(data)} bytes (the 8-byte header length is missing)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER_BYTES, len(data) - 8):
        raise bad(f"header length {n} exceeds the file ({len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"the header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or any(not isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must map strings to strings")
    buf = memoryview(data)[8 + n:]
    spans, out = [], {}
    for name, info in header.items():
        try:
            st, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise bad(f"entry {name!r} lacks dtype/shape/data_offsets") from None
        if st not in _ST_DTYPES:
            raise bad(f"entry {name!r} has unsupported dtype {st!r}")
        if not isinstance(shape, list) or any(not isinstance(s, int) or s < 0 for s in shape):
            raise bad(f"entry {name!r} has a bad shape {shape!r}")
        attr, size = _ST_DTYPES[st]
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= len(buf)):
            raise bad(f"entry {name!r} has data offsets {[lo, hi]} outside the data ({len(buf)} bytes)")
        if hi - lo != math.prod(shape) * size:
            raise bad(f"entry {name!r}: {hi - lo} bytes for shape {shape} of {st}")
        spans.append((lo, hi, name))
        dtype = getattr(torch, attr)
        if hi == lo:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            raw = torch.frombuffer(bytearray(buf[lo:hi]), dtype=torch.uint8)
            out[name] = raw.view(dtype).reshape(shape)
    end = 0
    for lo, hi, name in sorted(spans):
        if lo != end:
            raise bad(f"entry {name!r} starts at {lo}, expected {end} (hole or overlap)")
        end = hi
    if end != len(buf):
        raise bad(f"{len(buf) - end} trailing bytes not covered by any tensor")
    return out, metadata


# --------------------------------------------------------------------------- masks


def _index_dtype(numel: int) -> "torch.dtype":
    import torch

    if numel <= 2**15:
        return torch.int16
    if numel <= 2**31:
        return torch.int32
    return torch.int64


def _mask_bytes(numel: int, nnz: int, fmt: str) -> int:
    import torch

    if fmt == "bitmap":
        return (numel + 7) // 8
    if fmt == "indices":
        return nnz * torch.empty((), dtype=_index_dtype(numel)).element_size()
    return 0  # dense


def choose_mask_format(numel: int, nnz: int, requested: str) -> str:
    """``bitmap``/``indices`` as requested; for ``auto`` the smaller of the two per layer
    (ties go to the bitmap), or ``dense`` when every weight is kept."""
    if requested != "auto":
        return requested
    if nnz == numel:
        return "dense"
    return "indices" if _mask_bytes(numel, nnz, "indices") < _mask_bytes(numel, nnz, "bitmap") else "bitmap"


def encode_mask(mask: "torch.Tensor", fmt: str) -> "torch.Tensor":
    """The mask as a packed bitmap (``bitmap``) or sorted flat indices (``indices``)."""
    import numpy as np
    import torch

    flat = mask.detach().to("cpu", torch.bool).reshape(-1)
    if fmt == "bitmap":
        return torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
    if fmt == "indices":
        return flat.nonzero().reshape(-1).to(_index_dtype(flat.numel()))
    raise ExportError(f"unknown mask format {fmt!r}; choose one of {', '.join(MASK_FORMATS)}")


def decode_mask(fmt: str, stored: "torch.Tensor | None", shape: tuple[int, ...],
                name: str = "?") -> "torch.Tensor":
    """Inverse of :func:`encode_mask` (``dense`` gives all ones); checks the stored data."""
    import numpy as np
    import torch

    numel = math.prod(shape)
    if fmt == "dense":
        return torch.ones(shape, dtype=torch.bool)
    if stored is None:
        raise TicketFormatError(f"layer {name}: the {fmt} mask tensor is missing")
    if fmt == "bitmap":
        if stored.dtype != torch.uint8 or stored.numel() != (numel + 7) // 8:
            raise TicketFormatError(f"layer {name}: bitmap must be {(numel + 7) // 8} uint8 bytes, "
                                    f"got {stored.numel()} of {stored.dtype}")
        bits = np.unpackbits(stored.numpy(), bitorder="little")
        if bits[numel:].any():
            raise TicketFormatError(f"layer {name}: bitmap pad bits are not zero")
        return torch.from_numpy(bits[:numel].astype(bool)).reshape(shape)
    if fmt == "indices":
        if stored.dtype not in (torch.int16, torch.int32, torch.int64):
            raise TicketFormatError(f"layer {name}: indices must be integers, got {stored.dtype}")
        idx = stored.to(torch.int64).reshape(-1)
        if idx.numel() and (idx[0] < 0 or idx[-1] >= numel or bool((idx[1:] <= idx[:-1]).any())):
            raise TicketFormatError(f"layer {name}: indices must be strictly increasing in [0, {numel})")
        m = torch.zeros(numel, dtype=torch.bool)
        m[idx] = True
        return m.reshape(shape)
    raise TicketFormatError(f"layer {name}: unknown mask format {fmt!r}")


# --------------------------------------------------------------------------- the run directory


def _ranges(xs: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    if not xs:
        return "none"
    out, start, prev = [], xs[0], xs[0]
    for x in xs[1:] + [None]:  # type: ignore[list-item]
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(out)


def _dir_number(p: Path) -> int | None:
    """``level_12`` -> 12, ``trial_3`` -> 3; None for a name without a number."""
    num = p.name.partition("_")[2]
    return int(num) if num.isdigit() else None


@dataclass
class _Unit:
    run_dir: Path
    cfg: Any  # ExperimentConfig
    trial: int
    level: int
    branch: str
    result: dict[str, Any]

    @property
    def dir(self) -> Path:
        from .store import RunStore
        return RunStore(self.run_dir).unit_dir(self.trial, self.level, self.branch)


def _finished_levels(trial_dir: Path, branch: str) -> list[int]:
    from .store import RESULT, read_json

    done = []
    for d in trial_dir.glob(f"level_*/{branch}/{RESULT}"):
        lv = _dir_number(d.parent.parent)
        try:
            ok = read_json(d).get("status", "ok") == "ok"
        except (OSError, ValueError):
            ok = False
        if lv is not None and ok:
            done.append(lv)
    return sorted(done)


def _resolve_unit(run_dir: Path | str, level: int, trial: int, branch: str) -> _Unit:
    """Check that (trial, level, branch) is a finished unit of an lth run; clear errors if not."""
    from .config import ConfigError
    from .store import CHECKPOINT, RESULT, RunStore, StoreError, config_from_run, read_json

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ExportError(f"run directory {run_dir} does not exist; pass the directory that "
                          "`lth run` printed (<out>/<name>-<hash>, holding config.json and summary.json)")
    if not (run_dir / "config.json").is_file():
        raise ExportError(f"{run_dir} is not an lth run directory (no config.json); pass the "
                          "directory that `lth run` created, <out>/<name>-<hash>")
    try:
        cfg = config_from_run(run_dir)
    except (ConfigError, StoreError, ValueError, TypeError) as e:
        raise ExportError(f"cannot read {run_dir / 'config.json'}: {e}") from e
    trials = sorted(n for p in run_dir.glob("trial_*") if p.is_dir() and (n := _dir_number(p)) is not None)
    if trial not in trials:
        have = f"trials present: {_ranges(trials)}" if trials else "no trial has started yet"
        raise ExportError(f"trial {trial} not found in {run_dir} ({have}); choose one with --trial")
    store = RunStore(run_dir)
    trial_dir = store.trial_dir(trial)
    if level < 0:
        raise ExportError(f"level {level}: levels are 0 (dense) or more")
    branches = {"ticket", *cfg.lottery.branches}
    branches |= {p.name for p in trial_dir.glob("level_*/*") if p.is_dir()}
    if branch not in branches:
        raise ExportError(f"unknown branch {branch!r}; this run has branches: "
                          f"{', '.join(sorted(branches))} (choose one with --branch)")
    if level == 0 and branch != "ticket":
        raise ExportError(f"level 0 is the dense network and has only the 'ticket' branch, "
                          f"not {branch!r}; use --branch ticket or a level of 1 or more")
    udir = store.unit_dir(trial, level, branch)
    done = _finished_levels(trial_dir, branch)
    hint = (f"finished levels of branch {branch!r} in trial {trial}: {_ranges(done)}. Choose one "
            f"with --level, or finish the run by rerunning the same `lth run` command")
    if not (udir / RESULT).exists():
        state = ("still training or interrupted" if (udir / CHECKPOINT).exists()
                 else "not started")
        raise ExportError(f"level {level} of trial {trial}, branch {branch!r}, is not finished "
                          f"({state}); {hint}")
    result = read_json(udir / RESULT)
    if result.get("status", "ok") != "ok":
        raise ExportError(f"level {level} of trial {trial}, branch {branch!r}, failed during training "
                          f"({result.get('error', 'no error recorded')}) and has no trained weights; {hint}")
    return _Unit(run_dir, cfg, trial, level, branch, result)


def _unit_mask(unit: _Unit, model: "nn.Module") -> dict[str, "torch.Tensor"]:
    """The unit's mask: dense at level 0, the branch's own mask.pt (random_mask), else the level's."""
    import torch

    from .models import prunable_tensors
    from .pruning import full_mask
    from .store import torch_load

    if unit.level == 0:
        return full_mask(prunable_tensors(model))
    for path in (unit.dir / "mask.pt", unit.dir.parent / "mask.pt"):
        if path.exists():
            mask = torch_load(path)
            return {n: m.to(torch.bool) for n, m in mask.items()}
    raise ExportError(f"{unit.dir.parent / 'mask.pt'} is missing although the level finished; the "
                      "run directory is incomplete (delete the level's directory and rerun `lth run`)")


def _init_state(unit: _Unit, model_factory: Any) -> dict[str, "torch.Tensor"]:
    """The weights the unit started training from (before masking).

    Mirrors :meth:`lth.lottery.Lottery.branch_spec` (tests compare the two): ticket and
    random_mask start from theta0 (or theta_k when rewinding; the dense level always from
    theta0), reinit from a fresh draw seeded by ("reinit", trial, level).
    """
    from .lottery import reinit_state
    from .store import torch_load

    tdir = unit.dir.parent.parent
    k = unit.cfg.lottery.rewind_iteration
    if unit.branch in ("ticket", "random_mask"):
        path = tdir / ("theta0.pt" if unit.level == 0 or k == 0 else "rewind.pt")
        if not path.exists():
            raise ExportError(f"{path} is missing; the run directory is incomplete, so the "
                              "ticket's initialisation cannot be exported (use --weights final)")
        return torch_load(path)
    if unit.branch == "reinit":
        return reinit_state(model_factory(), unit.cfg, unit.trial, unit.level)
    raise ExportError(f"the starting weights of branch {unit.branch!r} are not known to "
                      "`lth export`; use --weights final")


def _model_spec(cfg: Any) -> tuple[tuple[int, ...], int]:
    from .data import DataError, dataset_info

    try:
        info = dataset_info(cfg.data.dataset)
    except DataError as e:
        raise ExportError(str(e)) from e
    return tuple(info.input_shape), int(info.num_classes)


# --------------------------------------------------------------------------- export


def _check_choice(what: str, value: str, allowed: tuple[str, ...], flag: str) -> None:
    if value not in allowed:
        raise ExportError(f"{what} {value!r} is not supported; choose one of {', '.join(allowed)} "
                          f"(with {flag})")


def default_export_path(run_dir: Path | str, level: int, *, trial: int = 0, branch: str = "ticket",
                        weights: str = "final", dtype: str = "float32") -> Path:
    """``<run>/exports/trial<T>_level<L>_<branch>_<weights>_<dtype>.safetensors``."""
    return (Path(run_dir) / "exports"
            / f"trial{trial}_level{level}_{branch}_{weights}_{dtype}.safetensors")


def export_ticket(run_dir: Path | str, level: int, *, trial: int = 0, branch: str = "ticket",
                  weights: str = "final", dtype: str = "float32", mask_format: str = "auto",
                  out: Path | str | None = None) -> Path:
    """Write the ticket of (trial, level, branch) of a finished run as one sparse safetensors file.

    Args:
        run_dir: the run directory ``lth run`` made (``<out>/<name>-<hash>``).
        level: pruning level (0 = dense); must be finished for ``branch``.
        trial, branch: which unit (``ticket``, ``reinit``, ``random_mask``, ...).
        weights: ``"final"`` (trained weights) or ``"init"`` (the weights the unit started from,
            masked: the winning ticket's initialisation for ``branch="ticket"``).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` for the stored values.
        mask_format: ``"auto"`` (smaller of the two per layer), ``"bitmap"`` or ``"indices"``.
        out: output file; default :func:`default_export_path`.

    Returns the path written (atomically). Raises :class:`ExportError` with the fix in the message.
    """
    import torch

    import lth

    from .config import config_hash
    from .models import build_model, prunable_parameters
    from .pruning import density
    from .store import atomic_write_bytes, torch_load

    _check_choice("weights", weights, WEIGHTS, "--weights")
    _check_choice("dtype", dtype, DTYPES, "--dtype")
    _check_choice("mask format", mask_format, MASK_FORMATS, "--mask-format")
    unit = _resolve_unit(run_dir, int(level), int(trial), branch)
    cfg = unit.cfg
    input_shape, num_classes = _model_spec(cfg)

    def new_model() -> "nn.Module":
        return build_model(cfg.model.name, input_shape, num_classes)

    model = new_model()
    mask = _unit_mask(unit, model)
    expected = dict(model.state_dict())
    if weights == "final":
        path = unit.dir / "final.pt"
        if not path.exists():
            raise ExportError(f"{path} is missing although the unit finished; the run directory "
                              "is incomplete (delete the unit's directory and rerun `lth run`)")
        state = torch_load(path)
    else:
        state = _init_state(unit, new_model)
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise ExportError(f"the stored weights of {unit.dir} do not fit model {cfg.model.name!r} "
                          "built from the run's config.json; was the run directory edited?")
    unknown = [n for n in mask if n not in expected or mask[n].shape != expected[n].shape]
    if unknown:
        raise ExportError(f"the mask of {unit.dir} names weights the model lacks or shapes that "
                          f"differ: {', '.join(unknown)}")

    value_dtype = getattr(torch, dtype)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name, tensor in state.items():
        t = tensor.detach().to("cpu")
        if name in mask:
            m = mask[name].to("cpu")
            nnz = int(m.sum())
            fmt = choose_mask_format(m.numel(), nnz, mask_format)
            layers[name] = {"shape": list(t.shape), "nnz": nnz, "mask_format": fmt}
            if fmt == "dense":
                tensors[name] = t.to(value_dtype)
            else:
                tensors[f"{name}.{fmt}"] = encode_mask(m, fmt)
                tensors[f"{name}.values"] = t[m].to(value_dtype)  # row-major order of survivors
        else:
            tensors[name] = t.to(value_dtype) if t.is_floating_point() else t
    meta = {
        "lth_format": FORMAT,
        "lth_format_version": FORMAT_VERSION,
        "lth_version": lth.__version__,
        "model": cfg.model.name,
        "dataset": cfg.data.dataset,
        "input_shape": json.dumps(list(input_shape)),
        "num_classes": str(num_classes),
        "level": str(unit.level),
        "trial": str(unit.trial),
        "branch": unit.branch,
        "weights": weights,
        "weights_remaining": repr(density(mask)),
        "config_hash": config_hash(cfg),
        "config": json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":")),
        "dtype": dtype,
        "bitmap_bit_order": "little",
        "mask_formats": json.dumps({n: layers[n]["mask_format"] for n in layers}),
        "layers": json.dumps(layers, separators=(",", ":")),
        "prunable": json.dumps(prunable_parameters(model)),
        "source_run_dir": str(unit.run_dir.resolve()),
    }
    if weights == "final":
        for key in ("final_test_accuracy", "early_stop_test_accuracy"):
            if key in unit.result:
                meta[key] = repr(unit.result[key])
    target = Path(out) if out is not None else default_export_path(
        unit.run_dir, unit.level, trial=unit.trial, branch=unit.branch, weights=weights, dtype=dtype)
    if target.is_dir():
        raise ExportError(f"--out {target} is a directory; give a file name, e.g. "
                          f"{target / default_export_path('.', unit.level, trial=unit.trial, branch=unit.branch, weights=weights, dtype=dtype).name}")
    atomic_write_bytes(target, encode_safetensors(tensors, meta))
    return target


# --------------------------------------------------------------------------- reading


@dataclass
class Ticket:
    """A decoded ticket file.

    ``metadata``: the file's metadata with structured values parsed (ints, floats, lists, dicts);
    ``raw_metadata``: the strings as stored; ``masks``: ``{layer: bool tensor}``; ``state_dict``:
    dense tensors ready for ``load_state_dict`` (floating ones as float32, zeros where pruned).
    """

    metadata: dict[str, Any]
    raw_metadata: dict[str, str]
    masks: dict[str, "torch.Tensor"]
    state_dict: dict[str, "torch.Tensor"] = field(repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    def build_model(self) -> "nn.Module":
        """The architecture named in the metadata, with the ticket's weights, in eval mode."""
        from .models import ModelError, build_model

        try:
            model = build_model(self.metadata["model"], self.input_shape, self.num_classes)
        except ModelError as e:
            raise ExportError(f"cannot rebuild the ticket's model: {e}") from e
        try:
            missing, extra = model.load_state_dict(self.state_dict, strict=False)
        except RuntimeError as e:  # a tensor of the wrong shape
            raise TicketFormatError(f"the file's tensors do not fit model {self.metadata['model']!r}: {e}") from e
        if missing or extra:
            raise TicketFormatError(f"the file's tensors do not fit model {self.metadata['model']!r}: "
                                    f"missing {missing}, unexpected {extra}")
        return model.eval()


_PARSED_INT = ("num_classes", "level", "trial")
_PARSED_FLOAT = ("weights_remaining", "final_test_accuracy", "early_stop_test_accuracy")
_PARSED_JSON = ("input_shape", "mask_formats", "layers", "config", "prunable")


def read_ticket(path: Path | str) -> Ticket:
    """Read a file written by :func:`export_ticket`: metadata, masks and the dense float32 state."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ticket file {path} does not exist; create it with `lth export RUN_DIR --level L`")
    tensors, raw = decode_safetensors(path.read_bytes(), str(path))
    if raw.get("lth_format") != FORMAT:
        raise TicketFormatError(f"{path} is a safetensors file but not an lth ticket (metadata "
                                f"lth_format={raw.get('lth_format')!r}); `lth export` writes those")
    if raw.get("lth_format_version") != FORMAT_VERSION:
        raise TicketFormatError(f"{path} has ticket format version {raw.get('lth_format_version')!r}; "
                                f"this lth reads version {FORMAT_VERSION}. Upgrade lth or re-export")
    meta: dict[str, Any] = dict(raw)
    try:
        for k in _PARSED_INT:
            meta[k] = int(raw[k])
        for k in _PARSED_FLOAT:
            if k in raw:
                meta[k] = float(raw[k])
        for k in _PARSED_JSON:
            if k in raw:
                meta[k] = json.loads(raw[k])
    except (KeyError, ValueError) as e:
        raise TicketFormatError(f"{path}: bad or missing metadata ({e})") from None
    masks: dict[str, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, info in meta["layers"].items():
        shape, fmt = tuple(info["shape"]), info["mask_format"]
        if fmt == "dense":
            if name not in tensors or tensors[name].numel() != math.prod(shape):
                raise TicketFormatError(f"{path}: layer {name} is missing or not of shape {list(shape)}")
            masks[name] = torch.ones(shape, dtype=torch.bool)
            state[name] = tensors[name].to(torch.float32).reshape(shape)
            used.add(name)
            continue
        m = decode_mask(fmt, tensors.get(f"{name}.{fmt}"), shape, name)
        values = tensors.get(f"{name}.values")
        if values is None or values.numel() != int(m.sum()) or int(m.sum()) != info["nnz"]:
            raise TicketFormatError(f"{path}: layer {name} has {None if values is None else values.numel()} "
                                    f"values for a mask of {int(m.sum())} (metadata says {info['nnz']})")
        w = torch.zeros(shape, dtype=torch.float32)
        w[m] = values.to(torch.float32)
        masks[name], state[name] = m, w
        used |= {f"{name}.{fmt}", f"{name}.values"}
    for name, t in tensors.items():
        if name not in used:
            state[name] = t.to(torch.float32) if t.is_floating_point() else t
    return Ticket(meta, dict(raw), masks, state)


def load_ticket(path: Path | str, *, sparse: bool | str = False, device: str = "cpu",
                threshold: float | None = None) -> "nn.Module":
    """Rebuild the ticket's model (float32, zeros at pruned positions), ready for inference.

    Args:
        sparse: ``False``: plain dense module. ``"auto"``: Linear layers whose density is below
            ``threshold`` (default :data:`lth.tickets.sparse.DEFAULT_THRESHOLD`, where the sparse product
            measured faster on CPU) become :class:`lth.tickets.sparse.SparseLinear`. ``True``: every
            Linear layer with at least one pruned weight becomes sparse (unless ``threshold``).
        device: where to put the module (the sparse path is measured on CPU).
    """
    if sparse not in (False, True, "auto"):
        raise ExportError(f"sparse={sparse!r}: use False, True or 'auto'")
    ticket = read_ticket(path)
    model = ticket.build_model()
    if sparse:
        from .tickets.sparse import sparsify

        thr = threshold if threshold is not None else (1.0 if sparse is True else None)
        model = sparsify(model, thr, masks=ticket.masks, inplace=True)
    return model.to(device).eval()


# --------------------------------------------------------------------------- sizes


def dense_checkpoint_bytes(state_dict: Mapping[str, "torch.Tensor"]) -> int:
    """Bytes of ``torch.save`` of the state dict with floating tensors as float32 (the usual
    dense checkpoint, like a run's ``final.pt``)."""
    import torch

    buf = io.BytesIO()
    torch.save({k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}, buf)
    return len(buf.getvalue())


@dataclass(frozen=True)
class ExportSize:
    file_bytes: int
    dense_bytes: int

    @property
    def fraction(self) -> float:
        return self.file_bytes / self.dense_bytes

    def __str__(self) -> str:
        return (f"{self.file_bytes:,} bytes = {100 * self.fraction:.1f}% of the dense float32 "
                f"checkpoint ({self.dense_bytes:,} bytes)")


def export_size(path: Path | str) -> ExportSize:
    """Size of an exported ticket vs a dense float32 ``torch.save`` checkpoint of the same model."""
    ticket = read_ticket(path)
    return ExportSize(Path(path).stat().st_size, dense_checkpoint_bytes(ticket.build_model().state_dict()))


# --------------------------------------------------------------------------- command line


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``lth export`` to the main parser's sub-commands; returns the new sub-parser."""
    p = subparsers.add_parser(
        "export", help="write a ticket as one sparse safetensors file (only surviving weights)",
        description="Export the ticket of one finished unit (trial, level, branch) of a run as a "
        "single safetensors file holding each pruned layer's mask (bitmap or index list) and its "
        "surviving weights only. Load it with lth.export.load_ticket(path, sparse='auto').",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory made by `lth run`")
    p.add_argument("--level", type=int, required=True, help="pruning level (0 = dense)")
    p.add_argument("--trial", type=int, default=0, help="trial (default 0)")
    p.add_argument("--branch", default="ticket", help="ticket, reinit, random_mask, ... (default ticket)")
    p.add_argument("--weights", choices=WEIGHTS, default="final",
                   help="final = trained weights; init = the ticket's starting weights (default final)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the stored weights")
    p.add_argument("--mask-format", choices=MASK_FORMATS, default="auto",
                   help="auto = smaller of bitmap and index list, per layer (default)")
    p.add_argument("--out", type=Path,
                   help="output file (default RUN_DIR/exports/trial<T>_level<L>_<branch>_<weights>_<dtype>.safetensors)")
    return p


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``lth export``: prints the file and its size vs the dense checkpoint; 2 on errors."""
    from .store import StoreError

    try:
        path = export_ticket(args.run_dir, args.level, trial=args.trial, branch=args.branch,
                             weights=args.weights, dtype=args.dtype, mask_format=args.mask_format,
                             out=args.out)
        ticket = read_ticket(path)
        size = ExportSize(path.stat().st_size,
                          dense_checkpoint_bytes(ticket.build_model().state_dict()))
    except (ExportError, StoreError) as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    meta = ticket.metadata
    formats = sorted(set(meta["mask_formats"].values()))
    print(path)
    print(f"{size}; {100 * meta['weights_remaining']:.2f}% of weights remaining, "
          f"{meta['dtype']} values, masks: {', '.join(formats) or 'none'}")
    return 0
