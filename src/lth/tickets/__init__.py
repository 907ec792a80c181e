"""Compact lottery tickets: export to / import from one sparse safetensors file, sparse inference.

* :func:`export_ticket` writes a finished unit of a run as a file holding only the surviving
  weights and each layer's mask (:mod:`lth.tickets.format` defines the file, :mod:`lth.tickets.masks`
  the mask encodings); :func:`read_ticket` decodes one, :func:`load_ticket` rebuilds the model.
* :func:`sparsify`, :class:`SparseLinear`, :class:`SparseConv2d` (:mod:`lth.tickets.sparse`) run
  pruned layers with sparse kernels.

Importing this package does not import torch (the command line imports it to build its parser);
the sparse-module names load :mod:`lth.tickets.sparse`, and with it torch, on first use.
"""

from __future__ import annotations

from typing import Any

from .errors import ExportError, TicketFormatError
from .export import (
    WEIGHTS,
    ExportSize,
    Ticket,
    default_export_path,
    dense_checkpoint_bytes,
    export_size,
    export_ticket,
    load_ticket,
    read_ticket,
)
from .format import DTYPES
from .masks import MASK_FORMATS

__all__ = [
    "DEFAULT_THRESHOLD",
    "DTYPES",
    "MASK_FORMATS",
    "WEIGHTS",
    "ExportError",
    "ExportSize",
    "SparseConv2d",
    "SparseLinear",
    "Ticket",
    "TicketFormatError",
    "default_export_path",
    "dense_checkpoint_bytes",
    "export_size",
    "export_ticket",
    "load_ticket",
    "read_ticket",
    "sparse_layers",
    "sparsify",
]

_SPARSE = frozenset({"DEFAULT_THRESHOLD", "SparseConv2d", "SparseLinear", "sparse_layers", "sparsify"})


def __getattr__(name: str) -> Any:
    # torch is imported on first use of a sparse-module name, not by `import lth.tickets`
    if name in _SPARSE:
        from . import sparse

        return getattr(sparse, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
