"""Presets: the registry, its errors, and the paper's protocols."""

from __future__ import annotations

from dataclasses import replace

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
from lth.data import dataset_info
from lth.experiment.plan import global_pool, layer_rates
from lth.models import build_model, check_fit, is_conv_parameter, output_parameter, prunable_parameters

BASE = get_preset("lenet300-mnist")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_and_its_model_fits_its_data_set(name):
    cfg = get_preset(name)
    spec = dataset_info(cfg.data.dataset)  # shapes from the data registry; no data file is read
    check_fit(cfg.model.name, spec.input_shape, spec.num_classes, dataset=spec.name)  # one forward pass
    model = build_model(cfg.model.name, spec.input_shape, spec.num_classes)
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


# --------------------------------------------------------------------------- the paper's table, preset by preset
# Written from ../shared/PAPER.md ("The networks" table and the paragraph under it). Rates are per level
# and per layer kind: conv, fc (hidden fully connected), output; None = the network has no such layer;
# 0.0 = that kind stays dense. "global" pools conv and fc layers under one threshold at `rate`.
# VGG-19's LR drops "at epochs 80 and 120": 45,000 training images // batch 64 = 703 iterations per epoch.
ADAM = {"optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "milestones": (), "warmup": 0}
SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4}
RESNET = {**SGD, "model": "resnet20", "iterations": 30_000, "batch": 128, "milestones": (20_000, 25_000),
          "strategy": "global", "conv": 0.2, "fc": None, "output": 0.0}
VGG19 = {**SGD, "model": "vgg19", "iterations": 112_000, "batch": 64, "milestones": (80 * 703, 120 * 703),
         "strategy": "global", "conv": 0.2, "fc": None, "output": 0.0}
CONV = {"strategy": "layerwise", "batch": 60, "fc": 0.2, "output": 0.1}
PAPER_TABLE = {
    "lenet300-mnist": {**ADAM, "model": "lenet300", "iterations": 50_000, "batch": 60, "lr": 1.2e-3,
                       "strategy": "layerwise", "conv": None, "fc": 0.2, "output": 0.1},
    "conv2-cifar10": {**ADAM, **CONV, "model": "conv2", "iterations": 20_000, "lr": 2e-4, "conv": 0.1},
    "conv4-cifar10": {**ADAM, **CONV, "model": "conv4", "iterations": 25_000, "lr": 3e-4, "conv": 0.1},
    "conv6-cifar10": {**ADAM, **CONV, "model": "conv6", "iterations": 30_000, "lr": 3e-4, "conv": 0.15},
    # ResNet-20: "LR 0.03 with 20K iterations of linear warmup gives tickets"; the table's 0.1 finds none at k=0.
    "resnet20-cifar10": {**RESNET, "lr": 0.03, "warmup": 20_000},
    "resnet20-cifar10-lr0.1": {**RESNET, "lr": 0.1, "warmup": 0},
    "resnet20-cifar10-lr0.01": {**RESNET, "lr": 0.01, "warmup": 0},
    # VGG-19: "at LR 0.1 with 10K iterations of warmup tickets exist".
    "vgg19-cifar10": {**VGG19, "lr": 0.1, "warmup": 10_000},
    "vgg19-cifar10-lr0.1": {**VGG19, "lr": 0.1, "warmup": 0},
    "vgg19-cifar10-lr0.01": {**VGG19, "lr": 0.01, "warmup": 0},
    # Not in PAPER.md: Frankle et al. 2020's VGG-16 from its code's defaults (open_lth cifar_vgg_16):
    # 160 epochs at batch 128, drops at epochs 80 and 120; 45,000 // 128 = 351 iterations per epoch.
    "vgg16-cifar10": {**SGD, "model": "vgg16", "iterations": 160 * 351, "batch": 128, "lr": 0.1, "warmup": 0,
                      "milestones": (80 * 351, 120 * 351), "strategy": "global", "conv": 0.2, "fc": None,
                      "output": 0.0},
}
PAPER_TABLE["lenet300-fashion"] = PAPER_TABLE["lenet300-mnist"]
for _n in (2, 4, 6):  # "Dropout variants of Conv-2/4/6 use dropout 0.5": Table 1's other numbers
    PAPER_TABLE[f"conv{_n}-dropout-cifar10"] = {**PAPER_TABLE[f"conv{_n}-cifar10"], "model": f"conv{_n}-dropout"}
DATASETS = {"lenet300-mnist": "mnist", "lenet300-fashion": "fashion-mnist"}


def test_every_paper_preset_is_in_the_table():
    assert set(PAPER_TABLE) == set(preset_names()) - {"digits-quick"}


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_preset_hyperparameters_equal_the_papers(name):
    want, cfg = PAPER_TABLE[name], get_preset(name)
    t = cfg.train
    assert cfg.model.name == want["model"]
    assert cfg.data.dataset == DATASETS.get(name, "cifar-10") and cfg.data.val_size == 5000
    assert (t.iterations, t.batch_size, t.optimizer, t.lr) == (want["iterations"], want["batch"], want["optimizer"],
                                                               want["lr"])
    assert (t.lr_milestones, t.warmup_iterations, t.weight_decay) == (want["milestones"], want["warmup"],
                                                                      want["weight_decay"])
    assert t.lr_gamma == 0.1 and t.eval_every == 100
    if t.optimizer == "sgd":
        assert t.momentum == want["momentum"]
    assert cfg.prune.strategy == want["strategy"]


def _layer_kind(model, name: str) -> str:
    if name == output_parameter(model):
        return "output"
    return "conv" if is_conv_parameter(model, name) else "fc"


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_each_layer_kind_is_pruned_at_the_papers_rate(name):
    want, cfg = PAPER_TABLE[name], get_preset(name)
    spec = dataset_info(cfg.data.dataset)
    model = build_model(cfg.model.name, spec.input_shape, spec.num_classes)
    names = prunable_parameters(model)
    if cfg.prune.strategy == "layerwise":  # the rates the IMP driver applies, layer by layer
        got = {}
        for n, r in layer_rates(model, cfg).items():
            got.setdefault(_layer_kind(model, n), set()).add(r)
    else:  # one threshold over the pool at prune.rate; layers outside the pool stay dense
        pool = global_pool(model, cfg)
        got = {}
        for n in names:
            got.setdefault(_layer_kind(model, n), set()).add(cfg.prune.rate if n in pool else 0.0)
    expected = {kind: {want[kind]} for kind in ("conv", "fc", "output") if want[kind] is not None}
    assert got == expected


def test_dropout_presets_train_with_dropout_one_half():
    for n in (2, 4, 6):
        model = build_model(get_preset(f"conv{n}-dropout-cifar10").model.name, (3, 32, 32), 10)
        assert [m.p for m in model.modules() if type(m).__name__ == "Dropout"] == [0.5, 0.5, 0.5]


def test_learning_rate_variants_change_only_the_learning_rate_warmup_and_reset_point():
    for base, variants in [("resnet20-cifar10", ("lr0.1", "lr0.01")), ("vgg19-cifar10", ("lr0.1", "lr0.01"))]:
        b = get_preset(base)
        for v in variants:
            c = get_preset(f"{base}-{v}")
            assert c.train.lr == float(v[2:]) and c.train.warmup_iterations == 0
            assert c.lottery.rewind_iteration == 0  # the paper's LR comparisons reset to theta0
            assert (c.data, c.model, c.prune, c.runtime) == (b.data, b.model, b.prune, b.runtime)
            assert replace(c.train, lr=b.train.lr, warmup_iterations=b.train.warmup_iterations) == b.train
