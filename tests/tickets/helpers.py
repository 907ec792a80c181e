"""Helpers for the tickets tests: a run's stored masks, an independent header parser, the library's reader."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from lth.store import torch_load

BRANCHES = ("ticket", "reinit", "random_mask")


def stored_mask(run: Path, level: int, branch: str) -> dict[str, torch.Tensor]:
    udir = run / f"trial_0/level_{level}"
    path = udir / branch / "mask.pt" if (udir / branch / "mask.pt").exists() else udir / "mask.pt"
    return torch_load(path)


def masked(state: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v * mask[k] if k in mask else v for k, v in state.items()}


def parse_header(data: bytes) -> tuple[dict, dict, int]:
    """An independent safetensors header parser (the spec: u64 LE length, JSON, raw bytes):
    ``(tensor entries, metadata, offset of the data)``."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    return header, meta, 8 + n


def library_read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a file as the safetensors library reads it."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = f.keys()  # the handle is not iterable
        return {k: f.get_tensor(k) for k in names}, f.metadata()


def lth_process(*args: str, fault: str | None = None) -> subprocess.Popen:
    """``python -m lth ARGS`` as a real process of this checkout's lth, with ``LTH_FAULT=fault``."""
    import lth

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(lth.__file__).parents[1]), env.get("PYTHONPATH")]))
    env.pop("LTH_FAULT", None)
    if fault:
        env["LTH_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "lth", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


#: numpy dtypes of the safetensors dtype names a ticket may hold (BF16 is widened by hand).
_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "BOOL": "?"}
_FLOATING = ("F64", "F32", "F16", "BF16")


def reference_decode(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(masks, state)`` that the ticket file ``data`` holds, decoded with numpy from the format's
    documentation (lth.tickets.format, lth.tickets.masks) without lth's reader: floating tensors as
    float32, zeros where pruned. Meant for files lth's reader accepted."""
    header, meta, start = parse_header(data)
    raw: dict[str, tuple[str, np.ndarray]] = {}
    for name, h in header.items():
        lo, hi = h["data_offsets"]
        buf = data[start + lo:start + hi]
        if h["dtype"] == "BF16":  # bfloat16 is the upper half of a float32
            arr = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, _NUMPY[h["dtype"]])
        raw[name] = (h["dtype"], arr.reshape(h["shape"]))
    masks, state, used = {}, {}, set()
    for name, info in json.loads(meta["layers"]).items():
        shape, fmt = tuple(info["shape"]), info["mask_format"]
        numel = int(np.prod(shape, dtype=np.int64))
        if fmt == "dense":
            m, w = np.ones(shape, bool), raw[name][1].astype(np.float32).reshape(shape)
            used.add(name)
        else:
            stored = raw[f"{name}.{fmt}"][1].reshape(-1)
            if fmt == "bitmap":
                m = np.unpackbits(stored, bitorder="little")[:numel].astype(bool)
            else:
                m = np.zeros(numel, bool)
                m[stored.astype(np.int64)] = True
            m = m.reshape(shape)
            w = np.zeros(shape, np.float32)
            w[m] = raw[f"{name}.values"][1].reshape(-1).astype(np.float32)
            used |= {f"{name}.{fmt}", f"{name}.values"}
        masks[name], state[name] = m, w
    for name, (dtype, arr) in raw.items():
        if name not in used:
            state[name] = arr.astype(np.float32) if dtype in _FLOATING else arr
    return masks, state


def same_array(t: torch.Tensor, ref: np.ndarray) -> bool:
    """A tensor equals a reference array: dtype, shape and values (NaN equal to NaN)."""
    a = t.detach().numpy()
    return a.dtype == ref.dtype and a.shape == ref.shape and np.array_equal(
        a, ref, equal_nan=a.dtype.kind == "f")
