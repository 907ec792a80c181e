"""Scores + surviving mask + how many to keep -> the next mask.

Ties in score are broken by position: among equal scores the weight with the lower flat index
(row-major order; for global pruning, layers concatenated in the order of ``names``) is pruned
first. This makes every mask a deterministic function of the scores. Already pruned weights are
never revived, whatever their score: masks only shrink (paper Sec. 1, iterative pruning).

The ``prune_*`` functions take weights and a scorer name (``"magnitude"``, the paper's |w|, by
default); the ``select_*`` functions take scores directly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .counts import keep_count_global, keep_counts_layerwise
from .mask import Mask
from .scorers import score


def keep_largest(scores: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Among entries where ``mask`` is True keep the ``keep`` largest scores (flat tensors).

    The entries pruned are those with the smallest scores; ties go to the lower index first
    (a stable ascending sort). Returns a new mask; the inputs are not modified.

    >>> keep_largest(torch.tensor([1.0, 3.0, 1.0, 2.0]), torch.ones(4, dtype=torch.bool), 2)
    tensor([False,  True, False,  True])
    """
    alive = mask.nonzero().squeeze(1)
    if keep > alive.numel() or keep < 0:
        raise ValueError(f"cannot keep {keep} of {alive.numel()} surviving weights")
    order = torch.sort(scores[alive], stable=True).indices  # ascending: smallest pruned first
    drop = alive[order[: alive.numel() - keep]]
    out = mask.clone()
    out[drop] = False
    return out


def select_layerwise(scores: Mapping[str, torch.Tensor], mask: Mask, keep: Mapping[str, int]) -> Mask:
    """Keep exactly ``keep[name]`` highest-scoring surviving weights in each layer of ``mask``.

    >>> select_layerwise({"a": torch.tensor([0.1, 0.9, 0.5])}, {"a": torch.ones(3, dtype=torch.bool)}, {"a": 1})
    {'a': tensor([False,  True, False])}
    """
    out: Mask = {}
    for name, m in mask.items():
        flat = keep_largest(scores[name].to(m.device).flatten(), m.flatten(), keep[name])
        out[name] = flat.view_as(m)
    return out


def select_global(scores: Mapping[str, torch.Tensor], mask: Mask, names: list[str], keep: int) -> Mask:
    """Keep the ``keep`` highest-scoring surviving weights across ``names`` (one threshold).

    Layers of ``mask`` that are not in ``names`` are copied unchanged (e.g. the output layer of
    ResNet-20/VGG-19, which the paper leaves dense in App. I).

    >>> m = {"a": torch.ones(2, dtype=torch.bool), "b": torch.ones(2, dtype=torch.bool)}
    >>> select_global({"a": torch.tensor([4.0, 1.0]), "b": torch.tensor([3.0, 2.0])}, m, ["a", "b"], 2)
    {'a': tensor([ True, False]), 'b': tensor([ True, False])}
    """
    if not names:
        return {k: v.clone() for k, v in mask.items()}
    flat_scores = torch.cat([scores[n].flatten().to(mask[n].device) for n in names])
    alive = torch.cat([mask[n].flatten() for n in names])
    kept = keep_largest(flat_scores, alive, keep)
    out = {k: v.clone() for k, v in mask.items()}
    offset = 0
    for n in names:
        size = mask[n].numel()
        out[n] = kept[offset: offset + size].view_as(mask[n])
        offset += size
    return out


def prune_layerwise_to_counts(weights: Mapping[str, torch.Tensor], mask: Mask, keep: Mapping[str, int],
                              *, scorer: str = "magnitude") -> Mask:
    """Keep exactly ``keep[name]`` best-scoring (default: largest-magnitude) survivors per layer.

    >>> w = {"a": torch.tensor([0.5, -2.0, 1.0])}
    >>> prune_layerwise_to_counts(w, {"a": torch.ones(3, dtype=torch.bool)}, {"a": 2})
    {'a': tensor([False,  True,  True])}
    """
    return select_layerwise(score(scorer, {n: weights[n] for n in mask}), mask, keep)


def prune_layerwise(weights: Mapping[str, torch.Tensor], mask: Mask, rates: Mapping[str, float],
                    *, scorer: str = "magnitude") -> Mask:
    """One level of layer-wise pruning: each layer loses ``rates[name]`` of its survivors.

    Layers missing from ``rates`` (or at rate 0) are left unchanged. Counts follow
    :func:`lth.pruning.prune_count` (round half up).

    >>> w = {"a": torch.tensor([[0.5, -0.1, 3.0], [-2.0, 0.05, 1.0]])}
    >>> prune_layerwise(w, {"a": torch.ones(2, 3, dtype=torch.bool)}, {"a": 0.5})["a"]
    tensor([[False, False,  True],
            [ True, False,  True]])
    """
    return prune_layerwise_to_counts(weights, mask, keep_counts_layerwise(mask, rates), scorer=scorer)


def prune_global_to_count(weights: Mapping[str, torch.Tensor], mask: Mask, names: list[str], keep: int,
                          *, scorer: str = "magnitude") -> Mask:
    """Keep the ``keep`` best-scoring survivors across ``names``; other layers are copied unchanged.

    >>> w = {"a": torch.tensor([4.0, 1.0]), "b": torch.tensor([3.0, 2.0])}
    >>> prune_global_to_count(w, {n: torch.ones(2, dtype=torch.bool) for n in w}, ["a", "b"], 3)
    {'a': tensor([ True, False]), 'b': tensor([True, True])}
    """
    if not names:
        return {k: v.clone() for k, v in mask.items()}
    return select_global(score(scorer, {n: weights[n] for n in names}), mask, names, keep)


def prune_global(weights: Mapping[str, torch.Tensor], mask: Mask, rate: float, names: list[str],
                 *, scorer: str = "magnitude") -> Mask:
    """One level of global pruning over ``names`` at ``rate`` (paper Sec. 4: deep networks).

    >>> w = {"a": torch.tensor([4.0, 1.0]), "b": torch.tensor([3.0, 2.0])}
    >>> prune_global(w, {n: torch.ones(2, dtype=torch.bool) for n in w}, 0.5, ["a", "b"])
    {'a': tensor([ True, False]), 'b': tensor([ True, False])}
    """
    return prune_global_to_count(weights, mask, names, keep_count_global(mask, rate, names), scorer=scorer)


def random_mask_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A uniformly random mask with exactly the same number of survivors in every layer.

    The "random pruning" control of the paper (Sec. 2): same per-layer sizes, random positions.
    Layers are drawn in sorted-name order, so the draw does not depend on dict insertion order.

    >>> m = {"a": torch.tensor([True, False, True, False])}
    >>> int(random_mask_like(m, torch.Generator().manual_seed(0))["a"].sum())
    2
    """
    out: Mask = {}
    for name in sorted(mask):
        m = mask[name]
        keep = int(m.sum())
        perm = torch.randperm(m.numel(), generator=generator)[:keep]
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[perm] = True
        out[name] = flat.view(m.shape).to(m.device)
    return {name: out[name] for name in mask}
