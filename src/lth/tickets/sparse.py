"""Sparse inference: pruned Linear (and, opt-in, Conv2d) layers that only touch surviving weights.

A lottery ticket at 3.6% of its weights still runs as fast as the dense network when its pruned
weights are stored as zeros. This module swaps such layers for modules that hold the weight as a
compressed sparse row (CSR) matrix and multiply with MKL's sparse kernels (PyTorch's CPU build).
The numbers behind each choice below are in ``benchmarks/results/sparse.md`` (``benchmarks/sparse.py``).

* ``y = x @ W.T + b`` is computed transposed, ``y.T = addmm(b[:, None], W_csr, x.T)``: the CSR
  kernel then streams whole contiguous rows of ``x.T`` (one row per input feature, ``batch``
  values long) for every stored weight, which vectorises well. The other formulations are slower:
  ``torch.sparse.mm(W_csr, x.T).T + b`` (an extra pass for the bias), COO weights, dense
  ``x @ W_csr.T``, ``F.linear(x, W_csr, b)`` and 64-bit CSR indices.
* ``x.T`` must be contiguous, and transposing a row-major batch costs about as much as the sparse
  product itself (NumPy's transposing copy is the cheaper one, so it is used). The result is
  returned as the transposed *view* ``y.T`` of the ``(out, batch)`` product, so the next sparse
  layer finds its ``x.T`` already contiguous (elementwise layers such as ReLU keep that layout):
  a chain of sparse layers pays for one transpose, at the network input. That transpose is
  single-threaded, so the gain shrinks with more threads.
* Small batches do not pay: at batch 1 the per-call overhead of the sparse kernel (about 10 us
  per layer) eats the saving.
* Convolutions: ``unfold`` (im2col) alone costs more than oneDNN's whole dense 3x3 convolution, so
  :class:`SparseConv2d` is slower than the dense layer at every density. It exists for memory (it
  stores only the surviving weights) and is used only when asked for (``sparsify(..., convs=True)``).

These modules are for inference: they hold no ``nn.Parameter`` and are not meant to be trained.
Outputs equal the dense layer's up to floating-point summation order (tested).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_THRESHOLD",
    "SparseConv2d",
    "SparseLinear",
    "sparse_layers",
    "sparsify",
    "to_csr",
]

#: Layers whose fraction of surviving weights is below this become sparse in ``sparsify``: below
#: 15% density the CSR product (input transpose included) is faster than the dense GEMM on CPU at
#: batch 256 for LeNet-300-100's layers, with a margin for timing noise.
DEFAULT_THRESHOLD = 0.15


def to_csr(dense: torch.Tensor, pattern: torch.Tensor | None = None) -> torch.Tensor:
    """A 2-D tensor as a CSR tensor with 32-bit indices (measured faster than 64-bit ones).

    ``pattern`` (bool, same shape) chooses which entries are stored; default: the nonzeros. Storing
    a mask's pattern keeps a surviving weight that happens to be exactly zero, which is harmless.
    """
    if dense.dim() != 2:
        raise ValueError(f"to_csr needs a 2-D tensor, got shape {tuple(dense.shape)}")
    keep = (dense != 0) if pattern is None else pattern.to(torch.bool)
    if keep.shape != dense.shape:
        raise ValueError(f"pattern shape {tuple(keep.shape)} != tensor shape {tuple(dense.shape)}")
    rows, cols = keep.nonzero(as_tuple=True)  # row-major order, as CSR wants
    counts = torch.bincount(rows, minlength=dense.shape[0])
    crow = torch.zeros(dense.shape[0] + 1, dtype=torch.int64, device=dense.device)
    crow[1:] = torch.cumsum(counts, 0)
    if crow[-1] >= 2**31:
        raise ValueError("more than 2^31 stored weights do not fit 32-bit CSR indices")
    values = dense[rows, cols].contiguous()
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow.to(torch.int32), cols.to(torch.int32), values,
                                       size=tuple(dense.shape), device=dense.device)


def _feature_major(x: torch.Tensor) -> torch.Tensor:
    """``x.T`` (features x batch) as a contiguous tensor, with as little copying as possible."""
    xt = x.t()
    if xt.is_contiguous():  # x came from a previous sparse layer (or batch 1): no copy
        return xt
    if x.device.type == "cpu" and not x.requires_grad and x.dtype in (torch.float32, torch.float64):
        # NumPy's transposing copy measured ~1.5x faster than torch's x.t().contiguous().
        return torch.from_numpy(np.ascontiguousarray(x.numpy().T))
    return xt.contiguous()


class SparseLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored as CSR (surviving weights only); for inference.

    Build it with :meth:`from_dense` from an ``nn.Linear`` (optionally with the layer's mask).
    The output for a 2-D input is the transposed view of a contiguous ``(out, batch)`` tensor, so
    a following sparse layer needs no copy; call ``.contiguous()`` if you need row-major output.
    """

    def __init__(self, weight_csr: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        if weight_csr.layout != torch.sparse_csr:
            raise ValueError("SparseLinear needs a CSR weight; use SparseLinear.from_dense")
        self.out_features, self.in_features = (int(s) for s in weight_csr.shape)
        self.register_buffer("weight", weight_csr)
        # Stored as a column so that addmm broadcasts it over the batch for free.
        self.register_buffer("bias", None if bias is None else bias.detach().reshape(-1, 1).clone())

    @classmethod
    def from_dense(cls, layer: nn.Linear, mask: torch.Tensor | None = None) -> SparseLinear:
        """The sparse twin of ``layer``; ``mask`` (bool) selects the stored weights (default: the
        nonzeros). Weights outside the mask are dropped, i.e. treated as pruned."""
        w = layer.weight.detach()
        return cls(to_csr(w, mask), None if layer.bias is None else layer.bias.detach())

    @property
    def nnz(self) -> int:
        return int(self.weight.values().numel())

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.in_features * self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        if x.dim() != 2:
            x = x.reshape(-1, self.in_features)
        xt = _feature_major(x)
        if self.bias is not None:
            yt = torch.addmm(self.bias, self.weight, xt)
        else:
            yt = torch.sparse.mm(self.weight, xt)
        y = yt.t()
        return y if len(lead) == 1 else y.reshape(*lead, self.out_features)

    def to_dense(self) -> nn.Linear:
        """An equivalent ``nn.Linear`` (zeros where no weight is stored)."""
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.weight.to_dense())
            if self.bias is not None:
                layer.bias.copy_(self.bias.reshape(-1))
        return layer

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nnz={self.nnz}, density={self.density:.4f}")


