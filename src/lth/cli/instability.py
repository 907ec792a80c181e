"""``lth instability``: linear mode connectivity of two copies trained from theta_k, per rewind
iteration k (Frankle et al., ICML 2020); resumable by rerunning the same command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "instability", help="instability analysis: error barrier between two copies trained from theta_k",
        description="For each rewind iteration k: train two copies of the network at a level (dense at level 0, "
        "else the run's IMP mask) from the dense network's weights at iteration k, with different data orders, "
        "and measure the error along the straight line between them; the barrier is the largest error minus "
        "the endpoints' mean (Frankle, Dziugaite, Roy & Carbin, ICML 2020). Writes instability.{md,csv,json} "
        "and instability.png/.svg (with matplotlib) into the output directory. Rerunning the same command skips "
        "finished k's. See docs/ANALYSIS.md.",
    )
    p.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR",
                   help="run directory made by `lth run` (its configuration and level masks are used)")
    p.add_argument("--preset", help="named configuration instead of RUN_DIR (see `lth presets`); level L > 0 "
                   "needs `lth run` with the same preset and flags to have reached level L")
    p.add_argument("--level", type=int, required=True, metavar="L", help="0 = dense; L > 0 = the IMP mask of level L")
    p.add_argument("--rewind", required=True, metavar="K,K,...",
                   help="comma-separated rewind iterations, e.g. 0,100,500,2000 (0 = theta0)")
    p.add_argument("--trial", type=int, default=0, help="trial whose theta0, dense training and mask are used "
                   "(default 0)")
    p.add_argument("--points", type=int, default=30, help="evenly spaced points on the path, endpoints "
                   "included (default 30, the paper's)")
    p.add_argument("--train-examples", type=int, default=10_000, metavar="N",
                   help="train error on a seeded fixed subset of N training images (default 10000; 0 = all)")
    p.add_argument("--bn-batches", type=int, default=100, metavar="N",
                   help="training batches over which BatchNorm statistics are recomputed at each point "
                   "(default 100; only for networks with BatchNorm)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory (default: RUN_DIR/instability, or RUNS/<name>-<hash>/instability "
                   "for --preset)")
    p.add_argument("--runs", type=Path, default=Path("runs"), metavar="ROOT",
                   help="with --preset: the root folder `lth run --out` used, where level masks are looked up "
                   "(default: runs)")
    p.add_argument("--iterations", type=int, help="with --preset: training iterations (as `lth run --iterations`)")
    p.add_argument("--data-dir", help="folder holding mnist/, fashion-mnist/, cifar-10/ "
                   "(default: $LTH_DATA, then the user cache directory)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's choice)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a configuration value (with RUN_DIR: runtime.* only; repeatable)")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    return p


def parse_rewind(text: str) -> list[int]:
    """``"0,100,500"`` -> ``[0, 100, 500]``; anything else is a ConfigError naming the bad part."""
    from ..config import ConfigError

    parts = [t.strip() for t in text.split(",")]
    out = []
    for t in parts:
        try:
            out.append(int(t))
        except ValueError:
            raise ConfigError(f"--rewind {text}: {t!r} is not an iteration; give comma-separated integers, "
                              "e.g. --rewind 0,100,500,2000") from None
    return out


def resolve(args: argparse.Namespace):
    """The configuration and its run directory (None for a preset without a run there yet is
    still the directory `lth run` would make)."""
    from ..config import ConfigError, ExperimentConfig, apply_overrides, config_hash, get_preset
    from ..store import StoreError, config_from_run

    if (args.run_dir is None) == (args.preset is None):
        raise ConfigError("give either RUN_DIR or --preset NAME (not both), e.g. `lth instability RUN_DIR "
                          "--level 0 --rewind 0,100,500,2000`")
    runtime = {"device": args.device, "threads": args.threads}
    if args.preset is not None:
        d = get_preset(args.preset).to_dict()
        if args.iterations is not None:
            d["train"]["iterations"] = args.iterations
        d["runtime"].update({k: v for k, v in runtime.items() if v is not None})
        cfg = apply_overrides(ExperimentConfig.from_dict(d), args.overrides)
        return cfg, args.runs / f"{cfg.name}-{config_hash(cfg)}"
    if args.iterations is not None:
        raise ConfigError("--iterations is for --preset; a run directory fixes train.iterations (rerun "
                          "`lth run` with other iterations to get another run directory)")
    bad = [o for o in args.overrides if not o.strip().startswith("runtime.")]
    if bad:
        raise ConfigError(f"--set {bad[0]}: a run directory fixes its configuration; with RUN_DIR, --set may "
                          "change only runtime.* (how the work runs)")
    if not args.run_dir.is_dir():
        raise ConfigError(f"{args.run_dir} is not a folder: give a run directory made by `lth run`, or "
                          "--preset NAME")
    try:
        cfg = config_from_run(args.run_dir)
    except (ValueError, TypeError) as e:
        raise StoreError(f"{args.run_dir / 'config.json'} is not a valid configuration ({str(e)[:160]}); restore "
                         "it from a copy") from None
    d = cfg.to_dict()
    d["runtime"].update({k: v for k, v in runtime.items() if v is not None})
    return apply_overrides(ExperimentConfig.from_dict(d), args.overrides), args.run_dir


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import instability, load_results
    from ..analysis.instability import check_model
    from ..data import dataset_info
    from ..models import check_fit
    from ..report import ReportError, plot_instability, write_instability_tables
    from ..report.instability import text_table
    from ..training import check_device

    ks = parse_rewind(args.rewind)
    cfg, run_dir = resolve(args)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    check_device(cfg.runtime.device)
    check_model(cfg, run_dir)
    info = dataset_info(cfg.data.dataset)
    check_fit(cfg.model.name, info.input_shape, info.num_classes, info.name)
    out = args.out if args.out is not None else run_dir / "instability"
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    source = cfg if args.preset is not None else run_dir
    instability(source, args.level, ks, trial=args.trial, points=args.points, train_examples=args.train_examples,
                bn_batches=args.bn_batches, out=out, root=args.runs, data_dir=args.data_dir, runtime=cfg.runtime,
                log=log)
    damaged: list = []
    results = load_results(out, damaged)  # every level and k measured in this directory so far
    for e in damaged:  # of another level or trial than this command's: its own command redoes it
        print(f"lth: warning: {e.path} {e.problem}; left out of the tables (rerun the command that measured "
              "it)", file=sys.stderr)
    title = f"{cfg.name}, {cfg.model.name} on {cfg.data.dataset}"
    written = write_instability_tables(results, out, title)
    print()
    print(text_table(results), end="")
    try:
        written += plot_instability(results, out / "instability", title)
    except ReportError as e:
        if "matplotlib" not in str(e):
            raise
        print("plot skipped: matplotlib is not installed (pip install 'lth[plot]'); the tables are written")
    print(f"\nresults: {', '.join(str(p) for p in written)}")
    return 0
