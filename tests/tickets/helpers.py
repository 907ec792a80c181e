"""Helpers for the tickets tests: a run's stored masks, an independent header parser, the library's reader."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
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


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder in which this process cannot create files: a read-only folder or, for root (whom
    file permissions do not stop), /sys, which refuses new files to everyone. Skips the calling
    test where neither refuses."""
    import pytest

    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    for folder in (ro, Path("/sys")):
        probe = folder / "lth-probe"
        try:
            probe.open("wb").close()
        except OSError:
            return folder
        probe.unlink()
    pytest.skip("no folder here refuses new files (root, and /sys is writable)")


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
