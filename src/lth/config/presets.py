"""Named configurations: the paper's experiments (Frankle & Carbin 2019, Table 1) and a quick demo.

Each preset is a complete :class:`ExperimentConfig` in a registry (``PRESETS``, filled by
:func:`register_preset`); command-line flags, ``--set`` and configuration files override it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _register_conv(n: int, iterations: int, lr: float, conv_rate: float) -> None:
    register_preset(
        f"conv{n}-cifar10",
        f"paper: Conv-{n} on CIFAR-10 (Adam {lr:g}, batch 60, {iterations // 1000}K it, conv "
        f"{int(conv_rate * 100)}%/fc 20%/output 10%)",
        ExperimentConfig(
            name=f"conv{n}-cifar10",
            data=DataConfig(dataset="cifar-10", val_size=5000),
            model=ModelConfig(name=f"conv{n}"),
            train=TrainConfig(iterations=iterations, batch_size=60, optimizer="adam", lr=lr),
            prune=PruneConfig(strategy="layerwise", rate=0.2, conv_rate=conv_rate),
            lottery=LotteryConfig(levels=20, trials=1, branches=("ticket", "reinit")),
            runtime=RuntimeConfig(eval_batch_size=1000),
        ),
    )


# Conv-2/4/6 on CIFAR-10 (Table 1): conv layers pruned 10% (15% for Conv-6), fc 20%, output 10%.
_register_conv(2, 20_000, 2e-4, 0.1)
_register_conv(4, 25_000, 3e-4, 0.1)
_register_conv(6, 30_000, 3e-4, 0.15)

register_preset(
    "resnet20-cifar10",
    "paper: ResNet-20 on CIFAR-10 (SGD 0.03 momentum 0.9, 20K warm-up, 30K it, batch 128, global "
    "20%, rewind to 500)",
    ExperimentConfig(
        name="resnet20-cifar10",
        data=DataConfig(dataset="cifar-10", val_size=5000),
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
        data=DataConfig(dataset="cifar-10", val_size=5000),
        model=ModelConfig(name="vgg19"),
        # LR drops at epochs 80 and 120 of 45,000 / 64 = 703 iterations each.
        train=TrainConfig(iterations=112_000, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9,
                          weight_decay=1e-4, lr_milestones=(56_240, 84_360), warmup_iterations=10_000),
        prune=PruneConfig(strategy="global", rate=0.2, prune_output=False),
        lottery=LotteryConfig(levels=20, trials=1, branches=("ticket", "reinit")),
        runtime=RuntimeConfig(eval_batch_size=500),
    ),
)
