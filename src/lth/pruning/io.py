"""Masks and weights on disk as safetensors files (no pickle: loading runs no code).

Each file's metadata says what it holds (``lth.kind`` = ``mask`` or ``weights``) and the tensor
order (``lth.names``, JSON), since safetensors itself stores tensors sorted by name. Masks are
stored as bool tensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from .mask import Mask

KIND_KEY = "lth.kind"
NAMES_KEY = "lth.names"
FORMAT_KEY = "lth.format"
FORMAT_VERSION = "1"
MASK_KIND = "mask"
WEIGHTS_KIND = "weights"


def _write(tensors: dict[str, torch.Tensor], path: str | os.PathLike, kind: str) -> None:
    meta = {KIND_KEY: kind, FORMAT_KEY: FORMAT_VERSION, NAMES_KEY: json.dumps(list(tensors))}
    data = st_save(tensors, metadata=meta)
    path = Path(path)
    # write beside the target and rename: a crash never leaves a half-written file under its name
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            stored = f.keys()  # a safe_open handle is not iterable itself
            tensors = {k: f.get_tensor(k) for k in stored}
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own error type for malformed files
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    order = json.loads(meta[NAMES_KEY]) if NAMES_KEY in meta else sorted(tensors)
    if sorted(order) != sorted(tensors):
        raise ValueError(f"{path}: the metadata's tensor list does not match the tensors stored")
    return {k: tensors[k] for k in order}, meta


def _kind_error(path: str | os.PathLike, found: str | None, wanted: str) -> ValueError:
    what = f"an lth {found} file" if found else "a safetensors file without lth metadata"
    return ValueError(f"{path} is {what}, not an lth {wanted} file")


def save_mask(mask: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write ``mask`` (name -> bool tensor; 0/1 tensors are accepted) to a safetensors file.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "mask.safetensors")
    >>> save_mask({"fc.weight": torch.tensor([[True, False]])}, p)
    >>> load_mask(p)
    {'fc.weight': tensor([[ True, False]])}
    """
    tensors = {}
    for name, m in mask.items():
        if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"mask entry {name!r} holds values other than 0 and 1")
        tensors[name] = m.detach().to("cpu", torch.bool).contiguous()
    _write(tensors, path, MASK_KIND)


def load_mask(path: str | os.PathLike) -> Mask:
    """Read a mask written by :func:`save_mask`, in its original name order (bool tensors on CPU).

    A file of another kind (e.g. weights) is a ValueError saying what it holds.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "mask.safetensors")
    >>> save_mask({"b": torch.tensor([True]), "a": torch.tensor([False, True])}, p)
    >>> list(load_mask(p))  # the order it was saved in
    ['b', 'a']
    """
    tensors, meta = _read(path)
    if meta.get(KIND_KEY) != MASK_KIND:
        raise _kind_error(path, meta.get(KIND_KEY), MASK_KIND)
    bad = [n for n, t in tensors.items() if t.dtype != torch.bool]
    if bad:
        raise ValueError(f"{path}: mask entries {bad} are not bool tensors")
    return tensors


def save_weights(weights: Mapping[str, torch.Tensor] | nn.Module, path: str | os.PathLike) -> None:
    """Write a state dict (or ``module.state_dict()``) to a safetensors file.

    Tensors are copied to the CPU; tensors that share storage (tied weights) are stored separately.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "weights.safetensors")
    >>> save_weights(nn.Linear(3, 2), p)
    >>> list(load_weights(p, nn.Linear(3, 2)))
    ['weight', 'bias']
    """
    sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
    bad = [n for n, t in sd.items() if not isinstance(t, torch.Tensor)]
    if bad:
        raise TypeError(f"state dict entries {bad} are not tensors")
    # clone: safetensors refuses tensors that share memory, as tied or view parameters do
    _write({n: t.detach().to("cpu").contiguous().clone() for n, t in sd.items()}, path, WEIGHTS_KIND)


def _fit_error(sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    missing = [n for n in expected if n not in sd]
    unexpected = [n for n in sd if n not in expected]
    shapes = [f"{n}: file {tuple(sd[n].shape)} vs model {tuple(expected[n].shape)}"
              for n in sd if n in expected and tuple(sd[n].shape) != tuple(expected[n].shape)]
    parts = []
    if missing:
        parts.append(f"missing from the file: {missing}")
    if unexpected:
        parts.append(f"unexpected in the file: {unexpected}")
    if shapes:
        parts.append(f"shapes that differ: {shapes}")
    if any(n.endswith(("_orig", "_mask")) for n in unexpected + missing):
        parts.append("(one side was pruned with torch.nn.utils.prune; prune.remove makes it a plain module)")
    return "; ".join(parts) or None


def load_weights(path: str | os.PathLike, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Read a weights file (CPU tensors, original order); with ``model``, also load them into it.

    Loading checks names and shapes first and raises one ValueError naming every missing name,
    every unexpected name and every shape that differs; the model is then left unchanged. A plain
    safetensors file (no lth metadata) is read too; an lth file of another kind is refused.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "weights.safetensors")
    >>> save_weights({"weight": torch.ones(2, 3)}, p)
    >>> load_weights(p, nn.Linear(3, 2))
    Traceback (most recent call last):
    ...
    ValueError: ... does not fit Linear: missing from the file: ['bias']
    """
    sd, meta = _read(path)
    kind = meta.get(KIND_KEY)
    if kind is not None and kind != WEIGHTS_KIND:
        raise _kind_error(path, kind, WEIGHTS_KIND)
    if model is not None:
        problem = _fit_error(sd, model.state_dict())
        if problem:
            raise ValueError(f"{path} does not fit {type(model).__name__}: {problem}")
        model.load_state_dict(sd)
    return sd
