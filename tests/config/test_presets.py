"""Presets: the registry, its errors, and the paper's protocols."""

from __future__ import annotations

import pytest

from lth.config import (
    PRESETS,
    ExperimentConfig,
    PresetError,
    describe_presets,
    get_preset,
    preset_names,
    register_preset,
)
from lth.models import build_model

BASE = get_preset("lenet300-mnist")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_parses_and_builds(name):
    cfg = get_preset(name)
    shapes = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28),
              "cifar-10": (3, 32, 32)}
    model = build_model(cfg.model.name, shapes[cfg.data.dataset], 10)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert any(n == name for n, _ in describe_presets())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_named_after_itself(name):
    assert get_preset(name).name == name == PRESETS[name].name


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(PresetError) as e:
        get_preset("lenet-mnist")
    assert "lenet300-mnist" in str(e.value) and "digits-quick" in str(e.value)


def test_names_and_descriptions_keep_registration_order():
    assert preset_names()[0] == "digits-quick"  # the CLI's default comes first in `lth presets`
    assert [n for n, _ in describe_presets()] == preset_names()
    assert all(d.strip() for _, d in describe_presets())


def test_register_preset_adds_one_and_refuses_duplicates_and_misnamed_configs():
    cfg = ExperimentConfig(name="tmp-test-preset")
    try:
        assert register_preset("tmp-test-preset", "a test entry", cfg) is cfg
        assert get_preset("tmp-test-preset") is cfg
        assert ("tmp-test-preset", "a test entry") in describe_presets()
        with pytest.raises(PresetError, match="already registered"):
            register_preset("tmp-test-preset", "again", cfg)
    finally:
        PRESETS.pop("tmp-test-preset", None)
    with pytest.raises(PresetError, match="named 'experiment'; name it 'other'"):
        register_preset("other", "misnamed", ExperimentConfig())
    assert "other" not in PRESETS


def test_lenet_preset_is_the_papers_protocol():
    c = BASE
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.iterations) == ("adam", 1.2e-3, 60, 50_000)
    assert c.train.eval_every == 100 and c.data.val_size == 5000
    assert c.prune.rate == 0.2 and c.prune.resolved_output_rate == 0.1


def test_conv_and_resnet_presets_follow_table_1():
    assert [get_preset(f"conv{n}-cifar10").prune.resolved_conv_rate for n in (2, 4, 6)] == [0.1, 0.1, 0.15]
    r = get_preset("resnet20-cifar10")
    assert (r.train.optimizer, r.train.lr, r.train.warmup_iterations, r.lottery.rewind_iteration) == (
        "sgd", 0.03, 20_000, 500)
    assert r.prune.strategy == "global" and r.prune.resolved_output_rate == 0.0
