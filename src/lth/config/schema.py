"""Experiment configuration: one frozen dataclass per concern, nested into ExperimentConfig.

Validation lives in ``__post_init__`` and every message names the field, the value and what is
allowed, so a mistyped flag or file entry fails before any training starts. Types are checked
there too, so a configuration built from a dict (a JSON, TOML or YAML file) fails with a
:class:`ConfigError` rather than a ``TypeError`` deep inside a comparison.

The run directory is named from a hash of the *resolved* configuration (see :func:`config_hash`);
only fields that change the science go into the hash (see ``ExperimentConfig.identity_dict``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

OPTIMIZERS = ("adam", "sgd")
PRECISIONS = ("fp32", "bf16")
TEST_EVALS = ("every", "best")
STRATEGIES = ("layerwise", "global")
# Training-set augmentations (implemented in lth.data.augment): "none", or "crop_flip", the
# random 4-pixel-padded crop and horizontal flip of the paper's ResNet-20/VGG-19 CIFAR-10 runs.
AUGMENTATIONS = ("none", "crop_flip")
# Fields added after run directories were named: {section: {field: default}}. Each is left out of
# the identity while at its default, so a run directory named before the field existed keeps its
# hash (a stored config without the field loads with the default, which changes no number).
LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"augment": "none"},
    "train": {"precision": "fp32"},
    "lottery": {"rewind_optimizer": False},
}
# Changing these only adds units, so they stay out of the identity and a rerun with more of them
# extends the same run directory.
EXTENSIBLE_LOTTERY_FIELDS = ("levels", "trials", "branches")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and the fix."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `iterations = true` is a typo, never a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _name(where: str, value: Any) -> None:
    _check(isinstance(value, str) and value != "", f"{where} = {value!r}: must be a non-empty name")


# Upper bounds: far beyond any experiment (the paper's longest run is 112K iterations, its deepest
# IMP line about 25 levels), small enough that a typo fails here rather than allocating gigabytes.
MAX_ITERATIONS = 10**8
MAX_LEVELS = 100  # 0.8**100 keeps 2e-10 of the weights: no layer has a weight left long before
MAX_TRIALS = 1000
MAX_BATCH = 10**6
MAX_EVALUATIONS = 100_000  # per unit: its history is kept in memory and in metrics.jsonl
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds
MAX_THREADS = 4096
MAX_PARALLEL_UNITS = 10**4
DEVICE = re.compile(r"(cpu|cuda|mps)(:[0-9]{1,3})?")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _bounded_int(where: str, value: Any, lo: int, hi: int, note: str = "") -> None:
    kind = {0: "an integer >= 0", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
    _check(_is_int(value) and lo <= value <= hi, f"{where} = {value!r}: must be {kind}, at most {hi:,}{note}")


def _flag(where: str, value: Any) -> None:
    _check(isinstance(value, bool), f"{where} = {value!r}: must be true or false")


def _choice(where: str, value: Any, choices: tuple[str, ...], what: str = "", note: str = "") -> None:
    _check(value in choices, f"{where} = {value!r}: {what}choose one of {', '.join(choices)}{note}")


def _rate(section: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = _is_real(value) and (value >= 0 if allow_zero else value > 0) and value < 1
    _check(ok, f"{section}.{name} = {value!r}: must be a fraction in {'[0' if allow_zero else '(0'}, 1)")


def _sequence(where: str, value: Any, example: str) -> tuple[Any, ...]:
    # A bare string would otherwise become a tuple of its characters.
    _check(isinstance(value, (tuple, list)), f"{where} = {value!r}: must be a list, e.g. {example}")
    return tuple(value)


@dataclass(frozen=True)
class DataConfig:
    """Which data set, how the validation split is drawn from its training images, and how
    training batches are augmented (validation and test images never are)."""

    dataset: str = "mnist"
    val_size: int = 5000  # Frankle & Carbin App. B: 5,000 of MNIST's 60,000 training images.
    split_seed: int = 0  # The validation split is fixed for a whole experiment.
    # "crop_flip": random crop of the image zero-padded by 4 pixels, then a random horizontal flip
    # (He et al. 2016 Sec. 4.2, the protocol of the paper's ResNet-20 and VGG-19, Frankle & Carbin
    # Sec. 4); seeded per unit and iteration (lth.data.augment).
    augment: str = "none"

    def __post_init__(self) -> None:
        _name("data.dataset", self.dataset)
        _choice("data.augment", self.augment, AUGMENTATIONS, "unknown augmentation; ",
                " (none, or crop_flip = random crop with 4-pixel zero padding and random horizontal flip)")
        _check(
            _is_int(self.val_size) and 0 < self.val_size <= MAX_BATCH * 10,
            f"data.val_size = {self.val_size!r}: must be a positive integer (the early-stopping "
            "iteration needs a validation split held out from training), at most the training set's size",
        )
        _bounded_int("data.split_seed", self.split_seed, 0, MAX_SEED)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: a name from the model registry, e.g. lenet300, conv2, resnet20."""

    name: str = "lenet300"

    def __post_init__(self) -> None:
        _name("model.name", self.name)


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained; lengths count iterations, not epochs (paper App. B)."""

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
        _choice("train.precision", self.precision, PRECISIONS, "unknown precision; ")
        _bounded_int("train.iterations", self.iterations, 1, MAX_ITERATIONS)
        _bounded_int("train.batch_size", self.batch_size, 1, MAX_BATCH, " (and at most the training set's size)")
        _bounded_int("train.eval_every", self.eval_every, 1, MAX_ITERATIONS)
        evals = self.iterations // self.eval_every
        _check(evals <= MAX_EVALUATIONS,
               f"train.eval_every = {self.eval_every}: evaluates {evals:,} times in train.iterations = "
               f"{self.iterations:,}; every evaluation of every unit is kept, so choose eval_every >= "
               f"{-(-self.iterations // MAX_EVALUATIONS):,} (at most {MAX_EVALUATIONS:,} evaluations)")
        _choice("train.optimizer", self.optimizer, OPTIMIZERS, "unknown optimizer; ")
        _check(
            _is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0,
            f"train.lr = {self.lr!r}: must be a positive finite number",
        )
        _check(
            _is_real(self.momentum) and 0 <= self.momentum < 1,
            f"train.momentum = {self.momentum!r}: must be a number in [0, 1)",
        )
        _check(
            _is_real(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"train.weight_decay = {self.weight_decay!r}: must be a finite number >= 0",
        )
        _check(
            _is_real(self.lr_gamma) and 0 < self.lr_gamma <= 1,
            f"train.lr_gamma = {self.lr_gamma!r}: must be a number in (0, 1]",
        )
        _check(
            _is_int(self.warmup_iterations) and 0 <= self.warmup_iterations <= self.iterations,
            f"train.warmup_iterations = {self.warmup_iterations!r}: must be an integer in [0, "
            f"train.iterations={self.iterations}]",
        )
        ms = _sequence("train.lr_milestones", self.lr_milestones, "[20000, 25000]")
        object.__setattr__(self, "lr_milestones", ms)
        _check(
            all(_is_int(m) and 0 < m <= MAX_ITERATIONS for m in ms) and list(ms) == sorted(ms) and len(ms) <= 1000,
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
        _choice("prune.strategy", self.strategy, STRATEGIES)
        _rate("prune", "rate", self.rate)
        if self.conv_rate is not None:
            _rate("prune", "conv_rate", self.conv_rate)
        if self.output_rate is not None:
            _rate("prune", "output_rate", self.output_rate, allow_zero=True)
        _flag("prune.prune_output", self.prune_output)
        if self.strategy == "global":
            _check(self.conv_rate is None,
                   f"prune.conv_rate = {self.conv_rate!r}: global pruning uses one rate (prune.rate) across all "
                   "pruned layers; remove conv_rate, or use strategy = layerwise for per-kind rates")
            _check(self.output_rate in (None, 0, 0.0),
                   f"prune.output_rate = {self.output_rate!r}: global pruning prunes the output layer at the "
                   "global rate or leaves it dense; set output_rate = 0 (or prune_output = false) to leave it dense, "
                   "or remove output_rate")

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
    # Rewind the optimizer with the weights: units that start from theta_k (ticket, random_mask,
    # oneshot) start from the dense run's optimizer state at iteration k (Adam's moments and step
    # count, SGD's momentum; masked: pruned weights' entries are zero) instead of a fresh one.
    # False (the papers' protocol as published): a fresh optimizer at k. Needs k > 0.
    rewind_optimizer: bool = False
    seed: int = 0  # base seed; every randomness source derives its own from it

    def __post_init__(self) -> None:
        _bounded_int("lottery.levels", self.levels, 0, MAX_LEVELS, " (0 = dense only)")
        _bounded_int("lottery.trials", self.trials, 1, MAX_TRIALS)
        b = _sequence("lottery.branches", self.branches, '["ticket", "reinit"]')
        object.__setattr__(self, "branches", b)
        # Which names exist is the branch registry's business (lth.experiment.branches checks them
        # before any work); the configuration only checks their form.
        _check(len(b) > 0, "lottery.branches = (empty): name at least one branch, e.g. ticket, reinit")
        bad = [x for x in b if not (isinstance(x, str) and x)]
        _check(not bad, f"lottery.branches = {b!r}: branch names are non-empty strings")
        _check(len(set(b)) == len(b), f"lottery.branches = {b!r}: a branch is listed twice")
        _bounded_int("lottery.rewind_iteration", self.rewind_iteration, 0, MAX_ITERATIONS)
        _flag("lottery.one_shot", self.one_shot)
        _flag("lottery.rewind_optimizer", self.rewind_optimizer)
        _check(not self.rewind_optimizer or self.rewind_iteration > 0,
               "lottery.rewind_optimizer = true: needs lottery.rewind_iteration > 0 (at iteration 0 the "
               "optimizer state is the fresh one, so there is nothing to rewind)")
        _bounded_int("lottery.seed", self.seed, 0, MAX_SEED)


@dataclass(frozen=True)
class RuntimeConfig:
    """How the work is executed; none of it changes the numbers, so it is not hashed."""

    device: str = "cpu"
    checkpoint_every: int = 1000  # iterations between resumable checkpoints
    threads: int = 0  # torch intra-op threads; 0 = leave PyTorch's default
    # The most examples in one forward pass when evaluating a whole split: larger batches are
    # faster until the activations no longer fit in memory. An engine may take fewer at a time
    # where its kernels are faster on smaller chunks.
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
    # Flush denormal floats to zero on the CPU while training: a confident classifier's softmax
    # outputs are often denormal, and denormals slow every product that reads them. The price is
    # last-bit differences (only values below 1.2e-38 change) that can grow over many iterations,
    # so results agree with a run without it statistically rather than bitwise.
    flush_denormals: bool = True

    def __post_init__(self) -> None:
        _check(isinstance(self.device, str) and DEVICE.fullmatch(self.device) is not None,
               f"runtime.device = {self.device!r}: choose cpu, cuda, cuda:N or mps")
        _bounded_int("runtime.checkpoint_every", self.checkpoint_every, 1, MAX_ITERATIONS)
        _bounded_int("runtime.threads", self.threads, 0, MAX_THREADS, " (0 = PyTorch's default)")
        _bounded_int("runtime.eval_batch_size", self.eval_batch_size, 1, MAX_BATCH * 10)
        _flag("runtime.deterministic", self.deterministic)
        _bounded_int("runtime.parallel_units", self.parallel_units, 0, MAX_PARALLEL_UNITS,
                     " (0 = automatic, 1 = one unit at a time)")
        _choice("runtime.test_eval", self.test_eval, TEST_EVALS,
                note=" (every = test metrics at every evaluation; best = only at new validation-loss "
                "minima and the last iteration)")
        _flag("runtime.flush_denormals", self.flush_denormals)


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: a name (the start of its run directory's name) and one section per concern."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    lottery: LotteryConfig = field(default_factory=LotteryConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and NAME.fullmatch(self.name) is not None,
               f"name = {self.name!r}: the run directory is named after it, so use 1 to 100 letters, digits, "
               "'.', '_' or '-', starting with a letter or digit")
        for section, cls in SECTIONS.items():
            value = getattr(self, section)
            _check(
                isinstance(value, cls),
                f"{section} = {value!r}: must be a {cls.__name__} (ExperimentConfig.from_dict builds "
                "one from a dict of fields)",
            )
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
        branches extends the same run directory instead of starting over. Fields in
        ``LATER_DEFAULTS`` are left out while at their defaults, so a run directory named
        before they existed keeps its hash.
        """
        d = self.to_dict()
        d.pop("runtime")
        d.pop("name")
        for k in EXTENSIBLE_LOTTERY_FIELDS:
            d["lottery"].pop(k)
        for section, later in LATER_DEFAULTS.items():
            for k, default in later.items():
                if d[section].get(k) == default:
                    d[section].pop(k)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        """Build from ``to_dict()``'s shape; lists become tuples, missing fields take defaults."""
        _check(isinstance(d, Mapping), f"a configuration must be a mapping of sections, got {d!r}")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            sub = SECTIONS.get(f.name)
            if sub is not None:
                v = _build(sub, f.name, v)
            kw[f.name] = v
        unknown = set(d) - {f.name for f in fields(cls)}
        _check(
            not unknown,
            f"unknown config section(s) {sorted(map(str, unknown))}{_did_you_mean(unknown, SECTIONS)}; "
            f"valid: {sorted(SECTIONS)}",
        )
        return cls(**kw)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "prune": PruneConfig,
    "lottery": LotteryConfig,
    "runtime": RuntimeConfig,
}


def _did_you_mean(unknown: Any, valid: Any) -> str:
    hints = [m for u in sorted(map(str, unknown)) for m in difflib.get_close_matches(u, list(valid), n=1, cutoff=0.5)]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def _build(cls: type, section: str, values: Any) -> Any:
    _check(
        isinstance(values, Mapping),
        f"{section} = {values!r}: must be a table of fields, e.g. {section}.{fields(cls)[0].name} = ...",
    )
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    _check(
        not unknown,
        f"unknown field(s) {', '.join(f'{section}.{u}' for u in sorted(map(str, unknown)))}"
        f"{_did_you_mean(unknown, names)}; valid fields of {section}: {', '.join(sorted(names))}",
    )
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kw)


def config_hash(cfg: ExperimentConfig) -> str:
    """A short stable hash of :meth:`ExperimentConfig.identity_dict`; it names the run directory."""
    blob = json.dumps(cfg.identity_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def with_section(cfg: ExperimentConfig, section: str, **changes: Any) -> ExperimentConfig:
    """Return cfg with fields of one section replaced (validated)."""
    return replace(cfg, **{section: replace(getattr(cfg, section), **changes)})
