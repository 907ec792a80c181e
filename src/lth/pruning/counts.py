"""How many weights survive: the rounding rules, per layer and pooled.

lth's rule: at each level a layer with ``r`` remaining weights and pruning rate ``p`` loses
``prune_count(r, p) = floor(p * r + 0.5)`` weights (round half up). With LeNet-300-100's 20% / 10%
rates this reproduces the paper's P_m = (265,200 * 0.8^n + 1,000 * 0.9^n) / 266,200 (Fig. 3-4)
to within 0.01 percentage points.

torch.nn.utils.prune's rule (:func:`count_from_amount`): an int ``amount`` is a count, a float
the fraction ``round(amount * r)`` with Python's round-half-to-even; :func:`lth.pruning.winning_ticket`
follows it so its masks agree with ``prune.l1_unstructured`` element by element.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from .mask import Mask


def prune_count(remaining: int, rate: float) -> int:
    """Number of weights pruned from ``remaining`` at ``rate`` (round half up).

    >>> prune_count(5, 0.1), prune_count(235_200, 0.2)
    (1, 47040)
    """
    if not 0 <= rate < 1:
        raise ValueError(f"pruning rate {rate!r} must be in [0, 1)")
    return int(math.floor(rate * remaining + 0.5))


def count_from_amount(amount: int | float, remaining: int) -> int:
    """Number of weights pruned from ``remaining`` for torch.nn.utils.prune's ``amount``.

    An int is the count itself (at most ``remaining``); a float in [0, 1] is a fraction, rounded
    half to even as torch does.

    >>> count_from_amount(0.25, 10), count_from_amount(0.35, 10), count_from_amount(3, 10)
    (2, 4, 3)
    """
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"amount must be an int or a float, got {amount!r}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"amount {amount} must be a non-negative int")
        if amount > remaining:
            raise ValueError(f"amount {amount} is more than the {remaining} weights left to prune")
        return int(amount)
    if not 0.0 <= amount <= 1.0:  # NaN fails this too
        raise ValueError(f"amount {amount!r} must be a float in [0, 1] or an int count")
    return round(amount * remaining)


def keep_counts_layerwise(mask: Mask, rates: Mapping[str, float], levels: int = 1) -> dict[str, int]:
    """Per-layer surviving counts after ``levels`` rounds of layer-wise pruning from ``mask``.

    Layers missing from ``rates`` keep all their survivors.

    >>> import torch
    >>> keep_counts_layerwise({"a": torch.ones(1000, dtype=torch.bool)}, {"a": 0.2}, levels=2)
    {'a': 640}
    """
    counts = {}
    for name, m in mask.items():
        r = int(m.sum())
        for _ in range(levels):
            r -= prune_count(r, rates.get(name, 0.0))
        counts[name] = r
    return counts


def keep_count_global(mask: Mask, rate: float, names: list[str], levels: int = 1) -> int:
    """Total surviving count over ``names`` after ``levels`` rounds of global pruning.

    >>> import torch
    >>> m = {"a": torch.ones(600, dtype=torch.bool), "b": torch.ones(400, dtype=torch.bool)}
    >>> keep_count_global(m, 0.2, ["a", "b"], levels=2)
    640
    """
    r = sum(int(mask[n].sum()) for n in names)
    for _ in range(levels):
        r -= prune_count(r, rate)
    return r


def paper_lenet_remaining(n: int) -> float:
    """Frankle & Carbin's P_m for LeNet-300-100 after n rounds (hidden 20%, output 10%; Fig. 3).

    >>> round(100 * paper_lenet_remaining(3), 2)
    51.28
    """
    return (265_200 * 0.8**n + 1_000 * 0.9**n) / 266_200
