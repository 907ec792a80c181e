"""Experiment configuration: one frozen dataclass per concern, nested into ExperimentConfig.

Validation lives in ``__post_init__`` and every message names the field, the value and what is
allowed, so a mistyped flag fails before any training starts. The run directory is named from a
hash of the *resolved* configuration (see :func:`config_hash`); only fields that change the science
go into the hash (see ``ExperimentConfig.identity_dict``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

BRANCHES = ("ticket", "reinit", "random_mask")
OPTIMIZERS = ("adam", "sgd")
PRECISIONS = ("fp32", "bf16")
TEST_EVALS = ("every", "best")
# Fields added after runs were made: omitted from the identity at these defaults, so older run
# directories keep their hash.
LATER_TRAIN_DEFAULTS = {"precision": "fp32"}
STRATEGIES = ("layerwise", "global")
EXTENSIBLE_LOTTERY_FIELDS = ("levels", "trials", "branches")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and the fix."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _positive_int(section: str, name: str, value: Any) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{section}.{name} = {value!r}: must be a positive integer",
    )


def _rate(section: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    lo_ok = value >= 0 if allow_zero else value > 0
    _check(
        isinstance(value, (int, float)) and not isinstance(value, bool) and lo_ok and value < 1,
        f"{section}.{name} = {value!r}: must be a fraction in {'[0' if allow_zero else '(0'}, 1)",
    )


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives and how the validation split is drawn."""

    dataset: str = "mnist"
    val_size: int = 5000  # Frankle & Carbin App. B: 5,000 of MNIST's 60,000 training images.
    split_seed: int = 0  # The validation split is fixed for a whole experiment.

    def __post_init__(self) -> None:
        _check(isinstance(self.dataset, str) and self.dataset != "", "data.dataset must be a name")
        _check(
            isinstance(self.val_size, int) and self.val_size > 0,
            f"data.val_size = {self.val_size!r}: must be a positive integer (the early-stopping "
            "iteration needs a validation split held out from training)",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture from the model registry (see ``lth presets`` / ``lth.models``)."""

    name: str = "lenet300"

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and self.name != "", "model.name must be a name")


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained. Counts iterations, not epochs (paper App. B)."""

    iterations: int = 50_000
    batch_size: int = 60
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    # Iterations at which the learning rate is multiplied by lr_gamma (ResNet-20: 20K, 25K).
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    warmup_iterations: int = 0  # linear warm-up from 0 (ResNet-20 at LR 0.03 uses 20K)
    eval_every: int = 100  # validation and test metrics every 100 iterations (paper App. B)
    # Matrix-product precision: "fp32" (the paper's), or "bf16" (bfloat16 products with float32
    # weights, optimizer state and loss; uses AMX/AVX512-BF16 on recent CPUs, tensor cores on GPUs).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        s = "train"
        _check(
            self.precision in PRECISIONS,
            f"train.precision = {self.precision!r}: unknown precision; choose one of {', '.join(PRECISIONS)}",
        )
        _positive_int(s, "iterations", self.iterations)
        _positive_int(s, "batch_size", self.batch_size)
        _positive_int(s, "eval_every", self.eval_every)
        _check(
            self.optimizer in OPTIMIZERS,
            f"train.optimizer = {self.optimizer!r}: unknown optimizer; choose one of {', '.join(OPTIMIZERS)}",
        )
        _check(
            isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0,
            f"train.lr = {self.lr!r}: must be a positive finite number",
        )
        _check(0 <= self.momentum < 1, f"train.momentum = {self.momentum!r}: must be in [0, 1)")
        _check(self.weight_decay >= 0, f"train.weight_decay = {self.weight_decay!r}: must be >= 0")
        _check(0 < self.lr_gamma <= 1, f"train.lr_gamma = {self.lr_gamma!r}: must be in (0, 1]")
        _check(
            isinstance(self.warmup_iterations, int) and 0 <= self.warmup_iterations <= self.iterations,
            f"train.warmup_iterations = {self.warmup_iterations!r}: must be in [0, train.iterations="
            f"{self.iterations}]",
        )
        ms = tuple(self.lr_milestones)
        object.__setattr__(self, "lr_milestones", ms)
        _check(
            all(isinstance(m, int) and 0 < m for m in ms) and list(ms) == sorted(ms),
            f"train.lr_milestones = {ms!r}: must be increasing positive iteration counts",
        )


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning per level (paper Sec. 2 and Table 1).

    ``rate`` is the fraction of the *remaining* fully connected weights pruned per level,
    ``conv_rate`` the same for convolutions (defaults to ``rate``), ``output_rate`` for the output
    layer (defaults to half of ``rate``: "connections to the output layer are pruned at half the
    rate"). With ``strategy="global"`` one threshold is used across all pruned layers at ``rate``
    and ``output_rate`` 0 means the output layer is left dense (ResNet-20/VGG-19 protocol).
    """

    strategy: str = "layerwise"
    rate: float = 0.2
    conv_rate: float | None = None
    output_rate: float | None = None
    prune_output: bool = True

    def __post_init__(self) -> None:
        _check(
            self.strategy in STRATEGIES,
            f"prune.strategy = {self.strategy!r}: choose one of {', '.join(STRATEGIES)}",
        )
        _rate("prune", "rate", self.rate)
        if self.conv_rate is not None:
            _rate("prune", "conv_rate", self.conv_rate)
        if self.output_rate is not None:
            _rate("prune", "output_rate", self.output_rate, allow_zero=True)

    @property
    def resolved_conv_rate(self) -> float:
        return self.rate if self.conv_rate is None else self.conv_rate

    @property
    def resolved_output_rate(self) -> float:
        if not self.prune_output:
            return 0.0
        return self.rate / 2 if self.output_rate is None else self.output_rate


@dataclass(frozen=True)
class LotteryConfig:
    """The IMP driver: how many levels and trials, which branches, reset or rewind, one-shot."""

    levels: int = 15  # level 0 is dense; levels 1..L are pruned
    trials: int = 1
    branches: tuple[str, ...] = ("ticket", "reinit")
    rewind_iteration: int = 0  # 0 = reset survivors to theta0; k > 0 = rewind to theta_k
    one_shot: bool = False  # prune the dense network directly to each level's size
    seed: int = 0  # base seed; every randomness source derives its own from it

    def __post_init__(self) -> None:
        _check(
            isinstance(self.levels, int) and self.levels >= 0,
            f"lottery.levels = {self.levels!r}: must be an integer >= 0 (0 = dense only)",
        )
        _positive_int("lottery", "trials", self.trials)
        b = tuple(self.branches)
        object.__setattr__(self, "branches", b)
        unknown = [x for x in b if x not in BRANCHES]
        _check(
            not unknown and len(b) > 0,
            f"lottery.branches = {','.join(b) or '(empty)'}: unknown branch "
            f"{', '.join(unknown) or '(none given)'}; choose from {', '.join(BRANCHES)}",
        )
        _check(len(set(b)) == len(b), f"lottery.branches = {b!r}: a branch is listed twice")
        _check(
            isinstance(self.rewind_iteration, int) and self.rewind_iteration >= 0,
            f"lottery.rewind_iteration = {self.rewind_iteration!r}: must be an integer >= 0",
        )


@dataclass(frozen=True)
class RuntimeConfig:
    """How the work is executed; none of it changes the numbers, so it is not hashed."""

    device: str = "cpu"
    checkpoint_every: int = 1000  # iterations between resumable checkpoints
    threads: int = 0  # torch intra-op threads; 0 = leave PyTorch's default
    # examples per forward pass when evaluating a whole split (at most; the MLP engine takes 1,000 or,
    # with a sparse first layer, 512 at a time, which is faster: lth.stacked.MLPEngine.eval_chunk_limit)
    eval_batch_size: int = 10_000
    deterministic: bool = False  # torch.use_deterministic_algorithms (matters on CUDA only)
    # Units of a level trained together as one vectorised computation; 0 = choose automatically
    # (all of a level's units for models without BatchNorm/dropout, else 1), 1 = one at a time.
    parallel_units: int = 0
    # When the test split is evaluated: "every" evaluation point (the full test-accuracy curve), or
    # "best": only where validation loss reaches a new minimum (every candidate early-stopping
    # point) and at the last iteration. Every number a unit reports (test accuracy at early stop,
    # final test accuracy) is the same; the history then holds test values at those points only.
    test_eval: str = "every"
    # Flush denormal floats to zero on the CPU while training (lth.train.denormals_flushed): late
    # in training ~10% of a confident classifier's softmax outputs are denormal and slow every
    # product that reads them. Changes only values below 1.2e-38, but such last-bit differences
    # can grow over thousands of iterations: the LeNet figure rerun with it matched the run without
    # it bitwise in 137 of 245 units and statistically in all (docs/PERFORMANCE.md).
    flush_denormals: bool = True

    def __post_init__(self) -> None:
        _positive_int("runtime", "checkpoint_every", self.checkpoint_every)
        _positive_int("runtime", "eval_batch_size", self.eval_batch_size)
        _check(self.threads >= 0, f"runtime.threads = {self.threads!r}: must be >= 0")
        _check(isinstance(self.parallel_units, int) and self.parallel_units >= 0,
               f"runtime.parallel_units = {self.parallel_units!r}: must be an integer >= 0 "
               "(0 = automatic, 1 = one unit at a time)")
        _check(self.test_eval in TEST_EVALS,
               f"runtime.test_eval = {self.test_eval!r}: choose one of {', '.join(TEST_EVALS)} "
               "(every = test metrics at every evaluation; best = only at new validation-loss minima "
               "and the last iteration)")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    lottery: LotteryConfig = field(default_factory=LotteryConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        k = self.lottery.rewind_iteration
        _check(
            k < self.train.iterations,
            f"lottery.rewind_iteration = {k}: must be smaller than train.iterations = "
            f"{self.train.iterations} (it is an iteration of the dense training run)",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity_dict(self) -> dict[str, Any]:
        """The fields that determine any unit's numbers.

        Excluded: ``name``, ``runtime`` (how work runs), and ``lottery.levels``, ``lottery.trials``
        and ``lottery.branches``, which only add units: rerunning with more levels, trials or
        branches extends the same run directory instead of starting over. Fields added in later
        versions (``LATER_TRAIN_DEFAULTS``) are left out while at their defaults, so a run
        directory made before they existed keeps its hash.
        """
        d = self.to_dict()
        d.pop("runtime")
        d.pop("name")
        for k in EXTENSIBLE_LOTTERY_FIELDS:
            d["lottery"].pop(k)
        for k, default in LATER_TRAIN_DEFAULTS.items():
            if d["train"].get(k) == default:
                d["train"].pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            sub = _SECTIONS.get(f.name)
            if sub is not None:
                v = _build(sub, f.name, v)
            kw[f.name] = v
        unknown = set(d) - {f.name for f in fields(cls)}
        _check(not unknown, f"unknown config section(s) {sorted(unknown)}; valid: {sorted(_SECTIONS)}")
        return cls(**kw)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "prune": PruneConfig,
    "lottery": LotteryConfig,
    "runtime": RuntimeConfig,
}


def _build(cls: type, section: str, values: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    _check(
        not unknown,
        f"unknown field(s) {', '.join(f'{section}.{u}' for u in sorted(unknown))}; "
        f"valid fields of {section}: {', '.join(sorted(names))}",
    )
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kw)


def config_hash(cfg: ExperimentConfig) -> str:
    """A short stable hash of :meth:`ExperimentConfig.identity_dict`."""
    blob = json.dumps(cfg.identity_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _parse_value(text: str, current: Any, where: str) -> Any:
    """Parse a --set value using the type of the field's current value as a guide."""
    t = text.strip()
    if isinstance(current, bool):
        low = t.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} = {text!r}: expected true or false")
    if isinstance(current, tuple):
        if t in ("", "()", "[]"):
            return ()
        items = [x.strip() for x in t.strip("()[]").split(",") if x.strip()]
        elem = current[0] if current else None
        return tuple(_parse_scalar(x, elem, where) for x in items)
    if t.lower() in ("none", "null") and (current is None or isinstance(current, float)):
        return None
    return _parse_scalar(t, current, where)


def _parse_scalar(t: str, current: Any, where: str) -> Any:
    if isinstance(current, str):
        return t
    try:
        if isinstance(current, int) and not isinstance(current, bool):
            v = float(t)
            if not v.is_integer():
                raise ValueError
            return int(v)
        if isinstance(current, float) or current is None:
            v = float(t)
            return int(v) if current is None and v.is_integer() and "." not in t and "e" not in t.lower() else v
    except ValueError:
        raise ConfigError(f"{where} = {t!r}: expected a {type(current).__name__}") from None
    return t


def apply_overrides(cfg: ExperimentConfig, assignments: list[str]) -> ExperimentConfig:
    """Apply ``section.field=value`` assignments (the CLI's ``--set``)."""
    d = cfg.to_dict()
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"--set {a!r}: expected section.field=value, e.g. train.lr=0.001")
        key, val = a.split("=", 1)
        key = key.strip()
        if key == "name":
            d["name"] = val
            continue
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(
                f"--set {a!r}: unknown key {key!r}; use section.field with section one of "
                f"{', '.join(_SECTIONS)}"
            )
        section, name = parts
        valid = {f.name for f in fields(_SECTIONS[section])}
        if name not in valid:
            raise ConfigError(
                f"--set {a!r}: {section} has no field {name!r}; valid: {', '.join(sorted(valid))}"
            )
        d[section][name] = _parse_value(val, d[section][name], key)
    return ExperimentConfig.from_dict(d)


def with_section(cfg: ExperimentConfig, section: str, **changes: Any) -> ExperimentConfig:
    """Return cfg with fields of one section replaced (validated)."""
    return replace(cfg, **{section: replace(getattr(cfg, section), **changes)})
