"""Wall time of one real IMP level with ``--test-eval every`` vs ``best`` (and ``+flush``:
``--flush-denormals``), from a finished run.

Copies levels 0..L-1 of a finished run directory (the masks and weights level L starts from) into
a scratch directory, then retrains level L (all its units, batched as ``lth run`` does) once per
mode, back to back in this process. Reports the wall time of each, the test evaluations made,
and whether every unit's reported numbers equal the finished run's (``train_seconds`` aside).
Results: docs/PERFORMANCE.md, "Test-split evaluation and denormal flushing on real levels".

    python benchmarks/test_eval.py --run-dir bench_out/lenet300-mnist-fc00979ad0 \\
        --data-dir ../shared/datasets --levels 2,16
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from common import command_line, machine_info, write_results
from lth.config import ExperimentConfig
from lth.data import load_splits
from lth.experiment import Lottery
from lth.store import RunStore, read_json

IGNORED = {"train_seconds"}  # the only field allowed to differ between the modes and the original


def scratch_copy(src: Path, dst: Path, level: int) -> None:
    """``dst`` holds ``src``'s configuration and every trial's levels below ``level``."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copy2(src / "config.json", dst / "config.json")
    for trial in sorted(src.glob("trial_*")):
        for lv in range(level):
            shutil.copytree(trial / f"level_{lv}", dst / trial.name / f"level_{lv}")


def retrain_level(cfg: ExperimentConfig, scratch: Path, splits, level: int, mode: str) -> dict:
    d = cfg.to_dict()
    d["lottery"]["levels"] = level
    d["runtime"]["test_eval"] = mode.split("+")[0]
    d["runtime"]["flush_denormals"] = mode.endswith("+flush")
    run_cfg = ExperimentConfig.from_dict(d)

    def log(s: str) -> None:
        print(f"  [{mode}] {s}", flush=True)

    t0 = time.perf_counter()
    with RunStore.open(run_cfg, run_dir=scratch) as store:
        records = [r.to_dict() for r in Lottery(run_cfg, store, splits, log=log).run()]
    seconds = time.perf_counter() - t0
    tested = skipped = 0
    for f in scratch.glob(f"trial_*/level_{level}/*/metrics.jsonl"):
        for line in f.read_text().splitlines():
            if json.loads(line)["test_accuracy"] is None:
                skipped += 1
            else:
                tested += 1
    return {"seconds": seconds, "records": [r for r in records if r["level"] == level],
            "test_evaluations": tested, "skipped_test_evaluations": skipped}


def same_numbers(records: list[dict], src: Path, level: int) -> tuple[bool, list[str]]:
    diffs = []
    for r in records:
        orig = read_json(src / f"trial_{r['trial']}" / f"level_{level}" / r["branch"] / "result.json")
        for k in sorted(set(r) | set(orig)):
            if k not in IGNORED and r.get(k) != orig.get(k):
                diffs.append(f"trial {r['trial']} {r['branch']} {k}: {orig.get(k)!r} -> {r.get(k)!r}")
    return not diffs, diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path, help="a finished run directory")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--levels", default="2,16", help="comma-separated levels to retrain")
    ap.add_argument("--modes", default="every,best",
                    help="test_eval modes, in the order they run; MODE+flush also flushes denormals")
    ap.add_argument("--scratch", type=Path, default=Path("bench_out/test_eval_scratch"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--name", default="test_eval", help="results file name (NAME.json, NAME.md)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ExperimentConfig.from_dict(read_json(args.run_dir / "config.json"))
    splits = load_splits(cfg.data.dataset, args.data_dir, val_size=cfg.data.val_size,
                         split_seed=cfg.data.split_seed)
    rows = []
    for level in (int(x) for x in args.levels.split(",")):
        for mode in args.modes.split(","):
            scratch_copy(args.run_dir, args.scratch, level)
            print(f"level {level}, test_eval={mode}", flush=True)
            out = retrain_level(cfg, args.scratch, splits, level, mode)
            same, diffs = same_numbers(out["records"], args.run_dir, level)
            rows.append({"level": level, "mode": mode, "units": len(out["records"]),
                         "weights_remaining": out["records"][0]["weights_remaining"],
                         "seconds": out["seconds"], "test_evaluations": out["test_evaluations"],
                         "skipped_test_evaluations": out["skipped_test_evaluations"],
                         "same_numbers_as_the_finished_run": same, "differences": diffs[:20]})
            print(f"  {out['seconds'] / 60:.2f} min, same numbers as the finished run: {same}", flush=True)
    shutil.rmtree(args.scratch, ignore_errors=True)
    result = {"machine": machine_info(), "run_dir": str(args.run_dir), "rows": rows}
    lines = [
        "# Test-split evaluation: every evaluation point vs new validation minima only",
        "",
        f"- command: `{command_line('test_eval.py', argv)}`",
        f"- machine: {result['machine']}",
        f"- configuration: `{args.run_dir}` ({cfg.train.iterations} iterations, evaluation every "
        f"{cfg.train.eval_every}); each level's units retrained together, as `lth run` does",
        "- same numbers: every unit's result.json equals the finished run's, `train_seconds` aside",
        "",
        "| level | weights left | units | test_eval | wall min | test evaluations (skipped) | same numbers |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['level']} | {100 * r['weights_remaining']:.2f}% | {r['units']} | {r['mode']} | "
                     f"{r['seconds'] / 60:.2f} | {r['test_evaluations']} ({r['skipped_test_evaluations']}) | "
                     f"{'yes' if r['same_numbers_as_the_finished_run'] else 'NO'} |")
    by = {(r["level"], r["mode"]): r["seconds"] for r in rows}
    lines.append("")
    for level in sorted({r["level"] for r in rows}):
        if (level, "every") in by and (level, "best") in by:
            lines.append(f"- level {level}: best takes {by[(level, 'best')] / by[(level, 'every')]:.2f} of "
                         f"every's time ({by[(level, 'every')] / by[(level, 'best')]:.2f}x faster)")
    lines.append("")
    write_results(args.results, args.name, result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
