"""The pruning plan (lth.experiment.plan): per-layer rates (paper Sec. 2), the global pool
(App. I), the next level's mask and the expected fraction of weights remaining."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.config import ExperimentConfig, get_preset
from lth.experiment import expected_weights_remaining, global_pool, layer_rates, next_mask
from lth.models import MODELS, build_model, initialize, output_parameter, prunable_parameters, prunable_tensors
from lth.pruning import (
    density,
    full_mask,
    is_nested,
    keep_counts_layerwise,
    paper_lenet_remaining,
    prune_count,
    prune_layerwise,
)
from tests.pruning.reference import LENET_SHAPES, PAPER_PM, counts, rand_weights, ref_count


def make_cfg(model: str = "mlp-100-50", **prune) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["model"]["name"] = model
    d["prune"].update(prune)
    return ExperimentConfig.from_dict(d)


def weights(model, seed: int = 0) -> dict[str, torch.Tensor]:
    initialize(model, torch.Generator().manual_seed(seed))
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_layer_rates_fc_at_rate_output_at_half_conv_at_conv_rate():
    mlp = build_model("mlp-100-50", (1, 8, 8), 10)
    assert layer_rates(mlp, make_cfg(rate=0.2)) == pytest.approx(
        {"hidden.0.weight": 0.2, "hidden.1.weight": 0.2, "out.weight": 0.1})
    assert layer_rates(mlp, make_cfg(rate=0.2, output_rate=0.05))["out.weight"] == pytest.approx(0.05)
    conv = build_model("conv2", (3, 32, 32), 10)
    rates = layer_rates(conv, make_cfg("conv2", rate=0.2, conv_rate=0.1))
    names = prunable_parameters(conv)
    out = names[-1]
    assert rates[out] == pytest.approx(0.1)
    assert {rates[n] for n in names if conv.get_parameter(n).dim() == 4} == {0.1}
    assert {rates[n] for n in names if conv.get_parameter(n).dim() == 2 and n != out} == {0.2}


def test_global_pool_leaves_out_the_output_layer_unless_it_is_pruned():
    conv = build_model("conv2", (3, 32, 32), 10)
    names = prunable_parameters(conv)
    assert global_pool(conv, make_cfg("conv2", strategy="global")) == names
    assert global_pool(conv, make_cfg("conv2", strategy="global", prune_output=False)) == names[:-1]


def test_next_mask_prunes_the_smallest_surviving_weights_of_each_layer_by_its_rate():
    model = build_model("mlp-100-50", (1, 8, 8), 10)
    cfg = make_cfg()
    prev = full_mask(prunable_tensors(model))
    for level in (1, 2, 3):
        w = weights(model, level)
        mask = next_mask(model, cfg, w, prev, 1)
        assert is_nested(mask, prev)
        assert {n: int(m.sum()) for n, m in mask.items()} == keep_counts_layerwise(prev, layer_rates(model, cfg))
        for n, m in mask.items():
            assert w[n][prev[n] & ~m].abs().max() <= w[n][m].abs().min()
        assert density(mask) == pytest.approx(expected_weights_remaining(cfg, model, level))
        prev = mask


def test_one_shot_reaches_the_sizes_of_as_many_iterative_rounds():
    model = build_model("mlp-100-50", (1, 8, 8), 10)
    cfg = make_cfg()
    w = weights(model)
    dense = full_mask(prunable_tensors(model))
    iterative = dense
    for _ in range(3):
        iterative = next_mask(model, cfg, w, iterative, 1)
    one_shot = next_mask(model, cfg, w, dense, 3)
    assert {n: int(m.sum()) for n, m in one_shot.items()} == {n: int(m.sum()) for n, m in iterative.items()}


@pytest.mark.parametrize("prune_output", [True, False])
def test_global_pruning_uses_one_threshold_over_the_pool(prune_output):
    model = build_model("conv2", (3, 32, 32), 10)
    cfg = make_cfg("conv2", strategy="global", prune_output=prune_output)
    w = weights(model)
    dense = full_mask(prunable_tensors(model))
    mask = next_mask(model, cfg, w, dense, 2)
    pool = global_pool(model, cfg)
    pruned = torch.cat([w[n][~mask[n]].abs() for n in pool])
    kept = torch.cat([w[n][mask[n]].abs() for n in pool])
    assert pruned.numel() > 0 and pruned.max() <= kept.min()
    for n in set(mask) - set(pool):
        assert bool(mask[n].all()), n  # outside the pool: left dense
    assert density(mask) == pytest.approx(expected_weights_remaining(cfg, model, 2))
    assert density(mask) < 1.0


# --- the paper's pruning plan against an independent numpy reference (tests/pruning/reference.py)
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
