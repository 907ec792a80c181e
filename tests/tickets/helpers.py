"""Helpers for the tickets tests: a run's stored masks, an independent header parser, the library's reader."""

from __future__ import annotations

import json
import struct
from pathlib import Path

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
