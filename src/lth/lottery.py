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
from .store import RESULT, RunStore, StoreError, atomic_torch_save, atomic_write_bytes, atomic_write_json, torch_load
from .train import TrainingDiverged, TrainResult, TrainState, apply_mask_, train

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
    def run_unit(self, spec: UnitSpec, progress: Progress) -> dict[str, Any]:
        store, cfg = self.store, self.cfg
        udir = store.unit_dir(spec.trial, spec.level, spec.branch)
        if store.is_done(spec.trial, spec.level, spec.branch):
            return store.result(spec.trial, spec.level, spec.branch)
        udir.mkdir(parents=True, exist_ok=True)
        weights_remaining = density(spec.mask)
        label = progress.unit_label(spec.trial, spec.level, spec.branch, weights_remaining)

        model = self.new_model()
        model.load_state_dict(spec.start_state)
        model.to(self.device)
        mask = {k: v.to(self.device) for k, v in spec.mask.items()}
        apply_mask_(model, mask)

        ckpt_path = udir / "checkpoint.pt"
        resume = None
        if ckpt_path.exists():
            s = torch_load(ckpt_path)
            resume = TrainState(**s)
            self.log(f"{label} resuming from checkpoint at iteration {resume.step}")
        else:
            self.log(f"{label} training from iteration {spec.start_step}")

        rewind_k = cfg.lottery.rewind_iteration
        capture = frozenset({rewind_k}) if (spec.level == 0 and rewind_k > 0) else frozenset()

        def on_capture(step: int, state: dict[str, torch.Tensor]) -> None:
            atomic_torch_save(store.trial_dir(spec.trial) / "rewind.pt",
                              {k: v.cpu() for k, v in state.items()})

        def on_checkpoint(state: TrainState) -> None:
            atomic_torch_save(ckpt_path, {
                "step": state.step,
                "model": {k: v.cpu() for k, v in state.model.items()},
                "optimizer": state.optimizer,
                "history": state.history,
                "rng": state.rng,
                "elapsed": state.elapsed,
                "running_loss": None if state.running_loss is None else state.running_loss.cpu(),
                "since_eval": state.since_eval,
            })

        first = resume.step if resume else spec.start_step

        def on_eval(p: Any) -> None:
            it = p.iteration
            if not progress.due():
                return
            self.log(
                f"{label} it {it:>6}/{cfg.train.iterations} val_loss {p.val_loss:.4f} "
                f"val_acc {100 * p.val_accuracy:5.2f}% test_acc {100 * p.test_accuracy:5.2f}% "
                f"| ETA {progress.eta(it - first)}"
            )

        status, error = "ok", None
        result: TrainResult | None = None
        try:
            result = train(
                model, mask, self.splits, cfg.train,
                data_seed=self.seed("data", spec.trial),
                start_step=spec.start_step,
                resume=resume,
                checkpoint_every=cfg.runtime.checkpoint_every,
                on_checkpoint=on_checkpoint,
                capture_steps=capture,
                on_capture=on_capture,
                on_eval=on_eval,
                eval_batch_size=cfg.runtime.eval_batch_size,
                dropout_seed=self.seed("dropout", spec.trial, spec.level, spec.branch),
            )
        except TrainingDiverged as e:
            status, error = "failed", str(e)
            self.log(f"{label} FAILED: {e}; recorded as failed, other units continue")
        progress.done_iters += cfg.train.iterations - first

        record: dict[str, Any] = {
            "trial": spec.trial, "level": spec.level, "branch": spec.branch,
            "weights_remaining": weights_remaining,
            "status": status,
        }
        if result is not None:
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
            record["error"] = error
        # result.json last: its presence marks the unit finished.
        atomic_write_json(udir / RESULT, record)
        if ckpt_path.exists():
            ckpt_path.unlink()
        store.write_summary()
        return record

    # ------------------------------------------------------------------ the whole experiment
    def run(self) -> list[dict[str, Any]]:
        cfg, L = self.cfg, self.cfg.lottery
        progress = Progress(cfg, self.log, self.store)
        branches = ["ticket"] + [b for b in L.branches if b != "ticket"]
        remaining = len(progress.units) - progress.finished_units
        self.log(
            f"run directory {self.store.path}: {len(progress.units)} units "
            f"({L.trials} trials x (1 dense + {L.levels} levels x {len(branches)} branches)), "
            f"{progress.finished_units} already finished, {remaining} to train"
        )
        template = self.new_model()
        for trial in range(L.trials):
            theta0 = self.initial_state(trial)
            dense = UnitSpec(trial, 0, "ticket", self.level_mask(trial, 0, template), theta0, 0)
            rec = self.run_unit(dense, progress)
            if rec["status"] != "ok":
                self.log(f"trial {trial}: the dense network failed; skipping its pruned levels")
                continue
            start_state = self.rewind_state(trial)
            for level in range(1, L.levels + 1):
                prev_ok = L.one_shot or self.store.result(trial, level - 1, "ticket")["status"] == "ok"
                if not prev_ok:
                    self.log(f"trial {trial}: ticket at level {level - 1} failed; "
                             "no further levels can be pruned from it")
                    break
                mask = self.level_mask(trial, level, template)
                for branch in branches:
                    spec = self.branch_spec(trial, level, branch, mask, start_state)
                    self.run_unit(spec, progress)
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
            model = self.new_model()
            initialize(model, generator(self.cfg.lottery.seed, "reinit", trial, level))
            state = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
            return UnitSpec(trial, level, branch, mask, state, k)
        if branch == "random_mask":
            rmask = random_mask_like(mask, generator(self.cfg.lottery.seed, "random_mask", trial, level))
            return UnitSpec(trial, level, branch, rmask, start_state, k)
        raise ValueError(f"unknown branch {branch!r}")


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

