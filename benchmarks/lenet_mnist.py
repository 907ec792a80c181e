"""LeNet-300-100 on real MNIST with the paper's protocol; writes a markdown table beside the
paper's reference points (Frankle & Carbin 2019, Figs. 1, 3, 4; ../shared/PAPER.md).

Resumable: rerun the same command and finished units are skipped. Wall time is summed over all
invocations (recorded in <run dir>/bench_wall.json, updated every minute, so an invocation that
is killed or cut off by the end of a session still counts up to its last update).

    python benchmarks/lenet_mnist.py --data-dir ../shared/datasets --trials 3 --iterations 10000 \
        --levels 15 --branches ticket,reinit,random_mask --threads 1

The paper's full protocol, with ``--results benchmarks/results/lenet_figure``: docs/PERFORMANCE.md,
"The full LeNet-300-100 figure, end to end".
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import torch

from common import command_line, machine_info, write_results
from lth.config import ExperimentConfig, get_preset
from lth.data import load_splits
from lth.experiment import Lottery
from lth.pruning import paper_lenet_remaining
from lth.report import aggregate, markdown_table
from lth.store import RunStore, atomic_write_json, read_json


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def paper_comparison(records: list[dict], levels: int) -> str:
    """Measured values at the paper's reference points next to what the paper reports."""
    ok = [r for r in records if r.get("status", "ok") == "ok"]

    def pick(level: int, branch: str, key: str) -> list[float]:
        return [r[key] for r in ok if r["level"] == level and r["branch"] == branch]

    lines = ["| reference point | paper | measured |", "|---|---|---|"]
    for n in (3, 7, 9, 12, 15):
        if n <= levels:
            w = pick(n, "ticket", "weights_remaining")
            if w:
                lines.append(f"| weights remaining after {n} levels | {100 * paper_lenet_remaining(n):.2f}% "
                             f"| {100 * _mean(w):.2f}% |")
    dense_acc = pick(0, "ticket", "early_stop_test_accuracy")
    dense_it = pick(0, "ticket", "early_stop_iteration")
    if dense_acc:
        lines.append(f"| dense test accuracy at early stop | about 98% | {100 * _mean(dense_acc):.2f}% |")
    if levels >= 9 and dense_acc:
        t = pick(9, "ticket", "early_stop_test_accuracy")
        if t:
            lines.append(f"| ticket at 13.5% minus dense, test acc. | > +0.3 points | "
                         f"{100 * (_mean(t) - _mean(dense_acc)):+.2f} points |")
    if levels >= 7 and dense_it:
        t_it = pick(7, "ticket", "early_stop_iteration")
        r_it = pick(7, "reinit", "early_stop_iteration")
        t_acc = pick(7, "ticket", "early_stop_test_accuracy")
        r_acc = pick(7, "reinit", "early_stop_test_accuracy")
        if t_it:
            lines.append(f"| ticket at 21.1%: early stop vs dense | 38% earlier | "
                         f"{100 * (1 - _mean(t_it) / _mean(dense_it)):.0f}% earlier |")
        if t_it and r_it:
            lines.append(f"| ticket at 21.1%: early stop speed-up vs reinit | 2.51x | "
                         f"{_mean(r_it) / _mean(t_it):.2f}x |")
        if t_acc and r_acc:
            lines.append(f"| ticket minus reinit at 21.1%, test acc. | +0.5 points | "
                         f"{100 * (_mean(t_acc) - _mean(r_acc)):+.2f} points |")
    smallest = max((r["level"] for r in ok), default=0)
    if smallest > 0 and dense_acc:
        for b in ("ticket", "reinit", "random_mask"):
            a = pick(smallest, b, "early_stop_test_accuracy")
            if a:
                w = _mean(pick(smallest, b, "weights_remaining"))
                expect = {"ticket": "matches dense down to about 3.6%",
                          "reinit": "falls off below about 21%",
                          "random_mask": "falls off fastest"}[b]
                lines.append(f"| {b} at {100 * w:.2f}% minus dense, test acc. | {expect} | "
                             f"{100 * (_mean(a) - _mean(dense_acc)):+.2f} points |")
    return "\n".join(lines) + "\n"


class WallLedger:
    """This invocation's wall time, added to the run's ledger and rewritten every ``every`` seconds
    by a background thread (a killed invocation loses at most that much)."""

    def __init__(self, path: Path, every: float = 60.0):
        self.path = path
        self.wall = read_json(path) if path.exists() else {"seconds": 0.0, "invocations": []}
        self.entry = {"seconds": 0.0, "finished": False, "machine": machine_info()}
        self.wall["invocations"].append(self.entry)
        self.t0 = time.perf_counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.write()
        self.thread = threading.Thread(target=self._beat, args=(every,), daemon=True)
        self.thread.start()

    def write(self, finished: bool = False) -> None:
        with self.lock:
            self.entry["seconds"] = round(time.perf_counter() - self.t0, 1)
            self.entry["finished"] = finished
            self.wall["seconds"] = round(sum(e["seconds"] for e in self.wall["invocations"]), 1)
            atomic_write_json(self.path, self.wall)

    def _beat(self, every: float) -> None:
        while not self.stop.wait(every):
            self.write()

    def close(self) -> dict:
        self.stop.set()
        self.thread.join()
        self.write(finished=True)
        return self.wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10_000)
    ap.add_argument("--levels", type=int, default=15)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--branches", default="ticket,reinit,random_mask")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--test-eval", choices=("every", "best"), default="every",
                    help="when the test split is measured (lth run --test-eval); same reported numbers")
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--results", default="benchmarks/results",
                    help="folder for lenet_mnist.md / lenet_mnist.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = get_preset("lenet300-mnist").to_dict()
    base["lottery"].update(trials=args.trials, levels=args.levels,
                           branches=tuple(args.branches.split(",")))
    base["train"].update(iterations=args.iterations, eval_every=args.eval_every)
    base["runtime"].update(test_eval=args.test_eval)
    cfg = ExperimentConfig.from_dict(base)
    splits = load_splits("mnist", args.data_dir, val_size=cfg.data.val_size,
                         split_seed=cfg.data.split_seed)
    with RunStore.open(cfg, root=Path(args.out)) as store:
        ledger = WallLedger(store.path / "bench_wall.json")
        try:
            records = [r.to_dict() for r in Lottery(cfg, store, splits, log=lambda s: print(s, flush=True)).run()]
        finally:
            wall = ledger.close()
        run_dir = store.path

    units = len(records)
    md = [
        "# LeNet-300-100 on MNIST: measured IMP results",
        "",
        f"- command: `{command_line('lenet_mnist.py', argv)}`",
        f"- configuration: {args.trials} trials, {args.iterations} iterations per unit, levels 0-"
        f"{args.levels}, branches {args.branches}, Adam 1.2e-3, batch 60, 5,000-image validation split, "
        f"evaluation every {args.eval_every} iterations (test split: {args.test_eval}; "
        f"denormals flushed: {cfg.runtime.flush_denormals})",
        f"- machine: {machine_info()}",
        f"- wall time: {wall['seconds'] / 60:.1f} min over {len(wall['invocations'])} invocation(s), "
        f"{units} units",
        f"- run directory: `{run_dir}`",
        "",
        "Mean over trials, [min, max] in brackets. Early-stop iteration = iteration of minimum "
        "validation loss; test accuracy is read at that iteration.",
        "",
        markdown_table(aggregate(records)),
        "## Against the paper's reference points",
        "",
        paper_comparison(records, args.levels),
    ]
    write_results(args.results, "lenet_mnist", {"config": cfg.to_dict(), "wall": wall, "records": records},
                  "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
