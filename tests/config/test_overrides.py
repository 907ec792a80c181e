"""--set section.field=value: parsing by the field's current type, validation of the result."""

from __future__ import annotations

import pytest

from lth.config import ConfigError, ExperimentConfig, apply_overrides, get_preset, load_config

BASE = get_preset("lenet300-mnist")


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


@pytest.mark.parametrize(
    "assignment, section, field, expected",
    [
        ("lottery.one_shot=yes", "lottery", "one_shot", True),
        ("lottery.one_shot=OFF", "lottery", "one_shot", False),
        ("train.iterations=1e3", "train", "iterations", 1000),
        ("train.weight_decay=0", "train", "weight_decay", 0.0),
        ("train.lr_milestones=[100, 200]", "train", "lr_milestones", (100, 200)),
        ("train.lr_milestones=", "train", "lr_milestones", ()),
        ("train.lr_milestones=()", "train", "lr_milestones", ()),
        ("data.dataset= fashion-mnist ", "data", "dataset", "fashion-mnist"),
        ("prune.conv_rate=0.1", "prune", "conv_rate", 0.1),
    ],
)
def test_values_are_parsed_by_the_current_type(assignment, section, field, expected):
    value = getattr(getattr(apply_overrides(BASE, [assignment]), section), field)
    assert value == expected and type(value) is type(expected)


def test_optional_numbers_clear_with_none_and_keep_whole_numbers_as_written():
    cfg = apply_overrides(BASE, ["prune.conv_rate=0.1"])
    assert apply_overrides(cfg, ["prune.conv_rate=none"]).prune.conv_rate is None
    assert apply_overrides(cfg, ["prune.conv_rate=null"]).prune.conv_rate is None
    # With no current value to go by, a whole number stays an int (run directories hash it so).
    zero = apply_overrides(BASE, ["prune.output_rate=0"]).prune.output_rate
    assert zero == 0 and type(zero) is int
    assert type(apply_overrides(BASE, ["prune.output_rate=0.0"]).prune.output_rate) is float


def test_name_and_bad_assignments():
    assert apply_overrides(BASE, ["name=mine"]).name == "mine"
    with pytest.raises(ConfigError, match="expected section.field=value"):
        apply_overrides(BASE, ["train.lr"])
    with pytest.raises(ConfigError, match="expected true or false"):
        apply_overrides(BASE, ["lottery.one_shot=maybe"])
    with pytest.raises(ConfigError, match="unknown key 'train.lr.x'"):
        apply_overrides(BASE, ["train.lr.x=1"])
    with pytest.raises(ConfigError, match=r"train.iterations = '2.5': expected a int"):
        apply_overrides(BASE, ["train.iterations=2.5"])


def test_all_assignments_apply_before_cross_field_validation():
    cfg = apply_overrides(BASE, ["train.iterations=100", "lottery.rewind_iteration=50"])
    assert (cfg.train.iterations, cfg.lottery.rewind_iteration) == (100, 50)
    with pytest.raises(ConfigError, match="rewind_iteration = 200.*train.iterations = 100"):
        apply_overrides(BASE, ["lottery.rewind_iteration=200", "train.iterations=100"])


def test_set_on_top_of_a_loaded_file(tmp_path):
    p = tmp_path / "exp.toml"
    p.write_text('preset = "lenet300-mnist"\nname = "short"\n[train]\niterations = 2000\nlr = 0.002\n')
    cfg = apply_overrides(load_config(p), ["train.lr=0.01", "lottery.levels=3"])
    assert (cfg.name, cfg.train.iterations, cfg.train.lr, cfg.lottery.levels) == ("short", 2000, 0.01, 3)
    assert cfg.data == BASE.data and cfg.prune == BASE.prune
    assert cfg == ExperimentConfig.from_dict(
        {**BASE.to_dict(), "name": "short",
         "train": {**BASE.to_dict()["train"], "iterations": 2000, "lr": 0.01},
         "lottery": {**BASE.to_dict()["lottery"], "levels": 3}})
