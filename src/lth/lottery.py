"""The iterative magnitude pruning (IMP) driver (Frankle & Carbin 2019, Sec. 2 and Algorithm).

For each trial: initialise theta0; level 0 trains the dense network (saving theta_k when rewinding);
each level L >= 1 prunes the previous level's trained ticket (or, one-shot, the trained dense
network straight to level L's size), then trains one unit per branch:

* ``ticket``: the mask with the survivors reset to theta0 (or rewound to theta_k);
* ``reinit``: the same mask with a fresh initialisation from the same distribution (new seed);
* ``random_mask``: a random mask with the same per-layer counts, with theta0 (theta_k) values.

All branches of a level start at the same iteration (0, or k when rewinding, with the learning-rate
schedule and data order continuing from there) so that they differ only in what they test.
Every unit checks for its finished result first and resumes from its last checkpoint, so the
whole experiment resumes by rerunning the same command.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .config import ExperimentConfig
from .data import Splits
from .models import (
    build_model,
    initialize,
    is_conv_parameter,
    output_parameter,
    prunable_parameters,
    prunable_tensors,
)
from .pruning import (
    Mask,
    density,
    full_mask,
    keep_count_global,
    keep_counts_layerwise,
    prune_global_to_count,
    prune_layerwise_to_counts,
    random_mask_like,
)
from .seeds import derive_seed, generator
from .store import CHECKPOINT, RESULT, RunStore, StoreError, atomic_torch_save, atomic_write_bytes, atomic_write_json, torch_load
from .batched import UnitInput, train_many
from .stacked import supports_batching
from .train import EvalPoint, TrainingDiverged, TrainResult, TrainState, apply_mask_, train

Log = Callable[[str], None]


# --------------------------------------------------------------------------- pruning plan


def layer_rates(model: nn.Module, cfg: ExperimentConfig) -> dict[str, float]:
    """Per-layer pruning rate: conv layers ``conv_rate``, the output layer ``output_rate``
    (half of ``rate`` by default, paper Sec. 2), other fully connected layers ``rate``."""
    out_name = output_parameter(model)
    rates = {}
    for name in prunable_parameters(model):
        if name == out_name:
            rates[name] = cfg.prune.resolved_output_rate
        elif is_conv_parameter(model, name):
            rates[name] = cfg.prune.resolved_conv_rate
        else:
            rates[name] = cfg.prune.rate
    return rates


def global_pool(model: nn.Module, cfg: ExperimentConfig) -> list[str]:
    """Layers that share the global threshold (the output layer only if ``prune_output``)."""
    out_name = output_parameter(model)
    return [n for n in prunable_parameters(model) if cfg.prune.prune_output or n != out_name]


def next_mask(model: nn.Module, cfg: ExperimentConfig, weights: dict[str, torch.Tensor],
              mask: Mask, levels: int) -> Mask:
    """Prune ``weights`` among the survivors of ``mask`` by ``levels`` rounds' worth.

    Iterative IMP calls this with levels=1 on the previous level's trained ticket; one-shot calls it
    with levels=L on the trained dense network, so both reach exactly the same per-layer sizes.
    """
    if cfg.prune.strategy == "global":
        names = global_pool(model, cfg)
        keep = keep_count_global(mask, cfg.prune.rate, names, levels)
        return prune_global_to_count(weights, mask, names, keep)
    keep = keep_counts_layerwise(mask, layer_rates(model, cfg), levels)
    return prune_layerwise_to_counts(weights, mask, keep)


# --------------------------------------------------------------------------- progress


class Progress:
    """Prints level/trial/branch/iteration, current validation metrics and an ETA."""

    def __init__(self, cfg: ExperimentConfig, log: Log, store: RunStore):
        self.log = log
        self.cfg = cfg
        L = cfg.lottery
        per_unit = cfg.train.iterations - L.rewind_iteration
        branches = set(L.branches) | {"ticket"}
        self.units = [(t, 0, "ticket") for t in range(L.trials)] + [
            (t, lv, b) for t in range(L.trials) for lv in range(1, L.levels + 1) for b in branches
        ]
        self.todo_iters = sum(
            (cfg.train.iterations if lv == 0 else per_unit)
            for (t, lv, b) in self.units if not store.is_done(t, lv, b)
        )
        self.done_iters = 0
        self.t0 = time.perf_counter()
        self.finished_units = sum(store.is_done(*u) for u in self.units)
        self.last_print = 0.0

    def due(self, min_interval: float = 15.0) -> bool:
        """Throttle progress lines to one every ``min_interval`` seconds."""
        now = time.perf_counter()
        if now - self.last_print >= min_interval:
            self.last_print = now
            return True
        return False

    def eta(self, current_iters: int) -> str:
        done = self.done_iters + current_iters
        if done <= 0:
            return "?"
        el = time.perf_counter() - self.t0
        return fmt_seconds(el / done * max(self.todo_iters - done, 0))

    def unit_label(self, trial: int, level: int, branch: str, weights: float) -> str:
        L = self.cfg.lottery
        return (f"[trial {trial + 1}/{L.trials} level {level}/{L.levels} {branch:<11} "
                f"{100 * weights:6.2f}% weights]")


def _test_acc(p: EvalPoint) -> str:
    """The progress line's test-accuracy field; empty where the test split was not evaluated."""
    return "" if p.test_accuracy is None else f"test_acc {100 * p.test_accuracy:5.2f}% "


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# --------------------------------------------------------------------------- the driver


