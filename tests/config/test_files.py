"""Configuration files: TOML and YAML round trips, partial files, preset bases, clear errors."""

from __future__ import annotations

import json
import sys

import pytest

from lth.config import (
    PRESETS,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    PruneConfig,
    TrainConfig,
    apply_overrides,
    config_hash,
    dump_config,
    get_preset,
    load_config,
)

SUFFIX = {"toml": ".toml", "yaml": ".yaml"}


def _exact(cfg: ExperimentConfig) -> str:
    """to_dict() as JSON, which tells 0 from 0.0 the way config_hash does."""
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _round_trip(cfg: ExperimentConfig, fmt: str, tmp_path) -> ExperimentConfig:
    p = tmp_path / f"cfg{SUFFIX[fmt]}"
    p.write_text(dump_config(cfg, fmt), encoding="utf-8")
    return load_config(p)


def _write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_to_an_equal_config_with_the_same_hash(name, fmt, tmp_path):
    cfg = get_preset(name)
    back = _round_trip(cfg, fmt, tmp_path)
    assert back == cfg
    assert config_hash(back) == config_hash(cfg)
    assert _exact(back) == _exact(cfg)


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
@pytest.mark.parametrize(
    "cfg",
    [
        ExperimentConfig(data=DataConfig(dataset='quote " backslash \\ tab \t newline \n del \x7f nel \x85 é 🎟')),
        ExperimentConfig(name="true"),  # text that YAML would otherwise read as a flag
        ExperimentConfig(name="1e3"),
        ExperimentConfig(train=TrainConfig(lr=1e-05, weight_decay=5e-324, momentum=0.0)),
        ExperimentConfig(train=TrainConfig(lr=1e16, lr_milestones=(1, 2, 3))),
        # --set prune.output_rate=0 keeps an int, and its run directory hashes the int.
        apply_overrides(ExperimentConfig(), ["prune.output_rate=0", "prune.conv_rate=0.5"]),
        apply_overrides(ExperimentConfig(), ["lottery.branches=random_mask", "lottery.one_shot=on",
                                              "runtime.test_eval=best", "train.precision=bf16"]),
    ],
    ids=["odd-name", "name-true", "name-1e3", "tiny-floats", "huge-float", "int-output-rate", "flags"],
)
def test_unusual_values_round_trip_exactly(cfg, fmt, tmp_path):
    back = _round_trip(cfg, fmt, tmp_path)
    assert back == cfg and _exact(back) == _exact(cfg) and config_hash(back) == config_hash(cfg)


def test_toml_dump_is_an_editable_file_with_section_comments():
    text = dump_config(get_preset("conv2-cifar10"))
    lines = text.splitlines()
    for section in ("data", "model", "train", "prune", "lottery", "runtime"):
        i = lines.index(f"[{section}]")
        assert lines[i - 1].startswith("# "), section
    assert "# Magnitude pruning per level (paper Sec. 2 and Table 1)." in lines
    assert 'name = "conv2-cifar10"' in lines and "conv_rate = 0.1" in lines
    # TOML has no null: the unset field is a comment, and reading it back gives the default None.
    assert not any(line.startswith("output_rate") for line in lines)
    assert "# output_rate is unset (None); write output_rate = <value> to set it" in lines


