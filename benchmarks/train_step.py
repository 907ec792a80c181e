"""Per-iteration cost of training LeNet-300-100 on MNIST (batch 60, Adam 1.2e-3, sparse mask):
a plain PyTorch loop vs. lth's module path (``lth.training.train(..., engine="module")``, autograd
over the model itself) vs. lth's fastest engine (``lth.training.train_many``, 1 and N units; per
network).

The plain loop is what one writes first: data in memory, a fresh permutation each epoch,
default Adam, masks re-applied to the weights after every step, and the loss read with .item()
every step. All variants train the same masked network in the same process, side by side.
Results: docs/PERFORMANCE.md, "Training step".

    python benchmarks/train_step.py --data-dir ../shared/datasets --iterations 1000 --units 15
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from common import command_line, machine_info, write_results
from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model, initialize, prunable_parameters
from lth.pruning import apply_mask, full_mask, prune_layerwise
from lth.training import UnitInput, needs_test, train, train_many
from lth.training.engines import make_engine
from lth.training.evaluation import eval_chunks, evaluate_many


def sparse_lenet(seed: int, density_levels: int):
    model = build_model("lenet300", (1, 28, 28), 10)
    initialize(model, torch.Generator().manual_seed(seed))
    params = dict(model.named_parameters())
    names = prunable_parameters(model)
    mask = full_mask({n: params[n] for n in names})
    rates = {n: (0.1 if n == "out.weight" else 0.2) for n in names}
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(density_levels):  # magnitude pruning of random "trained" weights
        mask = prune_layerwise({n: torch.randn(params[n].shape, generator=g) for n in names}, mask, rates)
    apply_mask(model, mask)
    return model, mask


def plain_loop(model, mask, splits, iterations: int, batch: int, lr: float) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    params = dict(model.named_parameters())
    n = splits.train_x.shape[0]
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=g)
    pos, total = 0, 0.0
    t0 = time.perf_counter()
    for _ in range(iterations):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos: pos + batch]
        pos += batch
        loss = F.cross_entropy(model(splits.train_x[idx]), splits.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for k, m in mask.items():
                params[k].mul_(m)
        total += loss.item()
    return (time.perf_counter() - t0) / iterations


def engine_units(n: int, rep: int, levels: int) -> list[UnitInput]:
    units = []
    for u in range(n):
        m, mk = sparse_lenet(100 * rep + u, levels)
        units.append(UnitInput({k: v.detach().clone() for k, v in m.state_dict().items()}, mk, u))
    return units


def marginal(run, cfg: TrainConfig) -> float:
    """Seconds per iteration, excluding fixed costs (set-up, the evaluations at iteration 0 and at
    the end): the difference between training ``cfg.iterations`` and twice as many."""
    t1 = run(cfg)
    t2 = run(dataclasses.replace(cfg, iterations=2 * cfg.iterations))
    return max(t2 - t1, 1e-9) / cfg.iterations


def time_many(splits, cfg: TrainConfig, n: int, rep: int, levels: int) -> float:
    """Seconds per network-iteration of train_many over ``n`` units on the fastest engine
    (evaluation excluded)."""
    def run(c: TrainConfig) -> float:
        units = engine_units(n, rep, levels)
        t0 = time.perf_counter()
        train_many(build_model("lenet300", (1, 28, 28), 10), units, splits, c)
        return time.perf_counter() - t0
    return marginal(run, cfg) / n


def time_module(splits, cfg: TrainConfig, rep: int, levels: int) -> float:
    """Seconds per iteration of lth's module path: autograd over the model itself."""
    def run(c: TrainConfig) -> float:
        model, mask = sparse_lenet(rep, levels)
        t0 = time.perf_counter()
        train(model, mask, splits, c, data_seed=rep, engine="module")
        return time.perf_counter() - t0
    return marginal(run, cfg)


def time_eval(splits, precision: str, n: int, levels: int) -> dict[str, float]:
    """Seconds per network for one evaluation of the validation and of the test split (every 100
    iterations both, or with ``--test-eval best`` the test split only at new validation minima)."""
    units = engine_units(n, 0, levels)
    engine = make_engine(build_model("lenet300", (1, 28, 28), 10), [u.state for u in units],
                         [u.mask for u in units], "cpu", precision)
    # the splits' chunks (and their transposes, for a sparse first layer) are made once per
    # training call, so they are not timed
    val = eval_chunks(engine, splits.val_x, splits.val_y, 10_000)
    test = eval_chunks(engine, splits.test_x, splits.test_y, 10_000)
    evaluate_many(engine, val)
    spent = {"val": 0.0, "test": 0.0}
    for _ in range(3):
        for name, chunks in (("val", val), ("test", test)):
            t0 = time.perf_counter()
            evaluate_many(engine, chunks)
            spent[name] += time.perf_counter() - t0
    return {k: v / 3 / n for k, v in spent.items()}


