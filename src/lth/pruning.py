"""Pure mask math: scores in, masks out. No models, no training, no files.

A ``Mask`` maps a parameter name to a boolean tensor of the parameter's shape (True = kept).

Rounding rule (documented so the pruned counts are exact and reproducible): at each level a layer
with ``r`` remaining weights and pruning rate ``p`` loses ``prune_count(r, p) = floor(p * r + 0.5)``
weights (round half up). With LeNet-300-100's 20% / 10% rates this reproduces the paper's
P_m = (265,200 * 0.8^n + 1,000 * 0.9^n) / 266,200 to within 0.01 percentage points.

Ties in magnitude are broken by position: among equal scores the weight with the lower flat index
(row-major order; for global pruning, layers in model order) is pruned first. This makes every
mask a deterministic function of the weights.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

Mask = dict[str, torch.Tensor]


def prune_count(remaining: int, rate: float) -> int:
    """Number of weights pruned from ``remaining`` at ``rate`` (round half up)."""
    if not 0 <= rate < 1:
        raise ValueError(f"pruning rate {rate!r} must be in [0, 1)")
    return int(math.floor(rate * remaining + 0.5))


def full_mask(params: Mapping[str, torch.Tensor]) -> Mask:
    """The dense mask (everything kept) for the given parameters."""
    return {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}


def _keep_largest(scores: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Among entries where ``mask`` is True keep the ``keep`` largest scores (flat tensors).

    The weights pruned are the smallest ones; ties go to the lower index first (stable sort).
    """
    alive = mask.nonzero().squeeze(1)
    if keep > alive.numel() or keep < 0:
        raise ValueError(f"cannot keep {keep} of {alive.numel()} surviving weights")
    order = torch.sort(scores[alive], stable=True).indices  # ascending: smallest pruned first
    drop = alive[order[: alive.numel() - keep]]
    out = mask.clone()
    out[drop] = False
    return out


def keep_counts_layerwise(mask: Mask, rates: Mapping[str, float], levels: int = 1) -> dict[str, int]:
    """Per-layer surviving counts after ``levels`` rounds of layer-wise pruning from ``mask``."""
    counts = {}
    for name, m in mask.items():
        r = int(m.sum())
        for _ in range(levels):
            r -= prune_count(r, rates.get(name, 0.0))
        counts[name] = r
    return counts


def keep_count_global(mask: Mask, rate: float, names: list[str], levels: int = 1) -> int:
    """Total surviving count over ``names`` after ``levels`` rounds of global pruning."""
    r = sum(int(mask[n].sum()) for n in names)
    for _ in range(levels):
        r -= prune_count(r, rate)
    return r


def prune_layerwise_to_counts(
    weights: Mapping[str, torch.Tensor], mask: Mask, keep: Mapping[str, int]
) -> Mask:
    """Keep exactly ``keep[name]`` largest-magnitude surviving weights in each layer."""
    out: Mask = {}
    for name, m in mask.items():
        w = weights[name].detach().to(m.device)
        flat = _keep_largest(w.abs().flatten(), m.flatten(), keep[name])
        out[name] = flat.view_as(m)
    return out


def prune_layerwise(weights: Mapping[str, torch.Tensor], mask: Mask,
                    rates: Mapping[str, float]) -> Mask:
    """One level of layer-wise magnitude pruning: each layer loses ``rates[name]`` of its survivors.

    Layers missing from ``rates`` (or at rate 0) are left unchanged.
    """
    return prune_layerwise_to_counts(weights, mask, keep_counts_layerwise(mask, rates))


def prune_global_to_count(
    weights: Mapping[str, torch.Tensor], mask: Mask, names: list[str], keep: int
) -> Mask:
    """Keep the ``keep`` largest-magnitude surviving weights across ``names`` (one threshold).

    Layers of ``mask`` that are not in ``names`` are copied unchanged (e.g. the output layer of
    ResNet-20/VGG-19, which the paper leaves dense).
    """
    if not names:
        return {k: v.clone() for k, v in mask.items()}
    scores = torch.cat([weights[n].detach().abs().flatten().to(mask[n].device) for n in names])
    alive = torch.cat([mask[n].flatten() for n in names])
    kept = _keep_largest(scores, alive, keep)
    out = {k: v.clone() for k, v in mask.items()}
    offset = 0
    for n in names:
        size = mask[n].numel()
        out[n] = kept[offset: offset + size].view_as(mask[n])
        offset += size
    return out


def prune_global(weights: Mapping[str, torch.Tensor], mask: Mask, rate: float,
                 names: list[str]) -> Mask:
    """One level of global magnitude pruning over ``names`` at ``rate``."""
    return prune_global_to_count(weights, mask, names, keep_count_global(mask, rate, names))


def random_mask_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A uniformly random mask with exactly the same number of survivors in every layer.

    The "random pruning" control of the paper (Sec. 2): same per-layer sizes, random positions.
    """
    out: Mask = {}
    for name in sorted(mask):  # sorted: the draw does not depend on dict insertion order
        m = mask[name]
        keep = int(m.sum())
        perm = torch.randperm(m.numel(), generator=generator)[:keep]
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[perm] = True
        out[name] = flat.view(m.shape).to(m.device)
    return {name: out[name] for name in mask}


def density(mask: Mask) -> float:
    """Fraction of masked weights that survive (the paper's P_m over prunable weights)."""
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / total if total else 1.0


def layer_stats(mask: Mask) -> dict[str, dict[str, int | float]]:
    return {
        n: {"total": m.numel(), "remaining": int(m.sum()), "density": float(m.float().mean())}
        for n, m in mask.items()
    }


def is_nested(inner: Mask, outer: Mask) -> bool:
    """True when every weight kept by ``inner`` is also kept by ``outer``."""
    return all(bool((inner[n] & ~outer[n]).sum() == 0) for n in inner)


def paper_lenet_remaining(n: int) -> float:
    """Frankle & Carbin's P_m for LeNet-300-100 after n rounds (hidden 20%, output 10%)."""
    return (265_200 * 0.8**n + 1_000 * 0.9**n) / 266_200