def test_yaml_dump_writes_null_and_needs_no_pyyaml(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    text = dump_config(get_preset("conv2-cifar10"), "yaml")
    assert "prune:\n  strategy: \"layerwise\"\n" in text and "  output_rate: null\n" in text
    assert dump_config(get_preset("conv2-cifar10"), "yml") == text


def test_partial_toml_takes_the_dataclass_defaults(tmp_path):
    p = _write(tmp_path, "partial.toml", '[train]\niterations = 500\n\n[lottery]\nlevels = 2\n')
    cfg = load_config(p)
    default = ExperimentConfig()
    assert (cfg.train.iterations, cfg.lottery.levels) == (500, 2)
    assert cfg.name == default.name and cfg.data == default.data and cfg.prune == default.prune
    assert cfg.train.lr == default.train.lr and cfg.lottery.branches == default.lottery.branches
    assert load_config(_write(tmp_path, "empty.toml", "")) == default


def test_partial_yaml_takes_the_dataclass_defaults(tmp_path):
    p = _write(tmp_path, "partial.yml", "name: mine\nlottery:\n  branches:\n    - ticket\n    - random_mask\n")
    cfg = load_config(p)
    assert cfg.name == "mine" and cfg.lottery.branches == ("ticket", "random_mask")
    assert cfg.train == ExperimentConfig().train
    assert load_config(_write(tmp_path, "empty.yaml", "# nothing yet\n")) == ExperimentConfig()
    # A section whose fields are all commented out is empty, not an error.
    assert load_config(_write(tmp_path, "bare.yaml", "train:\n  # lr: 0.1\nlottery:\n")) == ExperimentConfig()


def test_a_file_may_override_a_named_preset(tmp_path):
    base = get_preset("resnet20-cifar10")
    p = _write(tmp_path, "r.toml", 'preset = "resnet20-cifar10"\n[lottery]\nlevels = 3\n')
    cfg = load_config(p)
    assert cfg.name == "resnet20-cifar10" and cfg.lottery.levels == 3
    assert cfg.train == base.train and cfg.prune == base.prune and cfg.runtime == base.runtime
    # levels only adds units: the same run directory as the preset.
    assert config_hash(cfg) == config_hash(base)


def test_yaml_null_clears_a_value_the_preset_sets(tmp_path):
    assert get_preset("conv2-cifar10").prune.conv_rate == 0.1
    cfg = load_config(_write(tmp_path, "c.yaml", "preset: conv2-cifar10\nprune:\n  conv_rate: null\n"))
    assert cfg.prune.conv_rate is None


def test_integers_in_float_fields_read_as_floats_so_the_hash_matches(tmp_path):
    p = _write(tmp_path, "w.toml", 'preset = "lenet300-mnist"\n[train]\nweight_decay = 0\nlr_gamma = 1\n')
    cfg = load_config(p)
    assert type(cfg.train.weight_decay) is float and type(cfg.train.lr_gamma) is float
    assert config_hash(cfg) == config_hash(apply_overrides(get_preset("lenet300-mnist"), ["train.lr_gamma=1"]))
    assert config_hash(load_config(_write(tmp_path, "same.toml", 'preset = "lenet300-mnist"\n'))) == "fc00979ad0"


def test_yaml_exponent_without_a_point_is_read_as_a_number(tmp_path):
    cfg = load_config(_write(tmp_path, "e.yaml", "train:\n  lr: 1e-3\nprune:\n  output_rate: 5E-2\n"))
    assert cfg.train.lr == 0.001 and cfg.prune.output_rate == 0.05


def _error(tmp_path, name: str, text: str | bytes) -> str:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: "), msg
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("syntax.toml", "[train]\nlr = = 0.1\n", ["not valid TOML", "line 2"]),
        ("syntax.toml", "[train\n", ["not valid TOML", "line 1"]),
        ("dup.toml", "[train]\nlr = 0.1\nlr = 0.2\n", ["not valid TOML"]),
        ("syntax.yaml", "train:\n  lr: [0.1\n", ["not valid YAML", "line"]),
        ("syntax.yaml", "train:\n  lr: 0.1\n bad: 1\n", ["not valid YAML", "line 3"]),
        ("section.toml", "[trian]\nlr = 0.1\n", ["unknown top-level key 'trian'", "valid keys", "train"]),
        ("field.toml", "[train]\nlrate = 0.1\n", ["train.lrate", "did you mean lr", "valid fields of train"]),
        ("field.yaml", "prune:\n  rates: 0.3\n", ["prune.rates", "did you mean rate"]),
        ("toplevel.toml", "lr = 0.1\n", ["unknown top-level key 'lr'", "field of train", "[train]"]),
        ("type.toml", '[train]\nlr = "fast"\n', ["train.lr = 'fast'", "positive finite number"]),
        ("type.toml", "[train]\niterations = 1.5\n", ["train.iterations = 1.5", "positive integer"]),
        ("type.toml", '[lottery]\nbranches = "ticket"\n', ["lottery.branches = 'ticket'", "must be a list"]),
        ("type.toml", "[lottery]\none_shot = 1\n", ["lottery.one_shot = 1", "true or false"]),
        ("type.toml", "[data]\ndataset = 2024-01-01\n", ["data.dataset = datetime.date(2024, 1, 1)", "name"]),
        ("type.toml", 'name = ["a"]\n', ["name = ['a']", "run directory is named after it"]),
        ("type.yaml", "runtime:\n  device: [cpu]\n", ["runtime.device = ('cpu',)", "choose cpu, cuda"]),
        ("range.toml", "[prune]\nrate = 1.5\n", ["prune.rate = 1.5", "(0, 1)"]),
        ("cross.toml", "[train]\niterations = 100\n[lottery]\nrewind_iteration = 100\n",
         ["lottery.rewind_iteration = 100", "smaller than train.iterations = 100"]),
        ("table.toml", "train = 5\n", ["train = 5", "must be a table of fields", "[train]"]),
        ("table.yaml", "train: fast\n", ["train = 'fast'", "must be a table of fields", "train:"]),
        ("none.yaml", "train:\n  lr: null\n", ["train.lr = None", "positive finite number"]),
        ("none.yaml", "train:\n  iterations:\n", ["train.iterations = None", "positive integer"]),
        ("none.yaml", "lottery:\n  branches: ~\n", ["lottery.branches = None", "must be a list"]),
        ("none.yaml", "name: null\n", ["name = None", "run directory is named after it"]),
        ("list.yaml", "- train\n- lottery\n", ["must hold a mapping of sections"]),
        ("preset.toml", 'preset = "lenet-mnist"\n', ["unknown preset 'lenet-mnist'", "lenet300-mnist"]),
        ("preset.toml", "preset = 3\n", ["preset = 3", "preset's name"]),
        ("bytes.toml", b"name = \"\xff\"\n", ["not UTF-8"]),
    ],
)
def test_bad_files_are_one_line_config_errors_naming_the_file_and_field(tmp_path, name, text, words):
    msg = _error(tmp_path, name, text)
    for w in words:
        assert w in msg, (w, msg)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(ConfigError, match=r"no such configuration file"):
        load_config(tmp_path / "absent.toml")
    p = _write(tmp_path, "cfg.json", "{}")
    with pytest.raises(ConfigError, match=r"cfg.json: unknown configuration file type '.json'.*\.toml"):
        load_config(p)
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"folder.toml: cannot read the configuration file"):
        load_config(folder)


