"""The Python door to the whole protocol: :func:`find_tickets` runs IMP with its controls on a
user's own model and data, through the same driver, engines and store as ``lth run``.

    >>> import torch, lth
    >>> from torch import nn
    >>> x, y = torch.randn(600, 20), torch.randint(0, 3, (600,))
    >>> search = lth.find_tickets(
    ...     lambda: nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3)),
    ...     train=(x[:400], y[:400]), val=(x[400:500], y[400:500]), test=(x[500:], y[500:]),
    ...     levels=2, trials=1, iterations=50, eval_every=25, out=tmp_path, log=None)
    >>> [r.level for r in search.records if r.branch == "ticket"]
    [0, 1, 2]

Data are tensors ``(x, y)`` or any iterable of ``(x, y)`` batches (a ``DataLoader``), read once
into memory; lth then draws its own seeded batches, so a run resumes exactly and every unit's data
order is repeatable. Labels are class indices. A rerun with the same arguments skips finished
units; a different architecture, data set, prunable set, initialisation mode or loss/step
function gets its own run directory (a change inside your code, such as ``forward``, is not
detected: pass another ``run_dir`` or ``name``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError, ExperimentConfig, apply_overrides, config_hash
from .data import Splits
from .experiment import Experiment, Lottery, ProgressSink
from .experiment.units import UnitKey
from .models import prunable_parameters
from .pruning import Mask
from .report import Row, aggregate, text_table
from .store import RunStore, StoreError, UnitRecord, atomic_write_json, read_json
from .training import check_device
from .training.engines.module import LossFn, StepFn

__all__ = ["TicketSearch", "find_tickets"]

Data = tuple[torch.Tensor, torch.Tensor] | Iterable[Any]
_FINGERPRINT = "user-model.json"
#: ``model.name`` and ``data.dataset`` of a run made by :func:`find_tickets`.
USER = "user"


def _as_tensors(data: Data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors from a pair of tensors, from an iterable of ``(x, y)`` batches (a
    DataLoader) or from an iterable of ``(x, label)`` examples (a Dataset)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    else:
        xs, ys = [], []
        try:
            for item in data:
                xs.append(torch.as_tensor(item[0]))
                ys.append(torch.as_tensor(item[1]))
            if not xs:
                raise ValueError(f"{what}: the data are empty")
            examples = ys[0].dim() == 0  # single examples carry a scalar label; batches a vector
            x = torch.stack(xs) if examples else torch.cat(xs)
            y = torch.stack(ys) if examples else torch.cat(ys)
        except (TypeError, IndexError, KeyError, RuntimeError) as e:
            raise ValueError(f"{what}: expected (x, y) tensors, or an iterable of (x, y) batches (a "
                             f"DataLoader) or of (x, label) examples (a Dataset); {e}") from e
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if y.dim() != 1 or y.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        raise ValueError(f"{what}: labels must be a 1-D tensor of class indices, got {y.dtype} {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: the data are empty")
    return x, y.long()


def _fingerprint(model: nn.Module, splits: Splits, prunable: list[str], choices: dict[str, str]) -> str:
    """What identifies a user's experiment beyond its configuration: the architecture (module
    tree, parameter names and shapes), the prunable parameters, the initialisation mode, which
    custom loss or step function is used (by name: a change inside a function's code is not
    detected), and the data (shapes and a content hash)."""
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(json.dumps({"prunable": prunable, **choices}, sort_keys=True).encode())
    for name, p in model.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
    for t in (splits.train_x, splits.train_y, splits.val_x, splits.val_y, splits.test_x, splits.test_y):
        c = t.detach().cpu().contiguous()
        h.update(f"{tuple(c.shape)}:{c.dtype}".encode())
        h.update(c.numpy().tobytes())
    return h.hexdigest()


def _prunable_rule(prunable: Callable[[nn.Module], list[str]] | dict[str, Any] | None):
    if prunable is None or callable(prunable):
        return prunable
    if isinstance(prunable, dict):
        return lambda model: prunable_parameters(model, **prunable)
    raise TypeError("prunable: a function model -> parameter names, or a dict of keyword arguments "
                    "for lth.models.prunable_parameters (include=, exclude=, types=)")


def _name(fn: Callable | None) -> str:
    return "" if fn is None else f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


@dataclass
class TicketSearch:
    """The outcome of :func:`find_tickets`: records, the table, and each unit's mask and weights."""

    run_dir: Path
    records: list[UnitRecord]
    experiment: Experiment

    @property
    def rows(self) -> list[Row]:
        """Aggregated over trials: one row per (level, branch) with mean, min and max."""
        return aggregate(self.records)

    def table(self) -> str:
        return text_table(self.rows)

    def mask(self, level: int, *, trial: int = 0, branch: str = "ticket") -> Mask:
        """The unit's mask (the level's IMP mask, or the branch's own)."""
        return self.experiment.unit_mask(UnitKey(trial, level, branch))

    def weights(self, level: int, *, trial: int = 0, branch: str = "ticket",
                which: str = "final") -> dict[str, torch.Tensor]:
        """The unit's trained weights (``which="final"``) or its starting weights, masked (``"init"``:
        the winning ticket's initialisation)."""
        key = UnitKey(trial, level, branch)
        if which == "final":
            return self.experiment.store.load_final(trial, level, branch)
        if which != "init":
            raise ValueError(f"which = {which!r}: choose final or init")
        spec = self.experiment.unit_spec(key)
        return {k: v * spec.mask[k] if k in spec.mask else v.clone() for k, v in spec.start_state.items()}


