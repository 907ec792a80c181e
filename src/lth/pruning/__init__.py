"""Pure mask math: scores in, masks out; and the bridge to torch.nn.utils.prune and to files.

A ``Mask`` maps a parameter name to a boolean tensor of the parameter's shape (True = kept).

Rounding rule (documented so the pruned counts are exact and reproducible): at each level a layer
with ``r`` remaining weights and pruning rate ``p`` loses ``prune_count(r, p) = floor(p * r + 0.5)``
weights (round half up). With LeNet-300-100's 20% / 10% rates this reproduces the paper's
P_m = (265,200 * 0.8^n + 1,000 * 0.9^n) / 266,200 to within 0.01 percentage points.

Ties in score are broken by position: among equal scores the weight with the lower flat index
(row-major order; for global pruning, layers in the order given) is pruned first. This makes every
mask a deterministic function of the weights.

Modules: ``mask`` (the type, density, nesting, applying), ``counts`` (how many survive),
``scorers`` (registry: magnitude), ``selection`` (scores -> mask), ``torch_prune`` (to and from
torch.nn.utils.prune, :func:`winning_ticket` for any nn.Module), ``io`` (safetensors files).

>>> import copy, torch
>>> from torch import nn
>>> from lth.pruning import winning_ticket
>>> net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
>>> theta0 = copy.deepcopy(net)
>>> ticket, mask = winning_ticket(net, theta0, 0.2)  # after training net
>>> [int(m.sum()) for m in mask.values()]
[26, 6]
"""

from __future__ import annotations

from .counts import count_from_amount, keep_count_global, keep_counts_layerwise, paper_lenet_remaining, prune_count
from .io import load_mask, load_weights, save_mask, save_weights
from .mask import Mask, apply_mask, density, full_mask, is_nested, layer_stats
from .scorers import SCORERS, Scorer, get_scorer, magnitude, register_scorer, score, scorer_names
from .selection import (
    keep_largest,
    prune_global,
    prune_global_to_count,
    prune_layerwise,
    prune_layerwise_to_counts,
    random_mask_like,
    select_global,
    select_layerwise,
)
from .torch_prune import from_torch_prune, to_torch_prune, winning_ticket

__all__ = [
    "SCORERS",
    "Mask",
    "Scorer",
    "apply_mask",
    "count_from_amount",
    "density",
    "from_torch_prune",
    "full_mask",
    "get_scorer",
    "is_nested",
    "keep_count_global",
    "keep_counts_layerwise",
    "keep_largest",
    "layer_stats",
    "load_mask",
    "load_weights",
    "magnitude",
    "paper_lenet_remaining",
    "prune_count",
    "prune_global",
    "prune_global_to_count",
    "prune_layerwise",
    "prune_layerwise_to_counts",
    "random_mask_like",
    "register_scorer",
    "save_mask",
    "save_weights",
    "score",
    "scorer_names",
    "select_global",
    "select_layerwise",
    "to_torch_prune",
    "winning_ticket",
]
