"""lth.pruning.counts: the round-half-up rule, its composition over levels, torch's amount rule."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune as tprune

from lth.pruning import count_from_amount, keep_count_global, keep_counts_layerwise, paper_lenet_remaining, prune_count
from tests.pruning.reference import PAPER_PM, ref_count


@pytest.mark.parametrize(
    "remaining, rate, expected",
    [
        (0, 0.2, 0),
        (1, 0.2, 0),  # 0.2 -> 0
        (3, 0.2, 1),  # 0.6 -> 1
        (5, 0.1, 1),  # 0.5 -> 1 (round half up)
        (10, 0.25, 3),  # 2.5 -> 3
        (4, 0.125, 1),  # 0.5 -> 1
        (3, 0.5, 2),  # 1.5 -> 2
        (7, 0.5, 4),  # 3.5 -> 4
        (235_200, 0.2, 47_040),
        (1_000, 0.1, 100),
        (900, 0.1, 90),
        (9, 0.1, 1),  # 0.9 -> 1
        (4, 0.1, 0),  # 0.4 -> 0
        (100, 0.0, 0),
        (2, 0.999, 2),
    ],
)
def test_prune_count_round_half_up(remaining, rate, expected):
    assert prune_count(remaining, rate) == expected
    assert isinstance(prune_count(remaining, rate), int)


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan")])
def test_prune_count_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError):
        prune_count(10, rate)


def test_keep_count_helpers_compose_over_levels():
    mask = {"a": torch.ones(1000, dtype=torch.bool), "b": torch.ones(37, dtype=torch.bool)}
    rates = {"a": 0.2, "b": 0.5}
    r = {"a": 1000, "b": 37}
    for lv in range(1, 8):
        for n in r:
            r[n] -= ref_count(r[n], rates[n])
        assert keep_counts_layerwise(mask, rates, levels=lv) == r
    tot = 1037
    for lv in range(1, 8):
        tot -= ref_count(tot, 0.3)
        assert keep_count_global(mask, 0.3, ["a", "b"], levels=lv) == tot
    assert keep_count_global(mask, 0.3, ["b"], levels=1) == 37 - ref_count(37, 0.3)
    assert keep_counts_layerwise(mask, rates, levels=0) == {"a": 1000, "b": 37}


def test_paper_formula_printed_values():
    for n, pct in PAPER_PM.items():
        assert round(100 * paper_lenet_remaining(n), 2) == pct
        direct = (265_200 * 0.8**n + 1_000 * 0.9**n) / 266_200
        assert paper_lenet_remaining(n) == pytest.approx(direct, rel=1e-12)
    assert paper_lenet_remaining(0) == 1.0


# --------------------------------------------------------------------------- torch's amount


@pytest.mark.parametrize("amount, remaining, expected", [
    (0.5, 5, 2),    # 2.5 -> 2 (half to even)
    (0.5, 7, 4),    # 3.5 -> 4
    (0.3, 10, 3),
    (0.2, 235_200, 47_040),
    (0.0, 10, 0),
    (1.0, 10, 10),
    (3, 10, 3),
    (10, 10, 10),
    (0, 0, 0),
])
def test_count_from_amount_follows_torch(amount, remaining, expected):
    assert count_from_amount(amount, remaining) == expected
    # torch's own rule, on a tensor with `remaining` entries
    k = expected
    t = torch.arange(1.0, remaining + 1)
    assert int((tprune.L1Unstructured(amount).compute_mask(t, torch.ones_like(t)) == 0).sum()) == k


@pytest.mark.parametrize("amount, err", [(11, ValueError), (-1, ValueError), (1.5, ValueError), (-0.1, ValueError),
                                         (float("nan"), ValueError), (True, TypeError), ("0.2", TypeError)])
def test_count_from_amount_rejects(amount, err):
    with pytest.raises(err):
        count_from_amount(amount, 10)
