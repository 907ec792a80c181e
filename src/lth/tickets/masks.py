"""The mask codec of the ticket file: a boolean mask as a packed bitmap or as a list of flat indices.

``bitmap``: the row-major flattened mask packed with ``numpy.packbits(..., bitorder="little")``, so
bit ``i`` (least significant first) of byte ``j`` is element ``8 j + i``; pad bits are 0. It costs
one bit per weight whatever the density.

``indices``: the sorted flat row-major positions of the kept weights, in the narrowest integer type
that holds every position (int16 up to 2^15 elements, int32 up to 2^31, else int64; a reader
refuses any other type). It costs
``nnz * index bytes``, so it wins below density ``1 / (8 * index bytes)``: 6.25% with int16, 3.1%
with int32.

``dense``: no mask stored (every weight kept); only :func:`choose_mask_format` picks it, for ``auto``.

numpy and torch are imported inside the functions: the command line imports this package and must
start without them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .errors import ExportError, TicketFormatError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MASK_FORMATS",
    "STORED_MASK_FORMATS",
    "choose_mask_format",
    "decode_mask",
    "encode_mask",
    "index_dtype",
    "mask_bytes",
]

#: What a caller may ask for: ``auto`` = the smaller of the two encodings, per layer.
MASK_FORMATS = ("auto", "bitmap", "indices")
#: What a file may hold for a layer.
STORED_MASK_FORMATS = ("dense", "bitmap", "indices")


def index_dtype(numel: int) -> torch.dtype:
    """The narrowest integer dtype that holds every flat position of a tensor of ``numel`` elements."""
    import torch

    if numel <= 2**15:
        return torch.int16
    if numel <= 2**31:
        return torch.int32
    return torch.int64


def mask_bytes(numel: int, nnz: int, fmt: str) -> int:
    """Bytes the mask of a layer takes in format ``fmt`` (0 for ``dense``)."""
    import torch

    if fmt == "bitmap":
        return (numel + 7) // 8
    if fmt == "indices":
        return nnz * torch.empty((), dtype=index_dtype(numel)).element_size()
    return 0


def choose_mask_format(numel: int, nnz: int, requested: str) -> str:
    """``bitmap``/``indices`` as requested; for ``auto`` the smaller of the two per layer
    (ties go to the bitmap), or ``dense`` when every weight is kept (a mask of all ones costs
    bytes and says nothing)."""
    if requested != "auto":
        return requested
    if nnz == numel:
        return "dense"
    return "indices" if mask_bytes(numel, nnz, "indices") < mask_bytes(numel, nnz, "bitmap") else "bitmap"


def encode_mask(mask: torch.Tensor, fmt: str) -> torch.Tensor:
    """The mask as a packed bitmap (``bitmap``) or sorted flat indices (``indices``)."""
    import numpy as np
    import torch

    flat = mask.detach().to("cpu", torch.bool).reshape(-1)
    if fmt == "bitmap":
        return torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
    if fmt == "indices":
        return flat.nonzero().reshape(-1).to(index_dtype(flat.numel()))
    raise ExportError(f"unknown mask format {fmt!r}; choose one of {', '.join(MASK_FORMATS)}")


def decode_mask(fmt: str, stored: torch.Tensor | None, shape: tuple[int, ...],
                name: str = "?") -> torch.Tensor:
    """Inverse of :func:`encode_mask` (``dense`` gives all ones); checks the stored data and
    raises :class:`TicketFormatError` naming the layer when it does not describe a mask of ``shape``."""
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
        bits = np.unpackbits(stored.reshape(-1).numpy(), bitorder="little")
        if bits[numel:].any():
            raise TicketFormatError(f"layer {name}: bitmap pad bits are not zero")
        return torch.from_numpy(bits[:numel].astype(bool)).reshape(shape)
    if fmt == "indices":
        if stored.dtype != index_dtype(numel):
            raise TicketFormatError(f"layer {name}: indices of a layer of {numel} weights must be "
                                    f"{index_dtype(numel)}, got {stored.dtype}")
        idx = stored.to(torch.int64).reshape(-1)
        if idx.numel() and (idx[0] < 0 or idx[-1] >= numel or bool((idx[1:] <= idx[:-1]).any())):
            raise TicketFormatError(f"layer {name}: indices must be strictly increasing in [0, {numel})")
        m = torch.zeros(numel, dtype=torch.bool)
        m[idx] = True
        return m.reshape(shape)
    raise TicketFormatError(f"layer {name}: unknown mask format {fmt!r}")
