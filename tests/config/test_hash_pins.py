"""Pinned run-directory hashes: a run directory is named by config_hash, so these must never move."""

from __future__ import annotations

import pytest

from lth.config import ExperimentConfig, apply_overrides, config_hash
from lth.presets import get_preset, preset_names

# Computed by the code that made the existing run directories.
PRESET_HASHES = {
    "digits-quick": "16fce2b2fe",
    "lenet300-mnist": "fc00979ad0",
    "lenet300-fashion": "cb394f1217",
    "conv2-cifar10": "56a6c1591a",
    "conv4-cifar10": "986c88d5c6",
    "conv6-cifar10": "4012746e39",
    "resnet20-cifar10": "c713bc76e9",
    "vgg19-cifar10": "16af4befee",
}


def test_every_shipped_preset_is_pinned():
    assert set(preset_names()) == set(PRESET_HASHES)


@pytest.mark.parametrize("name", sorted(PRESET_HASHES))
def test_preset_hash_is_unchanged(name):
    assert config_hash(get_preset(name)) == PRESET_HASHES[name]


@pytest.mark.parametrize(
    "sets, expected",
    [
        ([], "fc00979ad0"),
        (["train.precision=bf16"], "144ffddacb"),
        (["prune.output_rate=0.0", "prune.conv_rate=0.15"], "fd3cbc369e"),
    ],
)
def test_non_preset_hashes_are_unchanged(sets, expected):
    assert config_hash(apply_overrides(ExperimentConfig(), sets)) == expected
