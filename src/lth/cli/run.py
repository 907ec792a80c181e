"""``lth run``: an IMP experiment, resumable by rerunning the same command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..config import ExperimentConfig, apply_overrides, config_hash


def add_parser(subparsers) -> argparse.ArgumentParser:
    run = subparsers.add_parser(
        "run", help="run an iterative magnitude pruning experiment (resumable)",
        description="Run IMP: train dense, prune, reset/rewind, retrain, for each level and trial. "
        "Rerunning the same command continues where it stopped; more --levels, --trials or "
        "--branches extend the same run directory.",
    )
    run.add_argument("--preset", default=None,
                     help="named configuration (see `lth presets`; default: digits-quick)")
    run.add_argument("--config", type=Path, metavar="FILE",
                     help="configuration file (.toml, or .yaml with PyYAML); `lth config --preset NAME` "
                     "writes one to start from. Flags and --set apply on top")
    run.add_argument("--data-dir", help="folder holding mnist/, fashion-mnist/, cifar-10/ "
                     "(default: $LTH_DATA, then the user cache directory)")
    run.add_argument("--levels", type=int, help="pruning levels after the dense level 0")
    run.add_argument("--trials", type=int, help="independent trials (different init and data order)")
    run.add_argument("--iterations", type=int, help="training iterations per unit")
    run.add_argument("--eval-every", type=int, help="iterations between validation/test evaluations")
    run.add_argument("--rewind-iteration", type=int, metavar="K",
                     help="reset survivors to their values at iteration K (0 = theta0)")
    run.add_argument("--one-shot", action="store_true", default=None,
                     help="prune the trained dense network directly to each level's size")
    run.add_argument("--branches", help="comma-separated, from ticket, reinit, random_mask, oneshot, finetune, "
                     "lr_rewind (ticket always runs; see docs/ARCHITECTURE.md)")
    run.add_argument("--rewind-optimizer", action=argparse.BooleanOptionalAction, default=None,
                     help="with --rewind-iteration K > 0: start rewound units (ticket, random_mask, "
                     "oneshot) from the dense run's optimizer state at K (masked) instead of a fresh "
                     "optimizer (default: off)")
    run.add_argument("--seed", type=int, help="base seed for every source of randomness")
    run.add_argument("--device", help="torch device, e.g. cpu or cuda")
    run.add_argument("--out", default="runs", help="root folder for run directories (default: runs)")
    run.add_argument("--run-dir", help="exact run directory to use instead of <out>/<name>-<hash>")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override any configuration value, e.g. --set train.lr=0.001 (repeatable)")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's choice)")
    run.add_argument("--parallel-units", type=int, metavar="N",
                     help="train up to N units of a level at once as one vectorised computation "
                     "(default 0 = automatic: all of a level's units for models without BatchNorm/"
                     "dropout; 1 = one at a time). Results equal one-at-a-time training up to float "
                     "rounding; resume works across different values")
    run.add_argument("--test-eval", choices=("every", "best"),
                     help="when to evaluate the test split: every evaluation (default; the full "
                     "test-accuracy curve) or best: only where validation loss reaches a new minimum "
                     "and at the last iteration. Reported numbers (test accuracy at early stop, final "
                     "test accuracy) are the same, to float rounding, and most test evaluations are skipped (see "
                     "docs/PERFORMANCE.md). Not part of the configuration's identity: resume may switch")
    run.add_argument("--flush-denormals", action=argparse.BooleanOptionalAction, default=None,
                     help="flush denormal floats to zero on the CPU while training (default: on). Late "
                     "in training a confident classifier's softmax outputs are often denormal, which "
                     "slows every product reading the loss gradient. Flushing changes only values below "
                     "1.2e-38, but such last-bit differences can grow over a long run (results equal "
                     "statistically, not always bitwise). Not part of the configuration's identity")
    run.add_argument("--precision", choices=("fp32", "bf16"),
                     help="matrix-product precision: fp32 (the paper's, default) or bf16 (bfloat16 "
                     "products, float32 weights/optimizer/loss; fast on CPUs with AVX512-BF16/AMX; no gain for the "
                     "paper's small networks on a GPU, whose steps are launch-bound). "
                     "Part of the configuration: a bf16 run gets its own run directory")
    run.add_argument("--deterministic", action="store_true", default=None,
                     help="use PyTorch's deterministic algorithms (for bit-reproducible GPU runs; "
                     "CPU runs are deterministic already)")
    run.add_argument("--quiet", action="store_true",
                     help="print only errors and the final results table: no progress or log lines")
    run.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
                     help="also write every unit's curves (val_loss, val_accuracy, test_accuracy, "
                     "test_loss, train_loss, lr at each evaluation) as TensorBoard event files, one "
                     "TensorBoard run per unit (trial_T/level_L/BRANCH) under DIR (default: "
                     "<run directory>/tensorboard). Needs the tensorboard package: "
                     "pip install 'lth[tensorboard]'")
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved configuration and run directory, then exit")

    return run


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """The run's configuration: a file or a preset, then flags, then ``--set``."""
    from ..config import ConfigError, get_preset, load_config

    if args.config is not None:
        if args.preset is not None:
            raise ConfigError("give either --preset or --config, not both (a file may name its base "
                              "with preset = \"...\")")
        cfg = load_config(args.config)
    else:
        cfg = get_preset(args.preset or "digits-quick")
    branches = (None if args.branches is None
                else tuple(b.strip() for b in args.branches.split(",") if b.strip()))
    flags = {  # (section, field): value given on the command line, None = not given
        ("lottery", "levels"): args.levels,
        ("lottery", "trials"): args.trials,
        ("lottery", "rewind_iteration"): args.rewind_iteration,
        ("lottery", "one_shot"): args.one_shot,
        ("lottery", "rewind_optimizer"): args.rewind_optimizer,
        ("lottery", "branches"): branches,
        ("lottery", "seed"): args.seed,
        ("train", "iterations"): args.iterations,
        ("train", "eval_every"): args.eval_every,
        ("runtime", "device"): args.device,
        ("runtime", "threads"): args.threads,
        ("runtime", "parallel_units"): args.parallel_units,
        ("runtime", "test_eval"): args.test_eval,
        ("runtime", "flush_denormals"): args.flush_denormals,
        ("train", "precision"): args.precision,
        ("runtime", "deterministic"): args.deterministic,
    }
    # Apply all flag changes at once through a dict so cross-field checks see the final values.
    d = cfg.to_dict()
    for (section, name), value in flags.items():
        if value is not None:
            d[section][name] = value
    cfg = ExperimentConfig.from_dict(d)
    return apply_overrides(cfg, args.overrides)


