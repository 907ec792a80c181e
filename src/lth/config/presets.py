"""Named configurations: the paper's experiments (Frankle & Carbin 2019, Table 1) and a quick demo.

Each preset is a complete :class:`ExperimentConfig` in a registry (``PRESETS``, filled by
:func:`register_preset`); command-line flags, ``--set`` and configuration files override it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .schema import (
    DataConfig,
    ExperimentConfig,
    LotteryConfig,
    ModelConfig,
    PruneConfig,
    RuntimeConfig,
    TrainConfig,
)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str  # one line for `lth presets`
    config: ExperimentConfig


PRESETS: dict[str, Preset] = {}


class PresetError(ValueError):
    """An unknown or conflicting preset name; the message lists the valid ones."""


def register_preset(name: str, description: str, config: ExperimentConfig) -> ExperimentConfig:
    """Add ``config`` to the registry under ``name`` and return it (so presets can build on it).

    The configuration's own ``name`` must be the preset's, because it starts the run directory's
    name; a name can be registered once, so a preset never silently changes meaning.
    """
    if name in PRESETS:
        raise PresetError(f"preset {name!r} is already registered; pick another name")
    if config.name != name:
        raise PresetError(f"preset {name!r}: its configuration is named {config.name!r}; name it {name!r}")
    PRESETS[name] = Preset(name, description, config)
    return config


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)} "
                          "(see `lth presets`)")
    return PRESETS[name].config


def describe_presets() -> list[tuple[str, str]]:
    return [(p.name, p.description) for p in PRESETS.values()]


register_preset(
    "digits-quick",
    "demo: IMP of a 100-50 MLP on scikit-learn's bundled 8x8 digits, 16 levels (3.5% of weights), "
    "5 trials, ticket+reinit+random_mask (no download, under a minute on 2 CPU cores)",
    ExperimentConfig(
        name="digits-quick",
        data=DataConfig(dataset="digits", val_size=300),
        model=ModelConfig(name="mlp-100-50"),
        train=TrainConfig(iterations=2000, batch_size=60, optimizer="adam", lr=1.2e-3, eval_every=50),
        prune=PruneConfig(strategy="layerwise", rate=0.2),
        # Deep enough that the controls fall away: at 3-8% of weights tickets stay within about a
        # point of the dense network while reinit and random masks lose one to twenty-four points.
        lottery=LotteryConfig(levels=16, trials=5, branches=("ticket", "reinit", "random_mask")),
    ),
)

# Table 1: Adam 1.2e-3, batch 60, 50K iterations; hidden layers 20%/level, output 10%/level.
_LENET = register_preset(
    "lenet300-mnist",
    "paper: LeNet-300-100 on MNIST (Adam 1.2e-3, batch 60, 50K it, fc 20%/output 10% per level)",
    ExperimentConfig(
        name="lenet300-mnist",
        data=DataConfig(dataset="mnist", val_size=5000),
        model=ModelConfig(name="lenet300"),
        train=TrainConfig(iterations=50_000, batch_size=60, optimizer="adam", lr=1.2e-3, eval_every=100),
        prune=PruneConfig(strategy="layerwise", rate=0.2),
        lottery=LotteryConfig(levels=15, trials=1, branches=("ticket", "reinit")),
    ),
)

register_preset(
    "lenet300-fashion",
    "LeNet-300-100 on Fashion-MNIST with the MNIST protocol",
    ExperimentConfig(
        name="lenet300-fashion",
        data=DataConfig(dataset="fashion-mnist", val_size=5000),
        model=_LENET.model,
        train=_LENET.train,
        prune=_LENET.prune,
        lottery=_LENET.lottery,
    ),
)


def _register_conv(n: int, iterations: int, lr: float, conv_rate: float, dropout: bool = False) -> None:
    model = f"conv{n}-dropout" if dropout else f"conv{n}"
    note = ", dropout 0.5, Table 1's LR and length: the paper's dropout ones are not in PAPER.md" if dropout else ""
    register_preset(
        f"{model}-cifar10",
        f"paper: Conv-{n} on CIFAR-10 (Adam {lr:g}, batch 60, {iterations // 1000}K it, conv "
        f"{int(conv_rate * 100)}%/fc 20%/output 10%{note})",
        ExperimentConfig(
            name=f"{model}-cifar10",
            data=DataConfig(dataset="cifar-10", val_size=5000),
            model=ModelConfig(name=model),
            train=TrainConfig(iterations=iterations, batch_size=60, optimizer="adam", lr=lr),
            prune=PruneConfig(strategy="layerwise", rate=0.2, conv_rate=conv_rate),
            lottery=LotteryConfig(levels=20, trials=1, branches=("ticket", "reinit")),
            runtime=RuntimeConfig(eval_batch_size=1000),
        ),
    )


# Conv-2/4/6 on CIFAR-10 (Table 1): conv layers pruned 10% (15% for Conv-6), fc 20%, output 10%.
CONV_TABLE = {2: (20_000, 2e-4, 0.1), 4: (25_000, 3e-4, 0.1), 6: (30_000, 3e-4, 0.15)}
for _n, (_iterations, _lr, _conv_rate) in CONV_TABLE.items():
    _register_conv(_n, _iterations, _lr, _conv_rate)
# The dropout variants (paper Sec. 3, Fig. 9: p = 0.5) keep Table 1's hyperparameters; the paper
# trains them longer at its own learning rates, which PAPER.md does not give, so they are not guessed.
for _n, (_iterations, _lr, _conv_rate) in CONV_TABLE.items():
    _register_conv(_n, _iterations, _lr, _conv_rate, dropout=True)

register_preset(
    "resnet20-cifar10",
    "paper: ResNet-20 on CIFAR-10 (SGD 0.03 momentum 0.9, 20K warm-up, 30K it, batch 128, global "
    "20%, rewind to 500, crop+flip)",
    ExperimentConfig(
        name="resnet20-cifar10",
        data=DataConfig(dataset="cifar-10", val_size=5000, augment="crop_flip"),
        model=ModelConfig(name="resnet20"),
        # App. I: LR 0.1 finds no ticket at k=0; LR 0.03 with 20K warm-up does. Rewinding to
        # iteration 500 gives stable matching tickets (Frankle et al. 2020).
        train=TrainConfig(iterations=30_000, batch_size=128, optimizer="sgd", lr=0.03, momentum=0.9,
                          weight_decay=1e-4, lr_milestones=(20_000, 25_000), warmup_iterations=20_000),
        prune=PruneConfig(strategy="global", rate=0.2, prune_output=False),
        lottery=LotteryConfig(levels=20, trials=1, branches=("ticket", "reinit"), rewind_iteration=500),
        runtime=RuntimeConfig(eval_batch_size=1000),
    ),
)

register_preset(
    "vgg19-cifar10",
    "paper: VGG-19 on CIFAR-10 (SGD 0.1 momentum 0.9, 10K warm-up, 112K it, batch 64, global 20%)",
    ExperimentConfig(
        name="vgg19-cifar10",
        data=DataConfig(dataset="cifar-10", val_size=5000, augment="crop_flip"),
        model=ModelConfig(name="vgg19"),
        # LR drops at epochs 80 and 120 of 45,000 / 64 = 703 iterations each.
        train=TrainConfig(iterations=112_000, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9,
                          weight_decay=1e-4, lr_milestones=(56_240, 84_360), warmup_iterations=10_000),
        prune=PruneConfig(strategy="global", rate=0.2, prune_output=False),
        lottery=LotteryConfig(levels=20, trials=1, branches=("ticket", "reinit")),
        runtime=RuntimeConfig(eval_batch_size=500),
    ),
)


def _variant(base: ExperimentConfig, name: str, description: str, lr: float) -> None:
    """``base`` at another initial learning rate, without warm-up and resetting to theta0 (k = 0),
    as in the paper's learning-rate comparisons (Sec. 4, Figs. 7 and 8)."""
    register_preset(name, description, replace(
        base, name=name, train=replace(base.train, lr=lr, warmup_iterations=0),
        lottery=replace(base.lottery, rewind_iteration=0)))


