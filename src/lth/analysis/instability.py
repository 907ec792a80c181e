"""Instability analysis: are two copies of a (sparse) network, trained from the same weights with
different SGD noise, linearly connected? (Frankle, Dziugaite, Roy & Carbin, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis", ICML 2020, Sec. 2-5.)

Protocol of :func:`instability`, for one trial, one sparsity level L and each rewind iteration k:

1. **theta_k**: the dense network's weights at iteration k of the trial's dense training: from
   the trial's theta0 (the run's ``theta0.pt``, else drawn as ``lth run`` draws it), with the
   trial's dense data order and the configured learning-rate schedule; k = 0 is theta0. One
   dense pass to the largest k needed captures every k (:func:`theta_ks`).
2. **Two copies** start from theta_k with level L's mask applied (level 0: dense; L > 0: the
   run's IMP mask of level L, found with the run's own rewinding setting) and train from k to
   ``train.iterations`` with the learning-rate schedule continued from k and a fresh optimizer.
   Copy c's data order (which also seeds its augmentation, if any) comes from
   ``derive_seed(seed, "instability", trial, level, k, c)``, its dropout from
   ``derive_seed(seed, "instability", "dropout", trial, level, k, c)``. The copies of one k train
   together where a vectorised engine takes the model, else one after the other.
3. **The path**: the error (1 - accuracy) of ``(1 - alpha) * copy0 + alpha * copy1`` at
   ``points`` evenly spaced alphas (both endpoints included), on the test split and on a seeded
   fixed subset of ``train_examples`` images of the training split (0 = all of it; the
   validation images are never used). Eval mode: dropout off. Networks with BatchNorm get their
   running statistics recomputed at every point, endpoints included
   (:func:`lth.analysis.interpolation.recompute_batchnorm`, on ``bn_batches`` seeded batches of
   ``train.batch_size`` training images, unaugmented). The subset and the batches depend on the
   trial alone, so every level and k is measured on the same images.
4. **The barrier**: the largest error on the path minus the mean of the two endpoints' errors
   (:func:`~lth.analysis.interpolation.error_barrier`), on train and on test data. The paper
   calls a network stable when its test barrier is within 2 percentage points.

Where the paper finds a separate IMP mask for every k (IMP with rewinding to k), this uses one
mask, the run's, for every k.

Results are stored and resumed as :mod:`lth.analysis.instability_store` describes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, ExperimentConfig, RuntimeConfig, config_hash
from ..data import Splits, load_splits
from ..experiment import Experiment
from ..models import model_names
from ..pruning import Mask, density, full_mask
from ..seeds import derive_seed
from ..store import FileDigest, RunStore, StoreError, config_from_run
from ..training import TrainingDiverged, TrainResult, TrainState, UnitInput, lr_schedule, max_units, train_many
from .instability_store import InstabilityDir, InstabilityProtocol, InstabilityResult, load_results
from .interpolation import alphas, error_barrier, has_batchnorm, interpolate, path_errors

__all__ = ["COPIES", "InstabilityProtocol", "InstabilityResult", "copy_seeds", "error_barrier", "eval_data",
           "instability", "interpolate", "load_results", "theta_ks"]

#: Copies trained per rewind point: the paper's pair.
COPIES = 2
#: Seconds between progress lines while copies train (said at checkpoints).
PROGRESS_SECONDS = 30.0

Log = Callable[[str], None]


def instability(source: str | Path | ExperimentConfig, level: int = 0, rewind: Sequence[int] = (0,), *,
                trial: int = 0, points: int = 30, train_examples: int = 10_000, bn_batches: int = 100,
                out: str | Path | None = None, root: str | Path = "runs", data_dir: str | Path | None = None,
                splits: Splits | None = None, runtime: RuntimeConfig | None = None,
                log: Log | None = print) -> list[InstabilityResult]:
    """Instability analysis of one trial at one sparsity level for each rewind iteration k in
    ``rewind`` (the protocol: this module's docstring). Returns one :class:`InstabilityResult`
    per k, sorted by k.

    ``source``: a run directory of ``lth run`` (its ``config.json`` fixes the experiment; level
    L > 0 uses its IMP mask of level L, which must exist), or an
    :class:`~lth.config.ExperimentConfig` (e.g. ``lth.get_preset("lenet300-mnist")``) whose run
    directory is ``root/<name>-<hash>``, as ``lth run`` names it: level 0 needs nothing from it,
    level L > 0 needs its level-L mask there. Results go to ``out`` (default: ``instability/``
    inside that run directory; the run's own files are only read). Rerunning the same call
    resumes: finished k's are read, not recomputed, and trained copies are reused.
    ``points``, ``train_examples`` (0 = the whole training split) and ``bn_batches``: see
    :class:`InstabilityProtocol`. ``splits``: the data (default: loaded as the configuration
    says, from ``data_dir``). ``runtime``: how the work runs (device, checkpoint interval,
    evaluation batch; default: the configuration's), which changes no number. ``log`` gets one
    line per step (None: silent).

    An invalid request (an unknown level or trial, a level not pruned yet, k outside
    [0, train.iterations)) is a :class:`~lth.config.ConfigError` naming the fix; an unreadable run
    directory, or an output directory in use or holding another configuration's results, a
    :class:`~lth.store.StoreError`.
    """
    protocol = InstabilityProtocol(points, train_examples, bn_batches)
    cfg, run_dir, run = resolve_source(source, root)
    if runtime is not None:
        cfg = replace(cfg, runtime=runtime)
    ks = check_request(cfg, run, run_dir, level, rewind, trial)
    sweep = Sweep(cfg, run, trial, level, protocol, Path(out) if out is not None else run_dir / "instability",
                  log=log or (lambda s: None))
    return sweep.run(ks, splits if splits is not None else load_data(cfg, data_dir))


def load_data(cfg: ExperimentConfig, data_dir: str | Path | None) -> Splits:
    """The experiment's splits, as ``lth run`` loads them."""
    return load_splits(cfg.data.dataset, data_dir, val_size=cfg.data.val_size, split_seed=cfg.data.split_seed,
                       device=cfg.runtime.device)


def resolve_source(source: str | Path | ExperimentConfig,
                   root: str | Path = "runs") -> tuple[ExperimentConfig, Path, RunStore | None]:
    """The configuration, its run directory, and a store over it (for reading) where a run is there."""
    if isinstance(source, ExperimentConfig):
        run_dir = Path(root) / f"{source.name}-{config_hash(source)}"
        if not (run_dir / "config.json").exists():
            return source, run_dir, None
        stored = _stored_config(run_dir)
        if stored.identity_dict() != source.identity_dict():
            raise StoreError(f"{run_dir / 'config.json'} holds another configuration than the directory's name "
                             "says; pass the run directory itself, or restore its config.json")
        return source, run_dir, RunStore(run_dir)
    run_dir = Path(source)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder: give a run directory made by `lth run`, or --preset NAME")
    return _stored_config(run_dir), run_dir, RunStore(run_dir)


def _stored_config(run_dir: Path) -> ExperimentConfig:
    try:
        return config_from_run(run_dir)
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError: the file, not the command, is wrong
        raise StoreError(f"{run_dir / 'config.json'} is not a valid configuration ({str(e)[:160]}); restore "
                         "it from a copy") from None


def check_request(cfg: ExperimentConfig, run: RunStore | None, run_dir: Path, level: int,
                  rewind: Sequence[int], trial: int) -> list[int]:
    """The rewind iterations, sorted and without repeats, once the request is known to be
    answerable (each problem is a :class:`~lth.config.ConfigError` saying what to do)."""
    T = cfg.train.iterations
    check_model(cfg, run_dir)
    for name, v in (("level", level), ("trial", trial)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{name} = {v!r}: must be an integer >= 0")
    ks = list(rewind)
    if not ks:
        raise ConfigError("no rewind iterations given: list at least one, e.g. 0,100,500,2000")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int):
            raise ConfigError(f"rewind iteration {k!r}: must be an integer (an iteration of the dense training)")
        if k < 0:
            raise ConfigError(f"rewind iteration {k}: must be >= 0 (0 = theta0, the initialisation)")
        if k >= T:
            raise ConfigError(f"rewind iteration {k}: must be below train.iterations = {T} (the copies train "
                              f"from k to {T})")
    if run is not None and trial >= cfg.lottery.trials:
        raise ConfigError(f"trial {trial}: {run_dir} has trials 0-{cfg.lottery.trials - 1}; choose one of them")
    if level > 0:
        if run is None:
            raise ConfigError(f"level {level} needs that level's IMP mask, which only a run has: run `lth run "
                              f"--levels {level}` with the same preset and flags first (it makes {run_dir}), "
                              "or give a run directory instead of a preset")
        if level > cfg.lottery.levels:
            raise ConfigError(f"level {level}: {run_dir} has levels 0-{cfg.lottery.levels}; extend the run with "
                              f"`lth run --run-dir {run_dir} --levels {level}` (with its other flags) first")
        if run.load_level_mask(trial, level) is None:
            raise ConfigError(f"level {level} of trial {trial} is not pruned yet in {run_dir} (no "
                              f"trial_{trial}/level_{level}/mask.pt): rerun its `lth run` command until level "
                              f"{level - 1} has finished")
    return sorted(set(ks))


def check_model(cfg: ExperimentConfig, run_dir: Path) -> None:
    """The sweep builds the network by name: a run of a user's own model cannot be swept."""
    if cfg.model.name not in model_names():
        raise ConfigError(f"{run_dir} is a run of a network outside lth's model registry (model.name = "
                          f"{cfg.model.name!r}: lth.find_tickets with your own model); the sweep builds the network "
                          f"by name, so give a run of `lth run` (models: {', '.join(model_names())})")


def copy_seeds(cfg: ExperimentConfig, trial: int, level: int, k: int) -> tuple[list[int], list[int]]:
    """Each copy's data-order seed (which also drives its augmentation) and its dropout seed."""
    base = cfg.lottery.seed
    return ([derive_seed(base, "instability", trial, level, k, c) for c in range(COPIES)],
            [derive_seed(base, "instability", "dropout", trial, level, k, c) for c in range(COPIES)])


def eval_data(cfg: ExperimentConfig, splits: Splits, trial: int, protocol: InstabilityProtocol,
              batchnorm: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], list[torch.Tensor]]:
    """The training images the train error is measured on (a seeded fixed subset in file order,
    or the whole training split) and, for a network with BatchNorm, the seeded batches its
    statistics are recomputed on (empty otherwise)."""
    n = splits.train_x.shape[0]
    m = protocol.train_examples or n
    if m >= n:
        train = (splits.train_x, splits.train_y)
    else:
        g = torch.Generator().manual_seed(derive_seed(cfg.lottery.seed, "instability", "train-subset", trial))
        idx = torch.randperm(n, generator=g)[:m].sort().values.to(splits.train_x.device)
        train = (splits.train_x.index_select(0, idx), splits.train_y.index_select(0, idx))
    batches: list[torch.Tensor] = []
    if batchnorm:
        b = min(cfg.train.batch_size, n)
        need, order = protocol.bn_batches * b, []
        while sum(len(o) for o in order) < need:  # more than one pass over the data if need be
            g = torch.Generator().manual_seed(derive_seed(cfg.lottery.seed, "instability", "batchnorm", trial,
                                                          len(order)))
            order.append(torch.randperm(n, generator=g))
        idx = torch.cat(order)[:need].to(splits.train_x.device)
        batches = [splits.train_x.index_select(0, idx[i: i + b]) for i in range(0, need, b)]
    return train, batches


def theta_ks(model: nn.Module, theta0: dict[str, torch.Tensor], mask: Mask, splits: Splits, cfg: ExperimentConfig,
             ks: Sequence[int], *, data_seed: int, dropout_seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    """The dense network's weights at each iteration of ``ks``: one pass of dense training from
    ``theta0`` (mask ``mask``, normally all ones; data order ``data_seed``; the configured
    learning-rate schedule) to the largest k, capturing on the way; k = 0 is ``theta0``. The
    loop's data order and learning rate at iteration s do not depend on where the pass ends, so
    theta_k is the same whichever other k's are asked for."""
    out = {0: {n: t.clone() for n, t in theta0.items()}} if 0 in ks else {}
    top = max(ks, default=0)
    if top == 0:
        return out
    # Train to the largest k only, evaluating at its ends alone; the learning rate is the full
    # schedule's (lr_at), so warm-up and milestones are those of the whole run.
    short = replace(cfg.train, iterations=top, eval_every=top, warmup_iterations=0, lr_milestones=())
    captured: dict[int, dict[str, torch.Tensor]] = {}
    (res,) = train_many(model, [UnitInput(theta0, mask, data_seed, dropout_seed=dropout_seed)], splits, short,
                        capture_steps=frozenset(k for k in ks if k > 0),
                        on_capture=lambda i, step, st: captured.__setitem__(step, st),
                        eval_batch_size=cfg.runtime.eval_batch_size, test_eval="best",
                        flush_denormals=cfg.runtime.flush_denormals, augment=cfg.data.augment,
                        lr_at=lr_schedule(cfg.train))
    if isinstance(res, TrainingDiverged):
        raise ConfigError(f"the dense network diverged before iteration {top} ({res}); lower train.lr")
    return {**out, **{k: captured[k] for k in ks if k > 0}}


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and values (whatever the file format)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update((t.to(torch.uint8) if t.dtype == torch.bool else t).numpy().tobytes())
    return h.hexdigest()


def _train_record(state: TrainState) -> dict[str, Any]:
    return {"step": state.step, "model": state.model, "optimizer": state.optimizer, "history": state.history,
            "rng": state.rng, "elapsed": state.elapsed, "running_loss": state.running_loss,
            "since_eval": state.since_eval}


def _seconds(t: float) -> str:
    return f"{t:.0f}s" if t < 120 else f"{t / 60:.1f}min"


class Sweep:
    """One (trial, level)'s rewind points: what is finished, what to train, what to evaluate."""

    def __init__(self, cfg: ExperimentConfig, run: RunStore | None, trial: int, level: int,
                 protocol: InstabilityProtocol, out: Path, *, log: Log):
        self.cfg, self.run_store, self.trial, self.level = cfg, run, trial, level
        self.protocol, self.out_path, self.log = protocol, Path(out), log
        self.trained = 0  # copies trained by this call
        self.evaluated = 0  # paths evaluated by this call
        self.finished = 0  # rewind points already finished

    def run(self, ks: Sequence[int], splits: Splits) -> list[InstabilityResult]:
        cfg, trial, level = self.cfg, self.trial, self.level
        if cfg.train.batch_size > splits.train_x.shape[0]:
            raise ConfigError(f"train.batch_size = {cfg.train.batch_size}: larger than the {splits.train_x.shape[0]} "
                              "training examples")
        exp = Experiment(cfg, self.run_store, splits.input_shape, splits.num_classes)  # type: ignore[arg-type]
        model = exp.new_model().to(cfg.runtime.device)
        theta0 = self.run_store.load_theta0(trial) if self.run_store is not None else None
        if theta0 is None:
            theta0 = exp.draw_init("init", trial)
        dense = full_mask(exp.prunable_tensors(model))
        mask = dense if level == 0 else self.run_store.load_level_mask(trial, level)  # type: ignore[union-attr]
        if mask is None:
            raise StoreError(f"the mask of level {level} disappeared from the run directory while this ran; rerun")
        base = {"config": config_hash(cfg), "trial": trial, "level": level, "iterations": cfg.train.iterations,
                "theta0_sha256": tensor_digest(theta0), "mask_sha256": tensor_digest(mask)}
        starts = {k: {**base, "k": k, "data_seeds": copy_seeds(cfg, trial, level, k)[0],
                      "dropout_seeds": copy_seeds(cfg, trial, level, k)[1]} for k in ks}
        with InstabilityDir.open(self.out_path, cfg) as out:
            self.log(f"instability: trial {trial}, level {level} ({100 * density(mask):.2f}% of weights), "
                     f"k = {', '.join(map(str, ks))}; {COPIES} copies per k, {cfg.train.iterations} iterations; "
                     f"results in {out.path}")
            todo: dict[int, list[int]] = {}  # k -> copies still to train
            for k in ks:
                if self._finished(out, k, starts[k]):
                    self.finished += 1
                    self.log(f"k={k}: finished, skipping")
                    continue
                done = out.finished_copies(trial, level, k, starts[k])
                todo[k] = [c for c in range(COPIES) if c not in done]
            need = [k for k, copies in todo.items() if copies]
            thetas: dict[int, dict[str, torch.Tensor]] = {}
            if need:
                if max(need) > 0:
                    self.log(f"dense network: training from theta0 to iteration {max(need)} for theta_k at "
                             f"k = {', '.join(str(k) for k in need if k > 0)}")
                thetas = theta_ks(model, theta0, dense, splits, cfg, need, data_seed=exp.seed("data", trial),
                                  dropout_seed=exp.seed("dropout", trial, 0, "ticket"))
            train, bn_batches = eval_data(cfg, splits, trial, self.protocol, has_batchnorm(model))
            for k in todo:
                if todo[k]:
                    self._train(out, model, k, thetas[k], mask, todo[k], splits, starts[k])
                self._evaluate(out, model, k, mask, starts[k], splits, train, bn_batches)
            self.log(f"instability: {self.trained} copies trained, {self.evaluated} paths evaluated, "
                     f"{self.finished} rewind points already finished")
            return [out.result(trial, level, k)[0] for k in ks]  # type: ignore[index]

    def _finished(self, out: InstabilityDir, k: int, start: dict[str, Any]) -> bool:
        """Whether k's ``result.json`` is the measurement asked for; a stale or damaged one is
        removed (and the log says why), so that no result of other work stays behind."""
        try:
            got = out.result(self.trial, self.level, k)
        except StoreError as e:
            self.log(f"k={k}: {e}; measuring again")
            out.drop_result(self.trial, self.level, k)
            return False
        if got is None:
            return False
        result, recorded = got
        if recorded != start:
            self.log(f"k={k}: the stored result started from other weights, mask or seeds; measuring again")
            out.drop_result(self.trial, self.level, k)
            return False
        if result.protocol != self.protocol:
            self.log(f"k={k}: stored with {result.protocol.to_dict()}; evaluating again with "
                     f"{self.protocol.to_dict()}")
            return False
        return True

    def _train(self, out: InstabilityDir, model: nn.Module, k: int, theta_k: dict[str, torch.Tensor], mask: Mask,
               copies: list[int], splits: Splits, start: dict[str, Any]) -> None:
        cfg, trial, level = self.cfg, self.trial, self.level
        T = cfg.train.iterations
        limit = max_units(model, cfg.runtime.device)
        per = COPIES if limit is None else max(1, limit)
        seeds, dropout = start["data_seeds"], start["dropout_seeds"]
        # Evaluate only where the copies start and end: the path evaluation measures them anyway.
        train_cfg = replace(cfg.train, eval_every=T)
        for i in range(0, len(copies), per):
            group = copies[i: i + per]
            ckpt = out.load_checkpoint(trial, level, k)
            resumes: list[TrainState | None] = [None] * len(group)
            if ckpt is not None and ckpt.get("start") == start and ckpt.get("copies") == group:
                try:
                    resumes = [TrainState(**s) for s in ckpt["states"]]
                except (KeyError, TypeError):
                    pass
            first = resumes[0].step if resumes[0] is not None else k
            self.log(f"k={k}: training copies {', '.join(map(str, group))} from iteration {first} to {T}"
                     + (" (resumed from a checkpoint)" if first != k else ""))
            units = [UnitInput(theta_k, mask, seeds[c], r, dropout[c]) for c, r in zip(group, resumes)]
            t0 = time.perf_counter()
            last = [t0]  # when progress was last said: at most every PROGRESS_SECONDS

            def on_checkpoint(states: dict[int, TrainState], group=group, t0=t0, last=last) -> None:
                out.save_checkpoint(trial, level, k, {"start": start, "copies": group,
                                                      "states": [_train_record(states[j]) for j in sorted(states)]})
                now = time.perf_counter()
                if now - last[0] >= PROGRESS_SECONDS:
                    last[0] = now
                    step = next(iter(states.values())).step
                    self.log(f"k={k}: copies {', '.join(map(str, group))} at iteration {step}/{T} "
                             f"({_seconds(now - t0)})")

            results = train_many(model, units, splits, train_cfg, start_step=k,
                                 eval_batch_size=cfg.runtime.eval_batch_size,
                                 checkpoint_every=cfg.runtime.checkpoint_every, on_checkpoint=on_checkpoint,
                                 test_eval="best", flush_denormals=cfg.runtime.flush_denormals,
                                 augment=cfg.data.augment, lr_at=lr_schedule(cfg.train))
            for c, res in zip(group, results):
                if isinstance(res, TrainingDiverged):
                    raise ConfigError(f"level {level} k={k}: copy {c} diverged ({res}); lower train.lr")
            done = out.finished_copies(trial, level, k, start)
            for c, res in zip(group, results):
                assert isinstance(res, TrainResult)
                digest = out.save_copy(trial, level, k, c, res.final_state)
                done[c] = {"data_seed": seeds[c], "dropout_seed": dropout[c], "file": digest.to_dict(),
                           "train_seconds": round(res.seconds, 3)}
            out.write_copies(trial, level, k, start, done)  # after the weight files it vouches for
            out.drop_checkpoint(trial, level, k)
            self.trained += len(group)

    def _evaluate(self, out: InstabilityDir, model: nn.Module, k: int, mask: Mask, start: dict[str, Any],
                  splits: Splits, train: tuple[torch.Tensor, torch.Tensor], bn_batches: list[torch.Tensor]) -> None:
        cfg, trial, level = self.cfg, self.trial, self.level
        done = out.finished_copies(trial, level, k, start)
        if sorted(done) != list(range(COPIES)):  # only if a copy file was damaged since it was trained
            raise StoreError(f"{out.point_dir(trial, level, k)}: copies {sorted(set(range(COPIES)) - set(done))} "
                             "are missing or damaged; rerun the same command to train them again")
        digests = {c: FileDigest.from_dict(done[c]["file"]) for c in range(COPIES)}
        a, b = (out.load_copy(trial, level, k, c, digests[c]) for c in range(COPIES))
        device = cfg.runtime.device
        a = {n: t.to(device) for n, t in a.items()}
        b = {n: t.to(device) for n, t in b.items()}
        t0 = time.perf_counter()
        xs = alphas(self.protocol.points)
        train_err, test_err = path_errors(model, a, b, xs, [train, (splits.test_x, splits.test_y)],
                                          bn_batches=bn_batches, batch_size=cfg.runtime.eval_batch_size,
                                          precision=cfg.train.precision)
        result = InstabilityResult(
            trial=trial, level=level, rewind_iteration=k, iterations=cfg.train.iterations,
            weights_remaining=density(mask), alphas=tuple(xs), train_errors=tuple(train_err),
            test_errors=tuple(test_err), train_barrier=error_barrier(train_err), test_barrier=error_barrier(test_err),
            endpoint_test_accuracy=(1 - test_err[0], 1 - test_err[-1]), train_examples=int(train[0].shape[0]),
            bn_recomputed=bool(bn_batches), data_seeds=tuple(start["data_seeds"]),
            train_seconds=round(sum(done[c]["train_seconds"] for c in range(COPIES)), 3),
            eval_seconds=round(time.perf_counter() - t0, 3), protocol=self.protocol)
        out.write_result(result, start, {f"copy_{c}.pt": digests[c] for c in range(COPIES)})
        self.evaluated += 1
        self.log(f"k={k}: train barrier {100 * result.train_barrier:.2f}%, test barrier "
                 f"{100 * result.test_barrier:.2f}%, endpoints' test accuracy "
                 f"{100 * result.endpoint_test_accuracy[0]:.2f}% / {100 * result.endpoint_test_accuracy[1]:.2f}% "
                 f"({self.protocol.points} points in {_seconds(result.eval_seconds)})")
