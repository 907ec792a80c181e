"""Schema: validation messages name field, value and range; identity and the run directory hash."""

from __future__ import annotations

import dataclasses

import pytest

from lth.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LotteryConfig,
    PruneConfig,
    RuntimeConfig,
    TrainConfig,
    apply_overrides,
    config_hash,
    get_preset,
    preset_names,
    with_section,
)


def _with(cfg: ExperimentConfig, section: str, **kw) -> ExperimentConfig:
    d = cfg.to_dict()
    d[section].update(kw)
    return ExperimentConfig.from_dict(d)


BASE = get_preset("lenet300-mnist")

# Computed by the code that made the existing run directories: a run directory is named by
# config_hash, so these must never move.
PRESET_HASHES = {
    "digits-quick": "16fce2b2fe",
    "lenet300-mnist": "fc00979ad0",
    "lenet300-fashion": "cb394f1217",
    "conv2-cifar10": "56a6c1591a",
    "conv4-cifar10": "986c88d5c6",
    "conv6-cifar10": "4012746e39",
    "resnet20-cifar10": "8f61fe9e8b",
    "vgg19-cifar10": "f4a1678485",
    "conv2-dropout-cifar10": "c6280f6428", "conv4-dropout-cifar10": "05bcee52c3", "conv6-dropout-cifar10": "8a08fd45e1",
    "resnet20-cifar10-lr0.1": "eb5775e00c", "resnet20-cifar10-lr0.01": "8047b0d46b",
    "vgg19-cifar10-lr0.1": "3e37418b48", "vgg19-cifar10-lr0.01": "76d32bfb47", "vgg16-cifar10": "3c1cef9dac",
}


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
        ("lottery", "trials", 0, ["lottery.trials"]),
        ("lottery", "rewind_iteration", 60_000, ["rewind_iteration", "60000", "50000"]),
        ("prune", "strategy", "random", ["prune.strategy", "layerwise", "global"]),
        ("data", "augment", "flip", ["data.augment", "'flip'", "none", "crop_flip"]),
        ("data", "augment", None, ["data.augment", "None", "none", "crop_flip"]),
    ],
)
def test_invalid_values_name_field_value_and_range(section, field, value, words):
    with pytest.raises(ConfigError) as e:
        _with(BASE, section, **{field: value})
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize(
    "section, field, value, words",
    [
        ("train", "lr", "fast", ["train.lr", "'fast'", "positive finite number"]),
        ("train", "momentum", "0.9", ["train.momentum", "'0.9'", "[0, 1)"]),
        ("train", "weight_decay", None, ["train.weight_decay", "None", ">= 0"]),
        ("train", "lr_gamma", 1.5, ["train.lr_gamma", "1.5", "(0, 1]"]),
        ("train", "iterations", True, ["train.iterations", "True", "positive integer, at most 100,000,000"]),
        ("train", "iterations", 10.0, ["train.iterations", "10.0", "positive integer"]),
        ("train", "iterations", 10**9, ["train.iterations", "1000000000", "positive integer, at most 100,000,000"]),
        ("train", "batch_size", 10**7, ["train.batch_size", "at most 1,000,000", "training set"]),
        ("train", "weight_decay", float("inf"), ["train.weight_decay", "inf", "finite"]),
        ("train", "lr", float("nan"), ["train.lr", "nan", "finite"]),
        ("train", "warmup_iterations", 60_000, ["train.warmup_iterations", "60000", "50000"]),
        ("train", "lr_milestones", "100", ["train.lr_milestones", "'100'", "must be a list"]),
        ("train", "lr_milestones", (200, 100), ["train.lr_milestones", "increasing"]),
        ("train", "precision", "fp16", ["train.precision", "fp16", "fp32", "bf16"]),
        ("prune", "rate", "0.2", ["prune.rate", "'0.2'", "(0, 1)"]),
        ("prune", "output_rate", 1.0, ["prune.output_rate", "1.0", "[0, 1)"]),
        ("prune", "prune_output", "yes", ["prune.prune_output", "'yes'", "true or false"]),
        ("lottery", "branches", "ticket", ["lottery.branches", "'ticket'", "must be a list"]),
        ("lottery", "branches", (), ["lottery.branches", "(empty)", "ticket, reinit"]),
        ("lottery", "branches", ("ticket", "ticket"), ["lottery.branches", "twice"]),
        ("lottery", "levels", -1, ["lottery.levels", "-1", "at most 100"]),
        ("lottery", "levels", 10**9, ["lottery.levels", "1000000000", "at most 100"]),
        ("lottery", "trials", 10**6, ["lottery.trials", "at most 1,000"]),
        ("lottery", "seed", 10**23, ["lottery.seed", "at most 9,223,372,036,854,775,807"]),
        ("data", "split_seed", 10**23, ["data.split_seed", "at most 9,223,372,036,854,775,807"]),
        ("data", "split_seed", -1, ["data.split_seed", "-1"]),
        ("lottery", "seed", 1.5, ["lottery.seed", "1.5", "integer"]),
        ("lottery", "one_shot", 1, ["lottery.one_shot", "1", "true or false"]),
        ("data", "dataset", "", ["data.dataset", "''", "non-empty"]),
        ("data", "val_size", 0, ["data.val_size", "0", "positive integer"]),
        ("data", "split_seed", "0", ["data.split_seed", "'0'", "integer"]),
        ("model", "name", 5, ["model.name", "5", "non-empty"]),
        ("runtime", "device", None, ["runtime.device", "None", "choose cpu, cuda, cuda:N or mps"]),
        ("runtime", "device", "", ["runtime.device", "''", "choose cpu"]),
        ("runtime", "device", "tpu", ["runtime.device", "'tpu'", "choose cpu"]),
        ("runtime", "device", "cuda:x", ["runtime.device", "'cuda:x'", "choose cpu"]),
        ("runtime", "threads", -1, ["runtime.threads", "-1", "at most 4,096"]),
        ("runtime", "checkpoint_every", 0, ["runtime.checkpoint_every", "positive"]),
        ("runtime", "eval_batch_size", 0, ["runtime.eval_batch_size", "positive"]),
        ("runtime", "parallel_units", -2, ["runtime.parallel_units", "-2", "automatic"]),
        ("runtime", "test_eval", "sometimes", ["runtime.test_eval", "'sometimes'", "every, best"]),
        ("runtime", "deterministic", "no", ["runtime.deterministic", "true or false"]),
        ("runtime", "flush_denormals", None, ["runtime.flush_denormals", "true or false"]),
    ],
)
def test_wrong_types_and_ranges_are_config_errors_naming_field_value_and_range(section, field, value, words):
    with pytest.raises(ConfigError) as e:
        _with(BASE, section, **{field: value})
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_lists_become_tuples_and_ints_are_accepted_for_float_fields():
    cfg = _with(BASE, "train", lr_milestones=[100, 200], lr=1, weight_decay=0)
    assert cfg.train.lr_milestones == (100, 200)
    assert (cfg.train.lr, cfg.train.weight_decay) == (1, 0)
    assert TrainConfig(lr_milestones=[5]).lr_milestones == (5,)
    assert LotteryConfig(branches=["ticket"]).branches == ("ticket",)