class SparseConv2d(nn.Module):
    """A 2-D convolution as ``unfold`` (im2col) followed by a CSR product; for inference.

    Measured slower than the dense convolution at every density down to 2% on the benchmark CPU
    (im2col alone costs more than oneDNN's whole convolution); use it for memory, not speed.
    Supports ``groups == 1`` and zero padding (any stride, padding and dilation).
    """

    def __init__(self, weight_csr: torch.Tensor, bias: torch.Tensor | None, *, in_channels: int,
                 kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int]):
        super().__init__()
        self.out_channels = int(weight_csr.shape[0])
        self.in_channels = in_channels
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        self.register_buffer("weight", weight_csr)
        self.register_buffer("bias", None if bias is None else bias.detach().reshape(-1, 1).clone())

    @staticmethod
    def supports(conv: nn.Conv2d) -> bool:
        """Whether ``conv`` can be converted: groups=1, zero padding given as numbers."""
        return conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, mask: torch.Tensor | None = None) -> SparseConv2d:
        if not cls.supports(conv):
            raise ValueError("SparseConv2d supports groups=1, padding_mode='zeros' and numeric "
                             f"padding only; got {conv}")
        w = conv.weight.detach().reshape(conv.out_channels, -1)
        m = None if mask is None else mask.reshape(conv.out_channels, -1)
        return cls(to_csr(w, m), None if conv.bias is None else conv.bias.detach(),
                   in_channels=conv.in_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                   padding=conv.padding, dilation=conv.dilation)

    @property
    def nnz(self) -> int:
        return int(self.weight.values().numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding,
                        stride=self.stride)  # (N, C*kh*kw, L)
        k, spatial = cols.shape[1], cols.shape[2]
        cols = cols.permute(1, 0, 2).reshape(k, n * spatial)
        if self.bias is not None:
            y = torch.addmm(self.bias, self.weight, cols)
        else:
            y = torch.sparse.mm(self.weight, cols)
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        return y.view(self.out_channels, n, ho, wo).permute(1, 0, 2, 3)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, nnz={self.nnz}")


def _density(weight: torch.Tensor, mask: torch.Tensor | None) -> float:
    kept = int(mask.sum()) if mask is not None else int((weight != 0).sum())
    return kept / max(1, weight.numel())


def sparsify(model: nn.Module, threshold: float | None = None, *,
             masks: Mapping[str, torch.Tensor] | None = None, convs: bool = False,
             inplace: bool = False) -> nn.Module:
    """Replace Linear layers (and Conv2d layers when ``convs``) whose density is below
    ``threshold`` by :class:`SparseLinear` / :class:`SparseConv2d`.

    Args:
        model: any module; its layers are found by type, at any depth.
        threshold: density (fraction of weights kept) below which a layer turns sparse; default
            :data:`DEFAULT_THRESHOLD`, measured on CPU at batch 256. ``1.0`` turns every layer
            that has at least one pruned weight sparse.
        masks: ``{parameter name: bool mask}`` (e.g. a ticket's masks); a layer's density and
            stored pattern then come from its mask, otherwise from its nonzero weights.
        convs: also convert ``nn.Conv2d`` (slower than dense on the measured CPU; see module doc).
        inplace: modify ``model`` itself instead of a deep copy.

    Returns the converted module, in eval mode.
    """
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold = {threshold}: must be in (0, 1] (a fraction of weights kept)")
    out = model if inplace else copy.deepcopy(model)
    masks = dict(masks or {})
    replace: list[tuple[str, nn.Module]] = []
    for name, mod in out.named_modules():
        kind = SparseLinear if isinstance(mod, nn.Linear) else (
            SparseConv2d if convs and isinstance(mod, nn.Conv2d) else None)
        if kind is None:
            continue
        if kind is SparseConv2d and not SparseConv2d.supports(mod):
            continue
        mask = masks.get(f"{name}.weight" if name else "weight")
        if _density(mod.weight, mask) < threshold:
            replace.append((name, kind.from_dense(mod, mask)))
    for name, new in replace:
        if not name:  # the model itself is a single layer
            return new.eval()
        parent_name, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, child, new)
    return out.eval()


def sparse_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of the sparse layers in ``model`` (what ``sparsify`` converted)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (SparseLinear, SparseConv2d))}