def check_fits_data(cfg: ExperimentConfig, n_train: int) -> None:
    """Values that only the data can bound, checked before any file is written."""
    from ..config import ConfigError

    if cfg.train.batch_size > n_train:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size}: larger than the {n_train} training "
                          f"examples of {cfg.data.dataset} (after the validation split); use at most {n_train}")


def progress_display(quiet: bool):
    """How ``lth run`` shows its progress (a :class:`lth.experiment.ProgressSink`): nothing with
    ``--quiet``; a live display (rich) when standard output is a terminal that can redraw lines;
    else plain lines, as in a log file."""
    from ..experiment.progress import PlainProgress, ProgressSink  # torch: not at argument parsing

    if quiet:
        return ProgressSink()
    if _isatty(sys.stdout) and os.environ.get("TERM", "") not in ("dumb", "unknown"):
        from .live import LiveProgress  # rich is imported only for a terminal

        return LiveProgress()
    return PlainProgress(lambda s: print(s, flush=True))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import dataset_info, load_splits
    from ..experiment import Lottery, Sinks
    from ..experiment.branches import check_branches
    from ..experiment.tensorboard import TensorBoardProgress, require_tensorboard
    from ..models import check_fit
    from ..report import aggregate, text_table, verdict
    from ..store import RunStore
    from ..training import check_device

    cfg = resolve_config(args)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    check_branches(cfg.lottery.branches)
    check_device(cfg.runtime.device)
    info = dataset_info(cfg.data.dataset)  # the data set's name and the model's fit: no data read yet
    check_fit(cfg.model.name, info.input_shape, info.num_classes, info.name)
    if args.tensorboard is not None:
        require_tensorboard("--tensorboard")  # before any data is read or work is done
    if args.dry_run:
        print(json.dumps(cfg.to_dict(), indent=2))
        print(f"run directory: {args.run_dir or Path(args.out) / f'{cfg.name}-{config_hash(cfg)}'}")
        return 0
    if cfg.runtime.deterministic:
        # cuBLAS needs a fixed workspace for deterministic results (PyTorch reproducibility notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    splits = load_splits(cfg.data.dataset, args.data_dir, val_size=cfg.data.val_size,
                         split_seed=cfg.data.split_seed, device=cfg.runtime.device)
    check_fits_data(cfg, len(splits.train_y))  # before the run directory exists
    display = progress_display(args.quiet)
    sink = display
    # The display ends (a terminal gets its cursor back) before any error line or the table.
    try:
        display.message(f"data {cfg.data.dataset}: {len(splits.train_y)} train / {len(splits.val_y)} validation / "
                        f"{len(splits.test_y)} test; model {cfg.model.name}; device {cfg.runtime.device}")
        store = RunStore.open(cfg, root=Path(args.out), run_dir=Path(args.run_dir) if args.run_dir else None)
        with store:
            if args.tensorboard is not None:
                board = Path(args.tensorboard) if args.tensorboard else store.path / "tensorboard"
                sink = Sinks(display, TensorBoardProgress(board))
            records = Lottery(cfg, store, splits, progress=sink).run()
    except BaseException:
        try:
            sink.close()
        except Exception:  # the error or interrupt already on its way is the one to report
            pass
        raise
    sink.close()
    # Whatever follows is the run's result: printed under --quiet too.
    if not args.quiet:
        print()
    rows = aggregate(records)
    print(text_table(rows), end="")
    print(f"\nresults: {store.path / 'summary.json'} (figures and report.html: lth report {store.path})")
    if any(r.level == 0 for r in rows):
        print()
        print(verdict(rows, store.path.name, planned_levels=cfg.lottery.levels).text(), end="")
    return 0
