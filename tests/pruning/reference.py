"""Independent references for the mask math, shared by the pruning tests and the pruning-plan tests.

A brute-force numpy restatement of the documented rule (prune floor(p * r + 0.5) of the r survivors,
smallest |w| first, ties to the lower flat index, global = layers concatenated in the order of
``names``), and small generators of test weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LENET_SHAPES = {"hidden.0.weight": (300, 784), "hidden.1.weight": (100, 300), "out.weight": (10, 100)}

# P_m (percent of LeNet-300-100's weights remaining) after n rounds, as the paper prints them.
PAPER_PM = {3: 51.28, 7: 21.07, 9: 13.52, 12: 6.95, 15: 3.58, 16: 2.87, 18: 1.85}


def ref_count(remaining: int, rate: float) -> int:
    """The documented rounding rule, restated: floor(p * r + 0.5)."""
    return math.floor(rate * remaining + 0.5)


def np_prune(w: np.ndarray, m: np.ndarray, n_prune: int) -> np.ndarray:
    """Brute force: among survivors of ``m`` drop the ``n_prune`` smallest |w| (stable order)."""
    flat_m = m.reshape(-1).copy()
    alive = np.flatnonzero(flat_m)
    order = np.argsort(np.abs(w.reshape(-1))[alive], kind="stable")
    flat_m[alive[order[:n_prune]]] = False
    return flat_m.reshape(m.shape)


def np_prune_global(ws: list[np.ndarray], ms: list[np.ndarray], n_prune: int) -> list[np.ndarray]:
    """Global brute force over the concatenation of the layers in the given order."""
    cat_w = np.concatenate([w.reshape(-1) for w in ws]) if ws else np.zeros(0)
    cat_m = np.concatenate([m.reshape(-1) for m in ms]) if ms else np.zeros(0, dtype=bool)
    cat_m = np_prune(cat_w, cat_m, n_prune)
    out, off = [], 0
    for m in ms:
        out.append(cat_m[off: off + m.size].reshape(m.shape))
        off += m.size
    return out


def rand_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) for n, s in shapes.items()}


def counts(mask: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in mask.items()}


def assert_no_ties(w: torch.Tensor) -> None:
    a = w.detach().abs().flatten()
    assert torch.unique(a).numel() == a.numel(), "test precondition: continuous weights, no ties"