def test_from_dict_rejects_unknown_sections_and_fields_with_a_suggestion():
    d = BASE.to_dict()
    d["trian"] = {}
    with pytest.raises(ConfigError, match=r"unknown config section.*'trian'.*did you mean train"):
        ExperimentConfig.from_dict(d)
    d = BASE.to_dict()
    d["train"]["lrate"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown field.*train\.lrate.*did you mean lr.*valid fields of train"):
        ExperimentConfig.from_dict(d)
    d = BASE.to_dict()
    d["train"] = 5
    with pytest.raises(ConfigError, match=r"train = 5: must be a table of fields"):
        ExperimentConfig.from_dict(d)
    with pytest.raises(ConfigError, match="mapping of sections"):
        ExperimentConfig.from_dict(["train"])


def test_sections_must_be_their_dataclasses_and_name_must_be_text():
    with pytest.raises(ConfigError, match=r"train = \{'lr': 0.1\}: must be a TrainConfig"):
        ExperimentConfig(train={"lr": 0.1})
    for name in ("", "../../x", "a/b", ".hidden", "x" * 101, "tab\tname", "é"):
        with pytest.raises(ConfigError, match="the run directory is named after it"):
            ExperimentConfig(name=name)
    assert ExperimentConfig(name="lenet300-mnist_v1.2").name == "lenet300-mnist_v1.2"


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.train.lr = 0.1


def test_with_section_replaces_and_validates():
    cfg = with_section(BASE, "prune", rate=0.5)
    assert cfg.prune.rate == 0.5 and cfg.train == BASE.train
    with pytest.raises(ConfigError, match="prune.rate"):
        with_section(BASE, "prune", rate=2.0)


def test_resolved_rates():
    assert PruneConfig(rate=0.2).resolved_conv_rate == 0.2
    assert PruneConfig(rate=0.2, conv_rate=0.1).resolved_conv_rate == 0.1
    assert PruneConfig(rate=0.2).resolved_output_rate == 0.1
    assert PruneConfig(rate=0.2, output_rate=0.0).resolved_output_rate == 0.0
    assert PruneConfig(rate=0.2, output_rate=0.05, prune_output=False).resolved_output_rate == 0.0


def test_hash_changes_with_science_but_not_with_extensible_or_runtime_fields():
    h = config_hash(BASE)
    assert config_hash(_with(BASE, "train", lr=0.002)) != h
    assert config_hash(_with(BASE, "lottery", seed=1)) != h
    assert config_hash(_with(BASE, "lottery", rewind_iteration=100)) != h
    # More levels, trials or branches only add units: same run directory, extended.
    assert config_hash(_with(BASE, "lottery", levels=3, trials=5)) == h
    assert config_hash(_with(BASE, "lottery", branches=("ticket",))) == h
    assert config_hash(_with(BASE, "runtime", device="cuda", checkpoint_every=7)) == h


def test_hash_ignores_name_and_precision_only_at_its_default():
    h = config_hash(BASE)
    assert config_hash(dataclasses.replace(BASE, name="other")) == h
    assert "precision" not in BASE.identity_dict()["train"]
    bf16 = _with(BASE, "train", precision="bf16")
    assert bf16.identity_dict()["train"]["precision"] == "bf16" and config_hash(bf16) != h


def test_augment_enters_the_hash_only_when_not_none():
    """A run directory named before data.augment existed keeps its name: a stored config without
    the field loads with augment="none", which is left out of the identity."""
    old = BASE.to_dict()
    del old["data"]["augment"]  # the shape of a config.json written before the field existed
    loaded = ExperimentConfig.from_dict(old)
    assert loaded.data.augment == "none" and "augment" not in loaded.identity_dict()["data"]
    assert config_hash(loaded) == config_hash(BASE) == "fc00979ad0"
    aug = _with(BASE, "data", augment="crop_flip")
    assert aug.identity_dict()["data"]["augment"] == "crop_flip" and config_hash(aug) != config_hash(BASE)
    assert config_hash(apply_overrides(BASE, ["data.augment=crop_flip"])) == config_hash(aug)


def test_round_trip_through_dict():
    for name in preset_names():
        cfg = get_preset(name)
        assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


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


def test_defaults_are_valid():
    for cls in (DataConfig, TrainConfig, PruneConfig, LotteryConfig, RuntimeConfig, ExperimentConfig):
        cls()


def test_rewind_optimizer_enters_the_hash_only_when_on():
    """A run directory named before lottery.rewind_optimizer existed keeps its name: a stored
    config without the field loads with rewind_optimizer=false, which is left out of the identity."""
    rewound = _with(BASE, "lottery", rewind_iteration=500)
    old = rewound.to_dict()
    del old["lottery"]["rewind_optimizer"]  # a config.json written before the field existed
    loaded = ExperimentConfig.from_dict(old)
    assert loaded.lottery.rewind_optimizer is False
    assert "rewind_optimizer" not in loaded.identity_dict()["lottery"]
    assert config_hash(loaded) == config_hash(rewound)
    assert config_hash(BASE) == PRESET_HASHES["lenet300-mnist"]
    on = _with(rewound, "lottery", rewind_optimizer=True)
    assert on.identity_dict()["lottery"]["rewind_optimizer"] is True and config_hash(on) != config_hash(rewound)
    assert config_hash(apply_overrides(rewound, ["lottery.rewind_optimizer=true"])) == config_hash(on)


def test_rewind_optimizer_needs_a_rewind_iteration_and_a_flag():
    with pytest.raises(ConfigError, match=r"lottery.rewind_optimizer = true: needs lottery.rewind_iteration > 0"):
        LotteryConfig(rewind_optimizer=True)
    with pytest.raises(ConfigError, match=r"lottery.rewind_optimizer = 'yes': must be true or false"):
        LotteryConfig(rewind_iteration=10, rewind_optimizer="yes")
    assert LotteryConfig(rewind_iteration=10, rewind_optimizer=True).rewind_optimizer
