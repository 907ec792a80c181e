"""The pruning plan in lth.lottery: per-layer rates, the global pool, one-shot vs iterative sizes and
the paper's P_m, checked with lth.pruning's mask math and its numpy reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.config import ExperimentConfig
from lth.lottery import expected_weights_remaining, global_pool, layer_rates, next_mask
from lth.models import MODELS, build_model, output_parameter, prunable_parameters
from lth.presets import get_preset
from lth.pruning import density, full_mask, paper_lenet_remaining, prune_count, prune_layerwise
from tests.pruning.reference import LENET_SHAPES, PAPER_PM, counts, rand_weights, ref_count


def lenet() -> nn.Module:
    return build_model("lenet300", (1, 28, 28), 10)


def lenet_cfg(**prune_changes) -> ExperimentConfig:
    d = get_preset("lenet300-mnist").to_dict()
    d["prune"].update(prune_changes)
    return ExperimentConfig.from_dict(d)


def test_lenet_layer_rates_output_at_half_rate():
    model = lenet()
    cfg = get_preset("lenet300-mnist")
    assert "lenet300" in MODELS
    assert prunable_parameters(model) == list(LENET_SHAPES)
    assert output_parameter(model) == "out.weight"
    assert layer_rates(model, cfg) == {"hidden.0.weight": 0.2, "hidden.1.weight": 0.2, "out.weight": 0.1}
    assert global_pool(model, cfg) == list(LENET_SHAPES)
    params = dict(model.named_parameters())
    assert {n: tuple(params[n].shape) for n in LENET_SHAPES} == LENET_SHAPES


def test_conv_preset_layer_rates():
    model = build_model("conv2", (3, 8, 8), 10)
    rates = layer_rates(model, get_preset("conv2-cifar10"))
    assert rates == {"features.0.weight": 0.1, "features.2.weight": 0.1, "fc.2.weight": 0.2,
                     "fc.5.weight": 0.2, "out.weight": 0.1}


def test_lenet_exact_pruned_count_per_level_per_layer():
    model = lenet()
    cfg = get_preset("lenet300-mnist")
    rates = layer_rates(model, cfg)
    params = dict(model.named_parameters())
    mask = full_mask({n: params[n] for n in prunable_parameters(model)})
    # level 1 by hand: 235,200 * 0.2, 30,000 * 0.2, 1,000 * 0.1
    expected_first = {"hidden.0.weight": 47_040, "hidden.1.weight": 6_000, "out.weight": 100}
    for level in range(1, 7):
        w = rand_weights(LENET_SHAPES, seed=level)
        new = next_mask(model, cfg, w, mask, levels=1)
        for n in LENET_SHAPES:
            r = int(mask[n].sum())
            pruned = r - int(new[n].sum())
            assert pruned == prune_count(r, rates[n]) == ref_count(r, rates[n]), f"{n} level {level}"
            if level == 1:
                assert pruned == expected_first[n]
        # the same through prune_layerwise directly
        direct = prune_layerwise(w, mask, rates)
        assert all(torch.equal(direct[n], new[n]) for n in LENET_SHAPES)
        mask = new
    assert counts(mask)["out.weight"] == 531  # 1000 -> 900 -> 810 -> 729 -> 656 -> 590 -> 531


def test_prune_output_false_leaves_output_dense_layerwise_and_global():
    model = lenet()
    params = dict(model.named_parameters())
    base = full_mask({n: params[n] for n in prunable_parameters(model)})
    # make the output layer's mask non-trivial to check it is copied bit for bit
    base["out.weight"] = torch.rand(10, 100, generator=torch.Generator().manual_seed(1)) < 0.5
    out0 = base["out.weight"].clone()
    for strategy in ("layerwise", "global"):
        cfg = lenet_cfg(strategy=strategy, prune_output=False)
        assert "out.weight" not in global_pool(model, cfg)
        assert layer_rates(model, cfg)["out.weight"] == 0.0
        mask = base
        for level in range(4):
            mask = next_mask(model, cfg, rand_weights(LENET_SHAPES, 70 + level), mask, levels=1)
            assert torch.equal(mask["out.weight"], out0), strategy
        assert counts(mask)["hidden.0.weight"] < 235_200


@pytest.mark.parametrize("n", sorted(PAPER_PM))
def test_expected_weights_remaining_matches_paper(n):
    model = lenet()
    frac = expected_weights_remaining(get_preset("lenet300-mnist"), model, n)
    assert abs(100 * frac - 100 * paper_lenet_remaining(n)) <= 0.005
    assert round(100 * frac, 2) == PAPER_PM[n]


def test_running_prune_layerwise_matches_paper():
    model = lenet()
    rates = layer_rates(model, get_preset("lenet300-mnist"))
    mask = full_mask({n: torch.empty(s) for n, s in LENET_SHAPES.items()})
    total = sum(m.numel() for m in mask.values())
    assert total == 266_200
    seen = {}
    for level in range(1, max(PAPER_PM) + 1):
        mask = prune_layerwise(rand_weights(LENET_SHAPES, 500 + level), mask, rates)
        seen[level] = density(mask)
        assert sum(counts(mask).values()) / total == seen[level]
    for n, pct in PAPER_PM.items():
        assert abs(100 * seen[n] - 100 * paper_lenet_remaining(n)) <= 0.005, n
        assert round(100 * seen[n], 2) == pct, n
        assert seen[n] == expected_weights_remaining(get_preset("lenet300-mnist"), model, n)


@pytest.mark.parametrize("levels", [1, 2, 4, 7])
@pytest.mark.parametrize(
    "strategy, prune_output",
    [("layerwise", True), ("global", True), ("global", False)],
    ids=["layerwise", "global", "global-no-output"],
)
def test_one_shot_reaches_same_sizes_as_iterative(levels, strategy, prune_output):
    model = lenet()
    cfg = lenet_cfg(strategy=strategy, prune_output=prune_output)
    assert cfg.prune.strategy == strategy
    params = dict(model.named_parameters())
    dense = full_mask({n: params[n] for n in prunable_parameters(model)})
    trained = rand_weights(LENET_SHAPES, 900)
    one_shot = next_mask(model, cfg, trained, dense, levels=levels)

    # iterative with the same weights at every level: same masks, hence same per-layer counts
    it_same, it_new = dense, dense
    for lv in range(levels):
        it_same = next_mask(model, cfg, trained, it_same, levels=1)
        it_new = next_mask(model, cfg, rand_weights(LENET_SHAPES, 901 + lv), it_new, levels=1)
    assert counts(one_shot) == counts(it_same)
    for n in LENET_SHAPES:
        assert torch.equal(one_shot[n], it_same[n]), n

    # iterative with retrained weights: layer-wise sizes per layer; global the pool total
    if strategy == "layerwise":
        assert counts(one_shot) == counts(it_new)
    else:
        pool = global_pool(model, cfg)
        assert sum(counts(one_shot)[n] for n in pool) == sum(counts(it_new)[n] for n in pool)
        for n in set(LENET_SHAPES) - set(pool):
            assert counts(one_shot)[n] == counts(it_new)[n] == dense[n].numel()
    frac = sum(counts(one_shot).values()) / 266_200
    assert frac == pytest.approx(expected_weights_remaining(cfg, model, levels), abs=1e-15)
