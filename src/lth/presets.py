"""Named configurations: the paper's experiments (Frankle & Carbin 2019, Table 1) and a quick demo.

Each preset is a complete :class:`ExperimentConfig`; command-line flags and ``--set`` override it.
"""

from __future__ import annotations

from .config import (
    DataConfig,
    ExperimentConfig,
    LotteryConfig,
    ModelConfig,
    PruneConfig,
    RuntimeConfig,
    TrainConfig,
)

PRESETS: dict[str, tuple[str, ExperimentConfig]] = {}


class PresetError(ValueError):
    pass


def _add(name: str, description: str, cfg: ExperimentConfig) -> None:
    PRESETS[name] = (description, cfg)


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)} "
                          "(see `lth presets`)")
    return PRESETS[name][1]


def describe_presets() -> list[tuple[str, str]]:
    return [(n, d) for n, (d, _) in PRESETS.items()]


_add(
    "digits-quick",
    "demo: IMP of a 100-50 MLP on scikit-learn's bundled 8x8 digits, 8 levels, 2 trials, "
    "ticket+reinit (no download, about a minute on 2 CPU cores)",
    ExperimentConfig(
        name="digits-quick",
        data=DataConfig(dataset="digits", val_size=300),
        model=ModelConfig(name="mlp-100-50"),
        train=TrainConfig(iterations=2000, batch_size=60, optimizer="adam", lr=1.2e-3, eval_every=50),
        prune=PruneConfig(strategy="layerwise", rate=0.2),
        lottery=LotteryConfig(levels=8, trials=2, branches=("ticket", "reinit")),
    ),
)

_LENET = ExperimentConfig(
    name="lenet300-mnist",
    data=DataConfig(dataset="mnist", val_size=5000),
    model=ModelConfig(name="lenet300"),
    # Table 1: Adam 1.2e-3, batch 60, 50K iterations; hidden layers 20%/level, output 10%/level.
    train=TrainConfig(iterations=50_000, batch_size=60, optimizer="adam", lr=1.2e-3, eval_every=100),
    prune=PruneConfig(strategy="layerwise", rate=0.2),
    lottery=LotteryConfig(levels=15, trials=1, branches=("ticket", "reinit")),
)
_add("lenet300-mnist",
     "paper: LeNet-300-100 on MNIST (Adam 1.2e-3, batch 60, 50K it, fc 20%/output 10% per level)",
     _LENET)
_add("lenet300-fashion",
     "LeNet-300-100 on Fashion-MNIST with the MNIST protocol",
     ExperimentConfig(name="lenet300-fashion", data=DataConfig(dataset="fashion-mnist", val_size=5000),
                      model=_LENET.model, train=_LENET.train, prune=_LENET.prune,
                      lottery=_LENET.lottery))

# Conv-2/4/6 on CIFAR-10 (Table 1): conv layers pruned 10% (15% for Conv-6), fc 20%, output 10%.
for _n, _it, _lr, _conv in ((2, 20_000, 2e-4, 0.1), (4, 25_000, 3e-4, 0.1), (6, 30_000, 3e-4, 0.15)):
    _add(
        f"conv{_n}-cifar10",
        f"paper: Conv-{_n} on CIFAR-10 (Adam {_lr:g}, batch 60, {_it // 1000}K it, conv "
        f"{int(_conv * 100)}%/fc 20%/output 10%)",
        ExperimentConfig(
            name=f"conv{_n}-cifar10",
            data=DataConfig(dataset="cifar-10", val_size=5000),
            model=ModelConfig(name=f"conv{_n}"),
            train=TrainConfig(iterations=_it, batch_size=60, optimizer="adam", lr=_lr),
            prune=PruneConfig(strategy="layerwise", rate=0.2, conv_rate=_conv),
            lottery=LotteryConfig(levels=20, trials=1, branches=("ticket", "reinit")),
            runtime=RuntimeConfig(eval_batch_size=1000),
        ),
    )

_add(
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

_add(
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
