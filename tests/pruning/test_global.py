"""Pruning as the IMP driver does it (lth.experiment.plan.next_mask) on the paper's networks, against an
independent numpy reference: global magnitude pruning removes exactly the globally smallest weights
of the pooled layers while the output layer and ResNet-20's 1x1 shortcuts stay dense; layer-wise
pruning removes exactly the documented count from each layer at its kind's rate (conv / fc / output).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lth.config import get_preset
from lth.experiment.plan import next_mask
from lth.models import build_model, initialize, output_parameter, prunable_tensors
from lth.pruning import apply_mask, full_mask, is_nested
from tests.pruning.reference import counts, np_prune, np_prune_global, ref_count

CIFAR = (3, 32, 32)


def _model_and_weights(name: str, shape=CIFAR, seed: int = 0):
    model = build_model(name, shape, 10)
    initialize(model, torch.Generator().manual_seed(seed))
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _np(mask: dict, weights: dict, names: list[str]):
    return [weights[n].numpy() for n in names], [mask[n].numpy() for n in names]


def _global_cfg(preset: str, prune_output: bool = False):
    cfg = get_preset(preset)
    return replace(cfg, prune=replace(cfg.prune, strategy="global", prune_output=prune_output,
                                      conv_rate=None, output_rate=None))


@pytest.mark.parametrize("model_name, preset", [("resnet20", "resnet20-cifar10"), ("conv4", "conv4-cifar10")])
@pytest.mark.parametrize("prune_output", [False, True])
def test_global_pruning_removes_the_globally_smallest_weights_of_the_pool(model_name, preset, prune_output):
    cfg = _global_cfg(preset, prune_output)
    model, weights = _model_and_weights(model_name)
    mask0 = full_mask(prunable_tensors(model))
    out = output_parameter(model)
    pool = [n for n in mask0 if prune_output or n != out]
    total = sum(mask0[n].numel() for n in pool)

    mask1 = next_mask(model, cfg, weights, mask0, 1)
    ref = np_prune_global(*_np(mask0, weights, pool), ref_count(total, 0.2))
    for n, r in zip(pool, ref):
        assert np.array_equal(mask1[n].numpy(), r), n
    assert sum(counts(mask1)[n] for n in pool) == total - ref_count(total, 0.2)
    # one threshold: no pruned weight of the pool is larger than a surviving one
    w = torch.cat([weights[n].abs().flatten() for n in pool])
    kept = torch.cat([mask1[n].flatten() for n in pool])
    assert w[~kept].max() <= w[kept].min()
    # layers differ in how much they lose: the threshold is global, not a per-layer rate
    assert len({round(counts(mask1)[n] / mask1[n].numel(), 2) for n in pool}) > 1
    if not prune_output:
        assert bool(mask1[out].all())

    # level 2 from "trained" weights in which the pruned weights are huge: they stay pruned
    g = torch.Generator().manual_seed(1)
    trained = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in weights.items()}
    for n in mask1:
        trained[n] = torch.where(mask1[n], trained[n], torch.full_like(trained[n], 1e3))
    mask2 = next_mask(model, cfg, trained, mask1, 1)
    alive = total - ref_count(total, 0.2)
    ref2 = np_prune_global(*_np(mask1, trained, pool), ref_count(alive, 0.2))
    for n, r in zip(pool, ref2):
        assert np.array_equal(mask2[n].numpy(), r), n
    assert is_nested(mask2, mask1)
    if not prune_output:
        assert bool(mask2[out].all())


def test_resnet20_shortcuts_are_outside_every_mask_and_stay_dense():
    cfg = get_preset("resnet20-cifar10")
    model, weights = _model_and_weights("resnet20")
    shortcuts = list(model.never_prune)
    assert shortcuts == ["blocks.3.shortcut.0.weight", "blocks.6.shortcut.0.weight"]
    before = {n: model.get_parameter(n).detach().clone() for n in shortcuts}
    mask = full_mask(prunable_tensors(model))
    for level in range(3):
        mask = next_mask(model, cfg, weights, mask, 1)
        assert not set(shortcuts) & set(mask), level
    apply_mask(model, mask)
    for n in shortcuts:
        assert torch.equal(model.get_parameter(n), before[n]) and int((before[n] == 0).sum()) == 0
    assert 0.45 < sum(counts(mask).values()) / sum(m.numel() for m in mask.values()) < 0.52  # 3 levels ran


def test_one_shot_global_reaches_the_iterative_sizes():
    cfg = get_preset("resnet20-cifar10")
    model, weights = _model_and_weights("resnet20")
    mask0 = full_mask(prunable_tensors(model))
    pool = [n for n in mask0 if n != output_parameter(model)]
    once = next_mask(model, cfg, weights, mask0, 3)
    r = sum(mask0[n].numel() for n in pool)
    for _ in range(3):
        r -= ref_count(r, 0.2)
    assert sum(counts(once)[n] for n in pool) == r
    ref = np_prune_global(*_np(mask0, weights, pool), sum(mask0[n].numel() for n in pool) - r)
    assert all(np.array_equal(once[n].numpy(), x) for n, x in zip(pool, ref))


# Surviving weights per layer after one level with each preset's per-kind rates, written out:
# a layer of n weights at rate p loses floor(p * n + 0.5) (lth.pruning.counts).
LAYERWISE = {
    # fc 20%: 235,200 -> 188,160; 30,000 -> 24,000; output 10%: 1,000 -> 900
    "lenet300-mnist": ("lenet300", (1, 28, 28), [188_160, 24_000, 900]),
    # conv 10%: 1,728 - 173; 36,864 - 3,686; fc 20%: 4,194,304 - 838,861; 65,536 - 13,107; output 2,560 - 256
    "conv2-cifar10": ("conv2", CIFAR, [1_555, 33_178, 3_355_443, 52_429, 2_304]),
    # conv 15%: 1,728 - 259; 36,864 - 5,530; 73,728 - 11,059; 147,456 - 22,118; 294,912 - 44,237;
    # 589,824 - 88,474; fc 20%: 1,048,576 - 209,715; 65,536 - 13,107; output 10%: 2,560 - 256
    "conv6-cifar10": ("conv6", CIFAR, [1_469, 31_334, 62_669, 125_338, 250_675, 501_350, 838_861, 52_429, 2_304]),
}


@pytest.mark.parametrize("preset", sorted(LAYERWISE))
def test_layerwise_rates_per_layer_kind_prune_exactly_the_documented_counts(preset):
    name, shape, keep = LAYERWISE[preset]
    cfg = get_preset(preset)
    model, weights = _model_and_weights(name, shape)
    mask0 = full_mask(prunable_tensors(model))
    mask1 = next_mask(model, cfg, weights, mask0, 1)
    assert list(counts(mask1).values()) == keep
    for n in mask0:  # within each layer, exactly its smallest weights
        lost = mask0[n].numel() - counts(mask1)[n]
        assert np.array_equal(mask1[n].numpy(), np_prune(weights[n].numpy(), mask0[n].numpy(), lost)), n


def test_layerwise_without_pruning_the_output_keeps_it_dense():
    cfg = get_preset("conv2-cifar10")
    cfg = replace(cfg, prune=replace(cfg.prune, prune_output=False))
    model, weights = _model_and_weights("conv2")
    mask1 = next_mask(model, cfg, weights, full_mask(prunable_tensors(model)), 2)
    assert bool(mask1["out.weight"].all())
    assert counts(mask1)["features.0.weight"] == 1_728 - 173 - ref_count(1_555, 0.1)


def test_global_pruning_with_output_rate_zero_leaves_the_output_layer_dense():
    """``output_rate = 0`` means a dense output layer under global pruning too, as the prune
    section's documentation says (not only ``prune_output = false``)."""
    cfg = get_preset("resnet20-cifar10")
    cfg = replace(cfg, prune=replace(cfg.prune, prune_output=True, output_rate=0.0))
    model, weights = _model_and_weights("resnet20")
    mask = next_mask(model, cfg, weights, full_mask(prunable_tensors(model)), 2)
    assert bool(mask[output_parameter(model)].all())
    assert sum(counts(mask).values()) < sum(m.numel() for m in mask.values())


@pytest.mark.parametrize("field, value", [("conv_rate", 0.1), ("output_rate", 0.1)])
def test_global_pruning_refuses_per_kind_rates_it_would_ignore(field, value):
    from lth.config import ConfigError, PruneConfig
    with pytest.raises(ConfigError, match=f"prune.{field}"):
        PruneConfig(strategy="global", **{field: value})