def find_tickets(
    model_factory: Callable[[], nn.Module],
    train: Data,
    val: Data,
    test: Data,
    *,
    config: ExperimentConfig | None = None,
    levels: int | None = None,
    trials: int | None = None,
    iterations: int | None = None,
    eval_every: int | None = None,
    branches: Sequence[str] | None = None,
    settings: Sequence[str] = (),
    prunable: Callable[[nn.Module], list[str]] | dict[str, Any] | None = None,
    init: str = "factory",
    loss_fn: LossFn | None = None,
    step_fn: StepFn | None = None,
    num_classes: int | None = None,
    name: str = "custom",
    out: str | Path = "runs",
    run_dir: str | Path | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
    progress: ProgressSink | None = None,
) -> TicketSearch:
    """Run the lottery-ticket protocol (IMP with reset or rewinding, the branches' controls, several
    trials, early stopping on ``val``) on ``model_factory()``'s architecture and the given data.

    ``config`` is the protocol (default: :class:`lth.config.ExperimentConfig`'s defaults, the
    paper's LeNet-300-100 settings); ``levels``, ``trials``, ``iterations``, ``eval_every``,
    ``branches`` and ``settings`` (``"section.field=value"`` strings, as ``lth run --set``)
    override it. ``prunable`` chooses the pruned weights: a function ``model -> names`` or keyword
    arguments of :func:`lth.models.prunable_parameters` such as ``{"exclude": ["head.*"]}``
    (default: Linear and Conv weights). ``init``: ``"factory"`` (each initialisation is the
    factory's own, drawn under a seed per trial and purpose) or ``"lth"``
    (:func:`lth.models.initialize`, Glorot normal unless the model says otherwise).
    ``loss_fn(logits, y)`` and ``step_fn(model, x, y) -> loss`` customise training (they run one
    unit at a time on the module engine). Progress goes to ``log`` as plain lines (``None``:
    silent), or to ``progress`` when given: any :class:`lth.experiment.ProgressSink`, e.g.
    ``Sinks(PlainProgress(print), TensorBoardProgress("tb"))`` for the lines and every unit's
    curves in TensorBoard. Returns a :class:`TicketSearch`.
    """
    cfg = config if config is not None else ExperimentConfig()
    d = cfg.to_dict()
    d["name"] = name if config is None else cfg.name
    for (section, field), value in {("lottery", "levels"): levels, ("lottery", "trials"): trials,
                                    ("train", "iterations"): iterations, ("train", "eval_every"): eval_every,
                                    ("lottery", "branches"): None if branches is None else tuple(branches),
                                    ("runtime", "device"): device}.items():
        if value is not None:
            d[section][field] = value
    cfg = apply_overrides(ExperimentConfig.from_dict(d), list(settings))
    # The model and the data are the caller's, not registry entries: the stored configuration says
    # so, and user-model.json fingerprints them.
    d = cfg.to_dict()
    d["model"]["name"], d["data"]["dataset"] = USER, USER
    cfg = ExperimentConfig.from_dict(d)
    dev = check_device(cfg.runtime.device)
    tensors = [_as_tensors(data, what) for data, what in ((train, "train"), (val, "val"), (test, "test"))]
    (tx, ty), (vx, vy), (sx, sy) = tensors
    shapes = {tuple(t[0].shape[1:]) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"train, val and test inputs differ in shape: {sorted(shapes)}")
    classes = num_classes or int(max(int(t[1].max()) for t in tensors)) + 1
    if min(int(t[1].min()) for t in tensors) < 0 or max(int(t[1].max()) for t in tensors) >= classes:
        raise ValueError(f"labels must be class indices in [0, {classes})")
    if cfg.train.batch_size > len(tx):
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size}: larger than the {len(tx)} training "
                          f"examples given; use at most {len(tx)}")
    splits = Splits(name, tx.to(dev), ty.to(dev), vx.to(dev), vy.to(dev), sx.to(dev), sy.to(dev),
                    classes, tuple(tx.shape[1:]))
    rule = _prunable_rule(prunable)
    with torch.random.fork_rng(devices=[]):  # lth never advances the caller's global generator
        probe = model_factory()
    names = rule(probe) if rule is not None else prunable_parameters(probe)
    choices = {"init": init, "loss_fn": _name(loss_fn), "step_fn": _name(step_fn)}
    fp = _fingerprint(probe, splits, list(names), choices)
    path = Path(run_dir) if run_dir is not None else Path(out) / f"{cfg.name}-{config_hash(cfg)}-{fp[:8]}"
    store = RunStore.open(cfg, run_dir=path)
    with store:
        stamp = store.path / _FINGERPRINT
        if stamp.exists() and read_json(stamp).get("fingerprint") != fp:
            raise StoreError(f"{store.path} holds results of another model or data set "
                             f"({stamp} differs); choose another run_dir")
        atomic_write_json(stamp, {"fingerprint": fp})
        exp = Experiment(cfg, store, splits.input_shape, classes, model_factory=model_factory,
                         prunable=rule, init=init)
        lottery = Lottery(cfg, store, splits, log=log or (lambda s: None), progress=progress, experiment=exp,
                          loss_fn=loss_fn, step_fn=step_fn)
        records = lottery.run()
    return TicketSearch(store.path, records, exp)


