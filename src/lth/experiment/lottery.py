"""The iterative magnitude pruning (IMP) driver (Frankle & Carbin 2019, Sec. 2 and Algorithm).

For each trial: initialise theta0; level 0 trains the dense network (saving theta_k when rewinding,
and its optimizer state at k with ``lottery.rewind_optimizer``);
each level L >= 1 prunes the previous level's trained ticket (or, one-shot, the trained dense
network straight to level L's size), then trains one unit per branch (:mod:`.branches`).

Levels run one after another across trials, so the units of a level (trials x branches) can train
together on a vectorised engine. Every unit checks for its finished result first and resumes from
its last checkpoint, so the whole experiment resumes by rerunning the same command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ExperimentConfig
from ..data import Splits
from ..models import build_model, initialize, prunable_tensors
from ..pruning import Mask, density, full_mask
from ..seeds import derive_seed, generator
from ..store import DamagedFileError, RunStore, UnitRecord
from ..training import (
    EvalPoint,
    TrainingDiverged,
    TrainResult,
    TrainState,
    UnitInput,
    describe_machine,
    lr_schedule,
    max_units,
    software_versions,
    train_many,
)
from ..training.engines.module import LossFn, StepFn
from .branches import BranchContext, check_branches, get_branch
from .plan import next_mask, source_level
from .progress import Log, PlainProgress, Progress, ProgressSink, StartingUnit, fmt_seconds
from .units import UnitKey, UnitSpec


def branch_order(cfg: ExperimentConfig) -> list[str]:
    """The branches each pruned level trains: the ticket (the IMP line) first, then the others."""
    return ["ticket"] + [b for b in cfg.lottery.branches if b != "ticket"]


def all_units(cfg: ExperimentConfig) -> list[UnitKey]:
    L = cfg.lottery
    return [UnitKey(t, 0, "ticket") for t in range(L.trials)] + [
        UnitKey(t, lv, b) for t in range(L.trials) for lv in range(1, L.levels + 1) for b in branch_order(cfg)]


class Experiment:
    """One experiment's state on disk: its configuration, store and data, and how to build the
    pieces a unit needs (model, theta0, theta_k, level masks, a unit's start).

    By default the architecture comes from the model registry (``cfg.model.name``), its prunable
    weights are :func:`lth.models.prunable_parameters`' default rule, and initialisations are drawn
    by :func:`lth.models.initialize` from a generator seeded per (trial, purpose). A user's model
    (:func:`lth.find_tickets`) passes ``model_factory`` (a new model per call), ``prunable``
    (model -> parameter names) and ``init``: ``"factory"`` runs the factory under PyTorch's global
    generator seeded per (trial, purpose), so its own initialisation is the one drawn.
    """

    def __init__(self, cfg: ExperimentConfig, store: RunStore, input_shape: tuple[int, ...], num_classes: int,
                 *, model_factory: Callable[[], nn.Module] | None = None,
                 prunable: Callable[[nn.Module], list[str]] | None = None, init: str = "lth",
                 log: Log | None = None):
        check_branches(cfg.lottery.branches)
        if init not in ("lth", "factory"):
            raise ValueError(f"init = {init!r}: choose lth (lth.models.initialize) or factory")
        if init == "factory" and model_factory is None:
            raise ValueError("init='factory' needs a model_factory")
        self.cfg = cfg
        self.store = store
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.model_factory = model_factory
        self.prunable = prunable
        self.init = init
        self.log: Log = log or (lambda s: None)  # says when a damaged input is recomputed

    def new_model(self) -> nn.Module:
        """A model of the architecture (its weights are overwritten before use)."""
        if self.model_factory is not None:
            with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
                return self.model_factory()
        return build_model(self.cfg.model.name, self.input_shape, self.num_classes)

    def seed(self, *path: object) -> int:
        return derive_seed(self.cfg.lottery.seed, *path)

    def prunable_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.prunable is None:
            return prunable_tensors(model)
        params = dict(model.named_parameters())
        return {n: params[n] for n in self.prunable(model)}

    def draw_init(self, *path: object) -> dict[str, torch.Tensor]:
        """A fresh initialisation of the architecture, seeded by ``path`` (e.g. "init", trial)."""
        if self.init == "factory":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed(*path))
                model = self.model_factory()
        else:
            model = self.new_model()
            initialize(model, generator(self.cfg.lottery.seed, *path))
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def theta0(self, trial: int) -> dict[str, torch.Tensor]:
        """A trial's initialisation: drawn once from the trial's init seed and stored."""
        state = self.store.load_theta0(trial)
        if state is None:
            state = self.draw_init("init", trial)
            self.store.save_theta0(trial, state)
        return state

    def start_state(self, trial: int) -> dict[str, torch.Tensor]:
        """What pruned levels reset to: theta0, or theta_k when rewinding."""
        if self.cfg.lottery.rewind_iteration == 0:
            return self.theta0(trial)
        return self.store.load_rewind(trial)

    def start_optimizer(self, trial: int) -> dict[str, Any] | None:
        """The optimizer state rewound units start from: the dense run's at iteration k with
        ``lottery.rewind_optimizer``, else None (a fresh optimizer)."""
        return self.store.load_rewind_optimizer(trial) if self.cfg.lottery.rewind_optimizer else None

    def level_mask(self, trial: int, level: int) -> Mask:
        """The mask of a level: dense at level 0, else pruned once and stored (masks are nested)."""
        if level == 0:
            return full_mask(self.prunable_tensors(self.new_model()))
        try:
            mask = self.store.load_level_mask(trial, level)
        except DamagedFileError as e:  # e.g. pruned from a ticket that has been retrained since
            self.log(f"{e.path} {e.problem}: pruning it again")
            self.store.discard_input(e.path)
            mask = None
        if mask is not None:
            return mask
        template = self.new_model()
        source = source_level(self.cfg, level)
        if self.cfg.lottery.one_shot:
            base, rounds = full_mask(self.prunable_tensors(template)), level
        else:
            base, rounds = self.level_mask(trial, level - 1), 1
        weights = self.store.load_final(trial, source, "ticket")
        mask = next_mask(template, self.cfg, weights, base, rounds)
        self.store.save_level_mask(trial, level, mask,
                                   pruned_from=self.store.unit_dir(trial, source, "ticket") / "final.pt")
        return mask

    def unit_spec(self, key: UnitKey, level_mask: Mask | None = None,
                  start_state: dict[str, torch.Tensor] | None = None,
                  start_optimizer: dict[str, Any] | None = None) -> UnitSpec:
        """A unit's mask, start state, start step, learning-rate schedule and start optimizer
        state, as its branch defines them (level, start and optimizer state are loaded when not
        given)."""
        if key.level == 0:
            if key.branch != "ticket":
                raise ValueError(f"level 0 trains only the dense network (branch ticket), not {key.branch}")
            return UnitSpec(key, self.level_mask(key.trial, 0), self.theta0(key.trial), 0)
        mask = self.level_mask(key.trial, key.level) if level_mask is None else level_mask
        start = self.start_state(key.trial) if start_state is None else start_state
        opt = self.start_optimizer(key.trial) if start_optimizer is None else start_optimizer
        ctx = BranchContext(self.cfg, key.trial, key.level, mask, start, self.draw_init,
                            lambda level: self.store.load_final(key.trial, level, "ticket"), opt)
        s = get_branch(key.branch).start(ctx)
        return UnitSpec(key, s.mask, s.state, s.step, s.lr, s.optimizer, tuple(s.trained_from))

    def unit_mask(self, key: UnitKey) -> Mask:
        """A finished unit's mask, as stored (nothing is computed or written): dense at level 0,
        the unit's own where its branch has one (random_mask), else the level's IMP mask. A
        missing file is a FileNotFoundError naming it."""
        if key.level == 0:
            return full_mask(self.prunable_tensors(self.new_model()))
        if get_branch(key.branch).own_mask:
            mask = self.store.load_unit_mask(key.trial, key.level, key.branch)
            path = self.store.unit_dir(key.trial, key.level, key.branch) / "mask.pt"
        else:
            mask = self.store.load_level_mask(key.trial, key.level)
            path = self.store.level_dir(key.trial, key.level) / "mask.pt"
        if mask is None:
            raise FileNotFoundError(f"{path} is missing although the unit finished; the run directory is "
                                    "incomplete (delete the unit's directory and rerun the same command)")
        return mask


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


def result_record(spec: UnitSpec, outcome: TrainResult | TrainingDiverged, device: str = "cpu") -> UnitRecord:
    """A unit's record: its numbers are derived from its evaluations by the same rule that checks
    them when the run directory is read (:meth:`lth.store.UnitRecord.metrics_problem`); with them
    how the unit started (iteration, learning-rate schedule, optimizer) and where it trained
    (``device``'s machine, the software versions)."""
    key, mask = spec.key, spec.mask
    start = {"start_iteration": spec.start_step, "lr_schedule": spec.lr,
             "optimizer_start": "fresh" if spec.start_optimizer is None else "rewound",
             "machine": describe_machine(device), "software": software_versions()}
    if isinstance(outcome, TrainingDiverged):
        return UnitRecord(key.trial, key.level, key.branch, density(mask), "failed", error=str(outcome), **start)
    return UnitRecord.from_metrics(key.trial, key.level, key.branch, density(mask),
                                   [h.to_dict() for h in outcome.history], round(outcome.seconds, 3), **start)


class Lottery:
    """Runs an experiment's units level by level, in groups that train together.

    What it does is reported to the sink ``progress`` (:class:`~lth.experiment.progress.ProgressSink`:
    units starting, evaluations, units finishing, messages), kept as ``self.sink``; by default
    plain lines through ``log`` (:class:`~lth.experiment.progress.PlainProgress`). ``log`` is not
    used when ``progress`` is given. Closing the sink is the caller's."""

    def __init__(self, cfg: ExperimentConfig, store: RunStore, splits: Splits, *, log: Log = print,
                 progress: ProgressSink | None = None,
                 experiment: Experiment | None = None, loss_fn: LossFn | None = None,
                 step_fn: StepFn | None = None):
        self.cfg = cfg
        self.store = store
        self.splits = splits
        self.sink = progress if progress is not None else PlainProgress(log)
        self.log: Log = self.sink.message
        self.exp = experiment or Experiment(cfg, store, splits.input_shape, splits.num_classes)
        self.exp.log = self.log
        store.log = self.log
        self.loss_fn = loss_fn
        self.step_fn = step_fn
        custom = loss_fn is not None or step_fn is not None  # runs on the one-unit module engine
        # None: any number
        self.group_limit = 1 if custom else max_units(self.exp.new_model(), cfg.runtime.device)

    def parallel_units(self) -> int:
        """How many units train at once: ``runtime.parallel_units``, or automatically all of a
        level's units for models a vectorised engine supports and trains faster (1 for
        BatchNorm/dropout, and for convolutions on the CPU)."""
        if self.group_limit == 1:
            return 1
        return self.cfg.runtime.parallel_units or 1_000_000

    # ------------------------------------------------------------------ training groups of units
    def _resume(self, key: UnitKey) -> TrainState | None:
        try:
            ckpt = self.store.load_checkpoint(key.trial, key.level, key.branch)
            return TrainState(**ckpt) if ckpt is not None else None
        except (DamagedFileError, TypeError) as e:
            path = self.store.unit_dir(key.trial, key.level, key.branch) / "checkpoint.pt"
            why = e.problem if isinstance(e, DamagedFileError) else "does not hold a training state"
            self.log(f"{path} {why}: discarding it; the unit trains from its start")
            self.store.invalidate_unit(key.trial, key.level, key.branch)
            return None

    def inputs(self, spec: UnitSpec) -> list[Path]:
        """The recorded files a unit starts from: theta0 at level 0; at pruned levels the level's
        mask and what the level resets to (theta0, or theta_k when rewinding), the rewound
        optimizer state where the unit starts from it, and the trained tickets' ``final.pt`` its
        branch computed its start from (finetune, lr_rewind, oneshot)."""
        key, t = spec.key, spec.key.trial
        if key.level == 0:
            return [self.store.theta0_path(t)]
        start = self.store.theta0_path(t) if self.cfg.lottery.rewind_iteration == 0 else self.store.rewind_path(t)
        out = [start, self.store.level_mask_path(t, key.level)]
        if spec.start_optimizer is not None:
            out.append(self.store.rewind_optimizer_path(t))
        return out + [self.store.final_path(t, lv, "ticket") for lv in spec.trained_from]

    def repair(self) -> None:
        """Find damage before training (see :mod:`lth.store.run`, "Integrity"): a damaged theta0,
        theta_k or level mask is discarded and recomputed where the run reaches it (a unit that
        started from it stays finished if the recomputed file is identical); a damaged finished
        unit is retrained; theta_k missing behind a finished dense unit retrains that unit."""
        store, L = self.store, self.cfg.lottery
        if store.repaired_config:
            self.log(store.repaired_config)
        if store.checksums_problem:
            self.log(f"{store.checksums_problem}; every theta0, rewind and level mask is checked again")
        for path in store.input_paths():
            problem = store.input_problem(path)
            if problem is not None:
                store.discard_input(path)
                self.log(f"{path} {problem}: discarded; it is recomputed when the run reaches it")
        if L.rewind_iteration > 0:
            for t in range(L.trials):
                finished = store.unit_problems(t, 0, "ticket") is not None  # intact or not: theta0 may be redrawn
                made = [(store.rewind_path(t), "theta_k")]
                if L.rewind_optimizer:
                    made.append((store.rewind_optimizer_path(t), "the optimizer state at k"))
                gone = [(p, what) for p, what in made if store.rel(p) not in store.checksums()]
                if finished and gone:
                    store.invalidate_unit(t, 0, "ticket")
                    self.log(f"trial {t}: {gone[0][0].name} ({gone[0][1]}) is gone; retraining the dense "
                             "network, which recreates it")
        if (store.path / "summary.json").exists():
            store.write_summary()  # never lists a unit that is no longer intact

    def _capture_steps(self, level: int) -> frozenset[int]:
        k = self.cfg.lottery.rewind_iteration
        return frozenset({k}) if (level == 0 and k > 0) else frozenset()

    def train_group(self, specs: list[UnitSpec], resumes: list[TrainState | None],
                    progress: Progress) -> list[UnitRecord]:
        """Train units that start (or resume) at the same iteration as one computation."""
        cfg, store = self.cfg, self.store
        for spec in specs:
            store.unit_dir(spec.key.trial, spec.key.level, spec.key.branch).mkdir(parents=True, exist_ok=True)
        first = resumes[0].step if resumes[0] is not None else specs[0].start_step
        progress.resumed((first - specs[0].start_step) * len(specs))  # the ETA counts only what is left
        self.sink.units_started([
            StartingUnit(s.key, density(s.mask), r.step if r is not None else s.start_step, r is not None,
                         tuple(EvalPoint(**h) for h in r.history) if r is not None else ())
            for s, r in zip(specs, resumes)])
        units = [UnitInput(s.start_state, s.mask, self.exp.seed("data", s.key.trial), r,
                           self.exp.seed("dropout", s.key.trial, s.key.level, s.key.branch), s.start_optimizer)
                 for s, r in zip(specs, resumes)]
        level = specs[0].key.level

        def on_checkpoint(states: dict[int, TrainState]) -> None:
            idx = sorted(states)
            dirs = [store.unit_dir(specs[i].key.trial, specs[i].key.level, specs[i].key.branch) for i in idx]
            store.save_checkpoints(dirs, [_checkpoint_record(states[i]) for i in idx])

        outcomes = train_many(
            self.exp.new_model(), units, self.splits, cfg.train,
            start_step=specs[0].start_step,
            eval_batch_size=cfg.runtime.eval_batch_size,
            checkpoint_every=cfg.runtime.checkpoint_every,
            on_checkpoint=on_checkpoint,
            capture_steps=self._capture_steps(level),
            on_capture=lambda i, step, st: store.save_rewind(specs[i].key.trial, st),
            on_capture_optimizer=((lambda i, step, st: store.save_rewind_optimizer(specs[i].key.trial, st))
                                  if cfg.lottery.rewind_optimizer else None),
            on_eval=lambda i, p: self.sink.evaluated(specs[i].key, p),
            test_eval=cfg.runtime.test_eval,
            flush_denormals=cfg.runtime.flush_denormals,
            loss_fn=self.loss_fn,
            step_fn=self.step_fn,
            augment=cfg.data.augment,
            lr_at=lr_schedule(cfg.train, specs[0].lr),
        )
        progress.done_iters += (cfg.train.iterations - first) * len(specs)
        return [self._finish(s, o) for s, o in zip(specs, outcomes)]

    def _finish(self, spec: UnitSpec, outcome: TrainResult | TrainingDiverged) -> UnitRecord:
        record = result_record(spec, outcome, self.cfg.runtime.device)
        if isinstance(outcome, TrainResult):
            own = get_branch(spec.key.branch).own_mask and spec.key.level > 0
            self.store.finish_unit(record, metrics=[h.to_dict() for h in outcome.history],
                                   final_state=outcome.final_state, own_mask=spec.mask if own else None,
                                   inputs=self.inputs(spec))
        else:
            self.store.finish_unit(record, inputs=self.inputs(spec))
        self.sink.unit_finished(spec.key, record)
        return record

    def run_units(self, specs: list[UnitSpec], progress: Progress) -> None:
        """Train the unfinished ``specs`` in groups that share a start point (the furthest along
        first), a start step, a learning-rate schedule and whether the optimizer starts fresh, at
        most :meth:`parallel_units` at a time. A finished unit that is no longer intact
        is retrained, and the log says why."""
        todo = []
        for s in specs:
            problems = self.store.unit_problems(s.key.trial, s.key.level, s.key.branch)
            if problems == []:
                continue
            if problems:
                self.log(f"trial {s.key.trial} level {s.key.level} {s.key.branch}: {'; '.join(problems)}; "
                         "retraining this unit")
                self.store.invalidate_unit(s.key.trial, s.key.level, s.key.branch)
            todo.append(s)
        per_group = self.parallel_units()
        by_start: dict[tuple[int, int, str, bool], list[tuple[UnitSpec, TrainState | None]]] = {}
        for spec in todo:
            resume = self._resume(spec.key)
            group = (resume.step if resume else spec.start_step, spec.start_step, spec.lr,
                     spec.start_optimizer is None)
            by_start.setdefault(group, []).append((spec, resume))
        for start in sorted(by_start, key=lambda g: (-g[0], g[1:])):
            group = by_start[start]
            for i in range(0, len(group), per_group):
                chunk = group[i: i + per_group]
                self.train_group([s for s, _ in chunk], [r for _, r in chunk], progress)

    # ------------------------------------------------------------------ the whole experiment
    def run(self) -> list[UnitRecord]:
        cfg, L, store, exp = self.cfg, self.cfg.lottery, self.store, self.exp
        units = all_units(cfg)
        self.repair()
        progress = Progress(cfg, units, lambda u: store.is_done(u.trial, u.level, u.branch))
        branches = branch_order(cfg)
        self.log(
            f"run directory {store.path}: {len(units)} units "
            f"({L.trials} trials x (1 dense + {L.levels} levels x {len(branches)} branches)), "
            f"{progress.finished_units} already finished, {len(units) - progress.finished_units} to train; "
            f"up to {min(self.parallel_units(), L.trials * len(branches))} units at once"
        )
        self.sink.run_started(progress)
        self.run_units([exp.unit_spec(UnitKey(t, 0, "ticket")) for t in range(L.trials)], progress)
        alive = []
        for t in range(L.trials):
            if store.record(t, 0, "ticket").ok:
                alive.append(t)
            else:
                self.log(f"trial {t}: the dense network failed; skipping its pruned levels")
        starts = {t: exp.start_state(t) for t in alive}  # read once, shared by every level
        optimizers = {t: exp.start_optimizer(t) for t in alive}
        for level in range(1, L.levels + 1):
            specs: list[UnitSpec] = []
            for trial in list(alive):
                if not L.one_shot and not store.record(trial, level - 1, "ticket").ok:
                    self.log(f"trial {trial}: ticket at level {level - 1} failed; "
                             "no further levels can be pruned from it")
                    alive.remove(trial)
                    continue
                mask = exp.level_mask(trial, level)
                specs += [exp.unit_spec(UnitKey(trial, level, b), mask, starts[trial], optimizers[trial])
                          for b in branches]
            self.run_units(specs, progress)
        records = store.write_summary()
        self.log(f"finished in {fmt_seconds(time.perf_counter() - progress.t0)}; "
                 f"summary: {store.path / 'summary.json'}")
        self.sink.run_finished(records)
        return records