# Sec. 4 / App. I: ResNet-20 and VGG-19 at the table's LR 0.1 (no ticket found at k = 0) and at 0.01.
_RESNET20, _VGG19 = PRESETS["resnet20-cifar10"].config, PRESETS["vgg19-cifar10"].config
_variant(_RESNET20, "resnet20-cifar10-lr0.1",
         "paper: ResNet-20 on CIFAR-10 at the table's SGD 0.1 (no warm-up, reset to theta0; 30K it, batch 128, "
         "global 20%)", 0.1)
_variant(_RESNET20, "resnet20-cifar10-lr0.01",
         "paper: ResNet-20 on CIFAR-10 at SGD 0.01 (no warm-up, reset to theta0; 30K it, batch 128, global 20%)",
         0.01)
_variant(_VGG19, "vgg19-cifar10-lr0.1",
         "paper: VGG-19 on CIFAR-10 at SGD 0.1 without warm-up (112K it, batch 64, global 20%)", 0.1)
_variant(_VGG19, "vgg19-cifar10-lr0.01",
         "paper: VGG-19 on CIFAR-10 at SGD 0.01 without warm-up (112K it, batch 64, global 20%)", 0.01)

# VGG-16 as in Frankle et al. 2020 (Linear Mode Connectivity), whose numbers PAPER.md does not list.
# Source: the defaults of its code (facebookresearch/open_lth, cifar_vgg_16): 160 epochs at batch 128,
# SGD 0.1 momentum 0.9, LR x0.1 at epochs 80 and 120, weight decay 1e-4, global pruning 20% per level
# with the output layer left dense, training images randomly cropped and flipped. open_lth trains on
# all 50,000 images (about 63K iterations); lth holds out 5,000 for validation, so the same epochs are
# 45,000 // 128 = 351 iterations each: 56,160 iterations, drops at 28,080 and 42,120.
register_preset(
    "vgg16-cifar10",
    "Frankle et al. 2020: VGG-16 on CIFAR-10 (SGD 0.1 momentum 0.9, 160 epochs = 56,160 it, batch 128, LR "
    "x0.1 at epochs 80/120, crop+flip, global 20%; source: open_lth's defaults)",
    ExperimentConfig(
        name="vgg16-cifar10",
        data=DataConfig(dataset="cifar-10", val_size=5000, augment="crop_flip"),
        model=ModelConfig(name="vgg16"),
        train=TrainConfig(iterations=160 * 351, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                          weight_decay=1e-4, lr_milestones=(80 * 351, 120 * 351)),
        prune=PruneConfig(strategy="global", rate=0.2, prune_output=False),
        lottery=LotteryConfig(levels=20, trials=1, branches=("ticket", "reinit")),
        runtime=RuntimeConfig(eval_batch_size=500),
    ),
)