@dataclass
class UnitSpec:
    trial: int
    level: int
    branch: str
    mask: Mask
    start_state: dict[str, torch.Tensor]
    start_step: int


class Lottery:
    def __init__(self, cfg: ExperimentConfig, store: RunStore, splits: Splits, *,
                 log: Log = print):
        self.cfg = cfg
        self.store = store
        self.splits = splits
        self.log = log
        self.device = torch.device(cfg.runtime.device)
        # Models without BatchNorm/dropout train on the vectorised engines (lth.stacked).
        self.batchable = supports_batching(self.new_model())

    # ------------------------------------------------------------------ helpers
    def new_model(self) -> nn.Module:
        return build_model(self.cfg.model.name, self.splits.input_shape, self.splits.num_classes)

    def seed(self, *path: object) -> int:
        return derive_seed(self.cfg.lottery.seed, *path)

    def initial_state(self, trial: int) -> dict[str, torch.Tensor]:
        """theta0 of a trial: drawn once from the trial's init seed and stored."""
        path = self.store.trial_dir(trial) / "theta0.pt"
        if path.exists():
            return torch_load(path)
        model = self.new_model()
        initialize(model, generator(self.cfg.lottery.seed, "init", trial))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        atomic_torch_save(path, state)
        return state

    def rewind_state(self, trial: int) -> dict[str, torch.Tensor]:
        if self.cfg.lottery.rewind_iteration == 0:
            return self.initial_state(trial)
        path = self.store.trial_dir(trial) / "rewind.pt"
        if not path.exists():
            raise StoreError(f"{path} is missing although level 0 of trial {trial} finished; "
                             "delete the trial's level_0 directory and rerun to recreate it")
        return torch_load(path)

    def final_weights(self, trial: int, level: int) -> dict[str, torch.Tensor]:
        return torch_load(self.store.unit_dir(trial, level, "ticket") / "final.pt")

    def level_mask(self, trial: int, level: int, model: nn.Module) -> Mask:
        """The mask of a level: dense at level 0, else pruned and stored once (masks are nested)."""
        if level == 0:
            return full_mask(prunable_tensors(model))
        path = self.store.level_dir(trial, level) / "mask.pt"
        if path.exists():
            return torch_load(path)
        if self.cfg.lottery.one_shot:
            base, weights, rounds = full_mask(prunable_tensors(model)), self.final_weights(trial, 0), level
        else:
            base = self.level_mask(trial, level - 1, model)
            weights, rounds = self.final_weights(trial, level - 1), 1
        mask = next_mask(model, self.cfg, weights, base, rounds)
        atomic_torch_save(path, mask)
        return mask

    # ------------------------------------------------------------------ one unit
    def _checkpoint_path(self, spec: UnitSpec):
        return self.store.unit_dir(spec.trial, spec.level, spec.branch) / CHECKPOINT

    def _load_resume(self, spec: UnitSpec) -> TrainState | None:
        path = self._checkpoint_path(spec)
        return TrainState(**torch_load(path)) if path.exists() else None

    @staticmethod
    def _checkpoint_record(state: TrainState) -> dict[str, Any]:
        return {
            "step": state.step,
            "model": {k: v.cpu() for k, v in state.model.items()},
            "optimizer": state.optimizer,
            "history": state.history,
            "rng": state.rng,
            "elapsed": state.elapsed,
            "running_loss": None if state.running_loss is None else state.running_loss.cpu(),
            "since_eval": state.since_eval,
        }

    def _save_checkpoints(self, specs: list[UnitSpec], states: dict[int, TrainState]) -> None:
        """All of a group's checkpoints commit together (RunStore.save_checkpoints)."""
        idx = sorted(states)
        self.store.save_checkpoints([self._checkpoint_path(specs[i]).parent for i in idx],
                                    [self._checkpoint_record(states[i]) for i in idx])

    def _save_rewind(self, trial: int, state: dict[str, torch.Tensor]) -> None:
        atomic_torch_save(self.store.trial_dir(trial) / "rewind.pt", {k: v.cpu() for k, v in state.items()})

    def _capture_steps(self, spec: UnitSpec) -> frozenset[int]:
        k = self.cfg.lottery.rewind_iteration
        return frozenset({k}) if (spec.level == 0 and k > 0) else frozenset()

    def _announce(self, spec: UnitSpec, label: str, resume: TrainState | None) -> None:
        self.store.unit_dir(spec.trial, spec.level, spec.branch).mkdir(parents=True, exist_ok=True)
        if resume is not None:
            self.log(f"{label} resuming from checkpoint at iteration {resume.step}")
        else:
            self.log(f"{label} training from iteration {spec.start_step}")

    def run_unit(self, spec: UnitSpec, progress: Progress) -> dict[str, Any]:
        """Train one unit with :func:`lth.train.train` (any model; BatchNorm and dropout included)."""
        store, cfg = self.store, self.cfg
        if store.is_done(spec.trial, spec.level, spec.branch):
            return store.result(spec.trial, spec.level, spec.branch)
        label = progress.unit_label(spec.trial, spec.level, spec.branch, density(spec.mask))
        model = self.new_model()
        model.load_state_dict(spec.start_state)
        model.to(self.device)
        mask = {k: v.to(self.device) for k, v in spec.mask.items()}
        apply_mask_(model, mask)
        resume = self._load_resume(spec)
        self._announce(spec, label, resume)
        first = resume.step if resume else spec.start_step

        def on_eval(p: EvalPoint) -> None:
            if progress.due():
                self.log(f"{label} it {p.iteration:>6}/{cfg.train.iterations} val_loss {p.val_loss:.4f} "
                         f"val_acc {100 * p.val_accuracy:5.2f}% {_test_acc(p)}"
                         f"| ETA {progress.eta(p.iteration - first)}")

        outcome: TrainResult | TrainingDiverged
        try:
            outcome = train(
                model, mask, self.splits, cfg.train,
                data_seed=self.seed("data", spec.trial),
                start_step=spec.start_step,
                resume=resume,
                checkpoint_every=cfg.runtime.checkpoint_every,
                on_checkpoint=lambda st: self._save_checkpoints([spec], {0: st}),
                capture_steps=self._capture_steps(spec),
                on_capture=lambda step, st: self._save_rewind(spec.trial, st),
                on_eval=on_eval,
                eval_batch_size=cfg.runtime.eval_batch_size,
                dropout_seed=self.seed("dropout", spec.trial, spec.level, spec.branch),
                test_eval=cfg.runtime.test_eval,
                flush_denormals=cfg.runtime.flush_denormals,
            )
        except TrainingDiverged as e:
            outcome = e
        progress.done_iters += cfg.train.iterations - first
        return self._finish_unit(spec, outcome, label)

    def run_batch(self, specs: list[UnitSpec], resumes: list[TrainState | None],
                  progress: Progress) -> list[dict[str, Any]]:
        """Train units that start (or resume) at the same iteration as one vectorised computation."""
        cfg = self.cfg
        labels = [progress.unit_label(s.trial, s.level, s.branch, density(s.mask)) for s in specs]
        for spec, label, resume in zip(specs, labels, resumes):
            self._announce(spec, label, resume)
        first = resumes[0].step if resumes[0] is not None else specs[0].start_step
        units = [UnitInput(s.start_state, s.mask, self.seed("data", s.trial), r) for s, r in zip(specs, resumes)]
        level = specs[0].level
        latest: dict[int, EvalPoint] = {}

        def span(xs: list[float], fmt: str = "5.2f", unit: str = "%") -> str:
            lo, hi = format(min(xs), fmt), format(max(xs), fmt)
            return f"{lo}{unit}" if len(xs) == 1 else f"{lo}-{hi}{unit}"

        def span_test(pts: list[EvalPoint]) -> str:
            accs = [100 * q.test_accuracy for q in pts if q.test_accuracy is not None]
            if not accs:  # test_eval="best" and no unit reached a new validation minimum
                return ""
            part = "" if len(accs) == len(pts) else f" ({len(accs)}/{len(pts)} units tested)"
            return f"test_acc {span(accs)}{part} "

        head = labels[0] if len(specs) == 1 else f"[level {level}/{cfg.lottery.levels}, {len(specs)} units at once]"

        def on_eval(i: int, p: EvalPoint) -> None:
            latest[i] = p
            if len(latest) == len(specs) and progress.due():
                pts = list(latest.values())
                self.log(f"{head} it {p.iteration:>6}/{cfg.train.iterations} "
                         f"val_loss {span([q.val_loss for q in pts], '.4f', '')} "
                         f"val_acc {span([100 * q.val_accuracy for q in pts])} "
                         f"{span_test(pts)}"
                         f"| ETA {progress.eta((p.iteration - first) * len(specs))}")

        outcomes = train_many(
            self.new_model(), units, self.splits, cfg.train,
            start_step=specs[0].start_step,
            eval_batch_size=cfg.runtime.eval_batch_size,
            checkpoint_every=cfg.runtime.checkpoint_every,
            on_checkpoint=lambda states: self._save_checkpoints(specs, states),
            capture_steps=self._capture_steps(specs[0]),
            on_capture=lambda i, step, st: self._save_rewind(specs[i].trial, st),
            on_eval=on_eval,
            test_eval=cfg.runtime.test_eval,
            flush_denormals=cfg.runtime.flush_denormals,
        )
        progress.done_iters += (cfg.train.iterations - first) * len(specs)
        return [self._finish_unit(s, o, lab) for s, o, lab in zip(specs, outcomes, labels)]

    def _finish_unit(self, spec: UnitSpec, outcome: TrainResult | TrainingDiverged, label: str) -> dict[str, Any]:
        store = self.store
        udir = store.unit_dir(spec.trial, spec.level, spec.branch)
        record: dict[str, Any] = {
            "trial": spec.trial, "level": spec.level, "branch": spec.branch,
            "weights_remaining": density(spec.mask),
            "status": "ok" if isinstance(outcome, TrainResult) else "failed",
        }
        if isinstance(outcome, TrainResult):
            result = outcome
            es = result.early_stop
            last = result.history[-1]
            record.update({
                "early_stop_iteration": es.iteration,
                "early_stop_test_accuracy": es.test_accuracy,
                "early_stop_val_accuracy": es.val_accuracy,
                "min_val_loss": es.val_loss,
                "final_test_accuracy": last.test_accuracy,
                "final_val_loss": last.val_loss,
                "final_iteration": last.iteration,
                "train_seconds": round(result.seconds, 3),
            })
            lines = "".join(json.dumps(h.to_dict()) + "\n" for h in result.history)
            atomic_write_bytes(udir / "metrics.jsonl", lines.encode())
            atomic_torch_save(udir / "final.pt", {k: v.cpu() for k, v in result.final_state.items()})
            if spec.level > 0 and spec.branch == "random_mask":
                atomic_torch_save(udir / "mask.pt", {k: v.cpu() for k, v in spec.mask.items()})
            self.log(
                f"{label} done: early stop at it {es.iteration}, test acc there "
                f"{100 * es.test_accuracy:.2f}%, final {100 * last.test_accuracy:.2f}% "
                f"({fmt_seconds(result.seconds)})"
            )
        else:
            record["error"] = str(outcome)
            self.log(f"{label} FAILED: {outcome}; recorded as failed, other units continue")
        # result.json last: its presence marks the unit finished.
        atomic_write_json(udir / RESULT, record)
        ckpt = udir / CHECKPOINT
        if ckpt.exists():
            ckpt.unlink()
        store.write_summary()
        return record

    # ------------------------------------------------------------------ groups of units
    def parallel_units(self) -> int:
        """How many units train at once: ``runtime.parallel_units``, or automatically all of a
        level's units for models the vectorised engines support (1 for BatchNorm/dropout)."""
        if not self.batchable:
            return 1
        return self.cfg.runtime.parallel_units or 1_000_000

    def run_units(self, specs: list[UnitSpec], progress: Progress) -> None:
        """Train the unfinished ``specs``: vectorised in groups that share a start point (models
        without BatchNorm/dropout, even a group of one: the engines beat the module path), else one
        at a time with :func:`lth.train.train`."""
        todo = [s for s in specs if not self.store.is_done(s.trial, s.level, s.branch)]
        if not self.batchable:
            for spec in todo:
                self.run_unit(spec, progress)
            return
        per_group = self.parallel_units()
        by_start: dict[int, list[tuple[UnitSpec, TrainState | None]]] = {}
        for spec in todo:
            resume = self._load_resume(spec)
            by_start.setdefault(resume.step if resume else spec.start_step, []).append((spec, resume))
        for start in sorted(by_start, reverse=True):  # the furthest along first
            group = by_start[start]
            for i in range(0, len(group), per_group):
                chunk = group[i: i + per_group]
                self.run_batch([s for s, _ in chunk], [r for _, r in chunk], progress)

    # ------------------------------------------------------------------ the whole experiment
    def run(self) -> list[dict[str, Any]]:
        cfg, L = self.cfg, self.cfg.lottery
        progress = Progress(cfg, self.log, self.store)
        branches = ["ticket"] + [b for b in L.branches if b != "ticket"]
        remaining = len(progress.units) - progress.finished_units
        template = self.new_model()
        self.log(
            f"run directory {self.store.path}: {len(progress.units)} units "
            f"({L.trials} trials x (1 dense + {L.levels} levels x {len(branches)} branches)), "
            f"{progress.finished_units} already finished, {remaining} to train; "
            f"up to {min(self.parallel_units(), L.trials * len(branches))} units at once"
        )
        # Level by level across trials, so the units of a level can train together.
        dense = [UnitSpec(t, 0, "ticket", self.level_mask(t, 0, template), self.initial_state(t), 0)
                 for t in range(L.trials)]
        self.run_units(dense, progress)
        alive = []
        for t in range(L.trials):
            if self.store.result(t, 0, "ticket")["status"] == "ok":
                alive.append(t)
            else:
                self.log(f"trial {t}: the dense network failed; skipping its pruned levels")
        starts = {t: self.rewind_state(t) for t in alive}  # read once, shared by every level
        for level in range(1, L.levels + 1):
            specs: list[UnitSpec] = []
            for trial in list(alive):
                if not L.one_shot and self.store.result(trial, level - 1, "ticket")["status"] != "ok":
                    self.log(f"trial {trial}: ticket at level {level - 1} failed; "
                             "no further levels can be pruned from it")
                    alive.remove(trial)
                    continue
                mask = self.level_mask(trial, level, template)
                specs += [self.branch_spec(trial, level, b, mask, starts[trial]) for b in branches]
            self.run_units(specs, progress)
        records = self.store.write_summary()
        self.log(f"finished in {fmt_seconds(time.perf_counter() - progress.t0)}; "
                 f"summary: {self.store.path / 'summary.json'}")
        return records

    def branch_spec(self, trial: int, level: int, branch: str, mask: Mask,
                    start_state: dict[str, torch.Tensor]) -> UnitSpec:
        k = self.cfg.lottery.rewind_iteration
        if branch == "ticket":
            return UnitSpec(trial, level, branch, mask, start_state, k)
        if branch == "reinit":
            return UnitSpec(trial, level, branch, mask, reinit_state(self.new_model(), self.cfg, trial, level), k)
        if branch == "random_mask":
            rmask = random_mask_like(mask, generator(self.cfg.lottery.seed, "random_mask", trial, level))
            return UnitSpec(trial, level, branch, rmask, start_state, k)
        raise ValueError(f"unknown branch {branch!r}")


def reinit_state(model: nn.Module, cfg: ExperimentConfig, trial: int, level: int) -> dict[str, torch.Tensor]:
    """The reinit branch's starting weights: a fresh draw from the model's initialisation
    distribution, seeded by ("reinit", trial, level). ``model`` is overwritten."""
    initialize(model, generator(cfg.lottery.seed, "reinit", trial, level))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def expected_weights_remaining(cfg: ExperimentConfig, model: nn.Module, level: int) -> float:
    """Fraction of prunable weights left after ``level`` rounds (from the counting rule alone)."""
    mask = full_mask(prunable_tensors(model))
    total = sum(m.numel() for m in mask.values())
    if cfg.prune.strategy == "global":
        pool = global_pool(model, cfg)
        kept = keep_count_global(mask, cfg.prune.rate, pool, level)
        return (kept + sum(mask[n].numel() for n in mask if n not in pool)) / total
    counts = keep_counts_layerwise(mask, layer_rates(model, cfg), level)
    return sum(counts.values()) / total

