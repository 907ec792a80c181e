"""Configuration: validation messages, overrides, hashing, presets."""

from __future__ import annotations

import pytest

from lth.config import ConfigError, ExperimentConfig, apply_overrides, config_hash
from lth.models import build_model
from lth.presets import describe_presets, get_preset, preset_names, PresetError


def _with(cfg: ExperimentConfig, section: str, **kw) -> ExperimentConfig:
    d = cfg.to_dict()
    d[section].update(kw)
    return ExperimentConfig.from_dict(d)


BASE = get_preset("lenet300-mnist")


@pytest.mark.parametrize(
    "section, field, value, words",
    [
        ("prune", "rate", 1.0, ["prune.rate", "1.0", "(0, 1)"]),
        ("prune", "rate", 0.0, ["prune.rate", "(0, 1)"]),
        ("prune", "rate", -0.2, ["prune.rate", "-0.2"]),
        ("prune", "conv_rate", 1.5, ["prune.conv_rate", "1.5"]),
        ("train", "iterations", 0, ["train.iterations", "positive"]),
        ("train", "batch_size", -5, ["train.batch_size", "-5", "positive"]),
        ("train", "optimizer", "adagrad", ["train.optimizer", "adagrad", "adam", "sgd"]),
        ("train", "lr", 0.0, ["train.lr", "positive"]),
        ("lottery", "branches", ("ticket", "lucky"), ["lucky", "ticket", "reinit", "random_mask"]),
        ("lottery", "trials", 0, ["lottery.trials"]),
        ("lottery", "rewind_iteration", 60_000, ["rewind_iteration", "60000", "50000"]),
        ("prune", "strategy", "random", ["prune.strategy", "layerwise", "global"]),
    ],
)
def test_invalid_values_name_field_value_and_range(section, field, value, words):
    with pytest.raises(ConfigError) as e:
        _with(BASE, section, **{field: value})
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_set_override_parses_types_and_validates():
    cfg = apply_overrides(BASE, ["train.lr=0.01", "lottery.branches=ticket,random_mask",
                                 "lottery.one_shot=true", "train.lr_milestones=100,200",
                                 "prune.output_rate=0.05"])
    assert cfg.train.lr == 0.01
    assert cfg.lottery.branches == ("ticket", "random_mask")
    assert cfg.lottery.one_shot is True
    assert cfg.train.lr_milestones == (100, 200)
    assert cfg.prune.output_rate == 0.05
    with pytest.raises(ConfigError, match="train has no field 'lrate'"):
        apply_overrides(BASE, ["train.lrate=0.1"])
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(BASE, ["optim.lr=0.1"])
    with pytest.raises(ConfigError, match="expected a int"):
        apply_overrides(BASE, ["train.iterations=lots"])


def test_hash_changes_with_science_but_not_with_extensible_or_runtime_fields():
    h = config_hash(BASE)
    assert config_hash(_with(BASE, "train", lr=0.002)) != h
    assert config_hash(_with(BASE, "lottery", seed=1)) != h
    assert config_hash(_with(BASE, "lottery", rewind_iteration=100)) != h
    # More levels, trials or branches only add units: same run directory, extended.
    assert config_hash(_with(BASE, "lottery", levels=3, trials=5)) == h
    assert config_hash(_with(BASE, "lottery", branches=("ticket",))) == h
    assert config_hash(_with(BASE, "runtime", device="cuda", checkpoint_every=7)) == h


def test_round_trip_through_dict():
    for name in preset_names():
        cfg = get_preset(name)
        assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_parses_and_builds(name):
    cfg = get_preset(name)
    shapes = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28),
              "cifar-10": (3, 32, 32)}
    model = build_model(cfg.model.name, shapes[cfg.data.dataset], 10)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert any(n == name for n, _ in describe_presets())


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(PresetError) as e:
        get_preset("lenet-mnist")
    assert "lenet300-mnist" in str(e.value) and "digits-quick" in str(e.value)


def test_lenet_preset_is_the_papers_protocol():
    c = BASE
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.iterations) == ("adam", 1.2e-3, 60, 50_000)
    assert c.train.eval_every == 100 and c.data.val_size == 5000
    assert c.prune.rate == 0.2 and c.prune.resolved_output_rate == 0.1