def test_yaml_without_pyyaml_says_how_to_install_it(tmp_path, monkeypatch):
    p = _write(tmp_path, "cfg.yaml", "name: x\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and "pip install 'lth[yaml]'" in str(e.value)


def test_toml_falls_back_to_tomli_and_says_so_when_neither_is_there(tmp_path, monkeypatch):
    import tomllib

    p = _write(tmp_path, "cfg.toml", 'name = "x"\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # tomli is the same parser under another name
    assert load_config(p).name == "x"
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and "pip install tomli" in str(e.value)


def test_dump_refuses_what_a_file_cannot_carry_back():
    with pytest.raises(ConfigError, match=r"train.lr = 1: an integer in a float field.*1.0"):
        dump_config(ExperimentConfig(train=TrainConfig(lr=1)))
    with pytest.raises(ConfigError, match=r"choose one of toml, yaml"):
        dump_config(ExperimentConfig(), "json")
    # No valid configuration holds None where the default is not None; force one to check the guard.
    prune = PruneConfig()
    object.__setattr__(prune, "rate", None)
    cfg = ExperimentConfig(prune=PruneConfig())
    object.__setattr__(cfg, "prune", prune)
    with pytest.raises(ConfigError, match=r"prune.rate = None: TOML has no null.*default 0.2.*YAML"):
        dump_config(cfg, "toml")