def test_evaluations_per_level(run_dir: str) -> dict[int, float]:
    """Mean number of evaluation points per unit, by level, at which a finished run's validation
    loss reached a new minimum or training ended: the test evaluations ``--test-eval best`` makes."""
    import json
    from pathlib import Path
    counts: dict[int, list[int]] = {}
    files = sorted(Path(run_dir).glob("trial_*/level_*/*/metrics.jsonl"))
    if not files:
        raise SystemExit(f"--figure-run {run_dir}: no trial_*/level_*/*/metrics.jsonl there; "
                         "give a finished run directory of the LeNet figure")
    for f in files:
        hist = [json.loads(line) for line in f.read_text().splitlines()]
        best, k = float("inf"), 0
        for h in hist:
            k += needs_test("best", h["iteration"], hist[-1]["iteration"], h["val_loss"], best)
            best = min(best, h["val_loss"])
        counts.setdefault(int(f.parent.parent.name.split("_")[1]), []).append(k)
    return {lv: sum(v) / len(v) for lv, v in sorted(counts.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--units", type=int, default=15)
    ap.add_argument("--levels", default="0,7,15",
                    help="pruning levels of the test masks (0 = dense, 7 = 21%%, 15 = 3.6%%)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--figure-run", default=None,
                    help="a finished run directory of the LeNet figure: the projection then also covers "
                    "--test-eval best, with the test evaluations that run's validation curves imply")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(x) for x in args.levels.split(",")]
    test_evals = test_evaluations_per_level(args.figure_run) if args.figure_run else None
    if test_evals is not None and set(test_evals) != set(range(17)):
        raise SystemExit(f"--figure-run {args.figure_run}: has levels {sorted(test_evals)}; the projection "
                         "needs the figure's levels 0-16")
    splits = load_splits("mnist", args.data_dir, val_size=5000, split_seed=0)
    rows = []
    for lv in levels:
        t: dict[str, list[float]] = {}
        for rep in range(args.repeats):
            for prec in ("fp32", "bf16"):
                cfg = TrainConfig(iterations=args.iterations, batch_size=60, lr=1.2e-3, precision=prec,
                                  eval_every=args.iterations * 10)
                if prec == "fp32":
                    model, mask = sparse_lenet(rep, lv)
                    t.setdefault("plain", []).append(plain_loop(model, mask, splits, args.iterations, 60, 1.2e-3))
                    t.setdefault("module_fp32", []).append(time_module(splits, cfg, rep, lv))
                t.setdefault(f"single_{prec}", []).append(time_many(splits, cfg, 1, rep, lv))
                t.setdefault(f"batched_{prec}", []).append(time_many(splits, cfg, args.units, rep, lv))
        best = {k: 1000 * min(v) for k, v in t.items()}
        model, mask = sparse_lenet(0, lv)
        rows.append({
            "level": lv,
            "weights_remaining": sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values()),
            "ms_per_network_iteration": best,
            "all_runs_ms": {k: [1000 * x for x in v] for k, v in t.items()},
        })
        for p in ("fp32", "bf16"):
            ev = time_eval(splits, p, args.units, lv)
            rows[-1].setdefault("val_eval_ms_per_network", {})[p] = 1000 * ev["val"]
            rows[-1].setdefault("test_eval_ms_per_network", {})[p] = 1000 * ev["test"]
            rows[-1].setdefault("eval_ms_per_network", {})[p] = 1000 * (ev["val"] + ev["test"])
    result = {"machine": machine_info(), "iterations": args.iterations, "units": args.units,
              "repeats": args.repeats, "rows": rows, "figure_run": args.figure_run,
              "test_evaluations_per_unit_by_level": test_evals,
              "projection": projection(rows, args.units, test_evals)}
    lines = [
        "# Training-step benchmark: LeNet-300-100, MNIST, batch 60, Adam 1.2e-3",
        "",
        f"- command: `{command_line('train_step.py', argv)}`",
        f"- machine: {result['machine']}",
        f"- best of {args.repeats} runs per variant, all in one process; lth variants: the marginal "
        f"cost of {args.iterations} more iterations (evaluations and set-up excluded; they are below)",
        "- plain: nn.Module, default Adam, masks re-applied after each step, loss.item() every step",
        "- lth module: `lth.training.train(..., engine=\"module\")`, autograd over the model (the path "
        "for BatchNorm/dropout models); lth engine: `lth.training.train_many` on its fastest engine "
        "(1 or N units; what `lth run` uses)",
        "",
        "| weights left | plain ms/it | lth module fp32 | lth engine x1 fp32 | lth engine x1 bf16 "
        f"| lth engine x{args.units} fp32 (per net) | lth engine x{args.units} bf16 (per net) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["ms_per_network_iteration"]
        cell = lambda k, b=b: f"{b[k]:.3f} ({b['plain'] / b[k]:.2f}x)"
        lines.append(f"| {100 * r['weights_remaining']:.1f}% | {b['plain']:.3f} | {cell('module_fp32')} | "
                     f"{cell('single_fp32')} | {cell('single_bf16')} | {cell('batched_fp32')} | "
                     f"{cell('batched_bf16')} |")
    ev = lambda r, p: (f"{r['val_eval_ms_per_network'][p]:.1f} + "  # noqa: E731
                       f"{r['test_eval_ms_per_network'][p]:.1f} ms")
    lines += ["", "Evaluation of validation (5,000 images) + test (10,000) per network, batched over "
              f"{args.units} units: " + "; ".join(
                  f"{100 * r['weights_remaining']:.1f}%: fp32 {ev(r, 'fp32')}, bf16 {ev(r, 'bf16')}"
                  for r in rows), ""]
    pj = result["projection"]
    lines += ["## Projection: the paper's LeNet figure (5 trials x (1 dense + 16 levels x 3 branches), "
              "50K iterations, evaluation every 100)", ""]
    for mode in ("every", "best"):
        for prec in ("fp32", "bf16"):
            key = f"{prec}_{mode}"
            if key in pj:
                lines.append(f"- {prec}, --test-eval {mode}: {pj[key]['hours']:.2f} h ({pj[key]['train_hours']:.2f} h "
                             f"training, {pj[key]['eval_hours']:.2f} h evaluation)")
    lines.append(f"- plain loop, without any evaluation: {pj['plain_hours']:.2f} h")
    if test_evals:
        lines += ["", f"--test-eval best: test evaluations per unit (of 501 points) in `{args.figure_run}`, "
                  "by level: " + ", ".join(f"{lv}: {k:.1f}" for lv, k in test_evals.items())]
    lines.append("")
    write_results(args.results, "train_step", result, "\n".join(lines))
    return 0


def projection(rows: list[dict], units: int, test_evals: dict[int, float] | None = None) -> dict:
    """Hours for the full figure, from the measured per-network costs, interpolated in log-density
    between the measured mask densities (each level's density from the paper's counting rule).
    Evaluation: 501 points per unit (every 100 of 50K iterations); the test split at all of them
    (``every``) or, given ``test_evals`` (per level, per unit), at that many (``best``)."""
    import math
    dens = sorted((r["weights_remaining"], r) for r in rows)

    def at(d: float, key: str, sub: str) -> float:
        pts = [(math.log(x), r[key][sub]) for x, r in dens]
        ld = math.log(d)
        if ld <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if ld <= x1:
                return y0 + (y1 - y0) * (ld - x0) / (x1 - x0)
        return pts[-1][1]

    out: dict = {}
    levels = [0] + [lv for lv in range(1, 17) for _ in range(3)]
    modes = {"every": None, **({"best": test_evals} if test_evals else {})}
    for mode, counts in modes.items():
        for prec in ("fp32", "bf16"):
            train_s = eval_s = 0.0
            for lv in levels:
                _, mask = sparse_lenet(0, lv)
                d = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
                train_s += 5 * 50_000 * at(d, "ms_per_network_iteration", f"batched_{prec}") / 1000
                n_test = 501 if counts is None else counts[lv]
                eval_s += 5 * (501 * at(d, "val_eval_ms_per_network", prec)
                               + n_test * at(d, "test_eval_ms_per_network", prec)) / 1000
            out[f"{prec}_{mode}"] = {"hours": (train_s + eval_s) / 3600, "train_hours": train_s / 3600,
                                     "eval_hours": eval_s / 3600}
    out["plain_hours"] = 5 * 49 * 50_000 * at(0.2, "ms_per_network_iteration", "plain") / 1000 / 3600
    return out


if __name__ == "__main__":
    raise SystemExit(main())
