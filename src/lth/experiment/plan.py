"""The pruning plan of an experiment: which rate each layer gets and how a level's mask is made.

Layer-wise (paper Sec. 2, Table 1): convolutions at ``prune.conv_rate``, the output layer at
``prune.output_rate`` (half of ``rate`` by default: "connections to the output layer are pruned at
half the rate"), other fully connected layers at ``rate``. Global (App. I, ResNet-20/VGG-19): one
threshold over the pooled layers, optionally without the output layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ExperimentConfig
from ..models import is_conv_parameter, output_parameter, prunable_parameters, prunable_tensors
from ..pruning import (
    Mask,
    full_mask,
    keep_count_global,
    keep_counts_layerwise,
    prune_global_to_count,
    prune_layerwise_to_counts,
)


def layer_rates(model: nn.Module, cfg: ExperimentConfig, names: list[str] | None = None) -> dict[str, float]:
    """Per-layer pruning rate: conv layers ``conv_rate``, the output layer ``output_rate``
    (half of ``rate`` by default, paper Sec. 2), other fully connected layers ``rate``."""
    out_name = output_parameter(model)
    rates = {}
    for name in prunable_parameters(model) if names is None else names:
        if name == out_name:
            rates[name] = cfg.prune.resolved_output_rate
        elif is_conv_parameter(model, name):
            rates[name] = cfg.prune.resolved_conv_rate
        else:
            rates[name] = cfg.prune.rate
    return rates


def source_level(cfg: ExperimentConfig, level: int) -> int:
    """The level whose trained ticket level ``level``'s mask is pruned from: the previous one, or
    the dense level 0 with ``lottery.one_shot``."""
    return 0 if cfg.lottery.one_shot else level - 1


def global_pool(model: nn.Module, cfg: ExperimentConfig, names: list[str] | None = None) -> list[str]:
    """Layers that share the global threshold (the output layer unless it is left dense:
    ``prune_output = false`` or ``output_rate = 0``)."""
    out_name = output_parameter(model)
    dense_output = cfg.prune.resolved_output_rate == 0
    return [n for n in (prunable_parameters(model) if names is None else names)
            if not (dense_output and n == out_name)]


def next_mask(model: nn.Module, cfg: ExperimentConfig, weights: dict[str, torch.Tensor],
              mask: Mask, levels: int) -> Mask:
    """Prune ``weights`` among the survivors of ``mask`` by ``levels`` rounds' worth.

    Iterative IMP calls this with levels=1 on the previous level's trained ticket; one-shot calls it
    with levels=L on the trained dense network, so both reach exactly the same per-layer sizes.
    """
    if cfg.prune.strategy == "global":
        names = global_pool(model, cfg, list(mask))
        keep = keep_count_global(mask, cfg.prune.rate, names, levels)
        return prune_global_to_count(weights, mask, names, keep)
    keep = keep_counts_layerwise(mask, layer_rates(model, cfg, list(mask)), levels)
    return prune_layerwise_to_counts(weights, mask, keep)


def expected_weights_remaining(cfg: ExperimentConfig, model: nn.Module, level: int) -> float:
    """Fraction of prunable weights left after ``level`` rounds (from the counting rule alone)."""
    mask = full_mask(prunable_tensors(model))
    total = sum(m.numel() for m in mask.values())
    if cfg.prune.strategy == "global":
        pool = global_pool(model, cfg)
        kept = keep_count_global(mask, cfg.prune.rate, pool, level)
        return (kept + sum(mask[n].numel() for n in mask if n not in pool)) / total
    counts = keep_counts_layerwise(mask, layer_rates(model, cfg), level)
    return sum(counts.values()) / total

