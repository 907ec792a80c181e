"""Whole-step A/B of the engine's sparse kernels against its dense compact path.

One training step of LeNet-300-100 units (batch 60, Adam, float32) on
``lth.training.engines.MLPEngine``, with the first layer's CSR forward + SDDMM gradient forced on
(A) or off (B) through its :class:`~lth.training.engines.EnginePolicy`, at several IMP levels, 1
and 15 units. The two arms' loops are interleaved and the best of 5 is kept. The data are random
stand-ins (this times the step; it trains nothing). ``EnginePolicy.sparse_forward_below`` and
``sparse_eval_below`` come from this (docs/PERFORMANCE.md, "Sparse first layer: the whole step");
the gradient thresholds (``sparse_grad_below``, ``sparse_grad_below_one_unit``) from
``benchmarks/level_step.py --ab-gradient`` on real levels (docs/PERFORMANCE.md, "Real levels: step
and validation pass").

    python benchmarks/sparse_step_ab.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from common import command_line, engine_policy, machine_info, write_results
from lth.config import TrainConfig
from lth.training import make_optimizer
from lth.training.engines import MLPEngine
from lth.training.evaluation import eval_chunks, evaluate_many
from train_step import sparse_lenet


def engine_with(n_units: int, levels: int, sparse: bool, kernels: tuple[str, ...]) -> MLPEngine:
    """``n_units`` LeNets pruned ``levels`` times, in an engine whose policy has the thresholds
    named in ``kernels`` (:class:`~lth.training.engines.EnginePolicy` fields) forced on (sparse)
    or off. The sparse kernels work on compact layers, so the sparse arm makes every masked layer
    compact; the dense arm keeps the default choice."""
    forced = {k: 1.0 if sparse else 0.0 for k in kernels}
    if sparse:
        forced["compact_below"] = 1.0
    units = [sparse_lenet(100 + i, levels) for i in range(n_units)]
    return MLPEngine(units[0][0], [{k: v.detach().clone() for k, v in m.state_dict().items()} for m, _ in units],
                     [k for _, k in units], "cpu", "fp32", engine_policy(**forced))


def stepper(n_units: int, levels: int, sparse: bool, x: torch.Tensor, y: torch.Tensor):
    engine = engine_with(n_units, levels, sparse,
                         ("sparse_forward_below", "sparse_grad_below", "sparse_grad_below_one_unit"))
    assert bool(engine._sparse_fwd) == sparse and bool(engine._sddmm) == sparse
    opt = make_optimizer(engine.opt_params, TrainConfig(lr=1.2e-3, batch_size=60))
    g = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(x.shape[0], generator=g) for _ in range(n_units)])

    def run(steps: int) -> float:
        t = time.perf_counter()
        for s in range(steps):
            idx = perm[:, (s % 900) * 60:(s % 900 + 1) * 60]
            engine.loss_and_grad(x[idx], y[idx])
            opt.step()
            engine.after_step()
        return time.perf_counter() - t
    return run


def evaluator(n_units: int, levels: int, sparse: bool, x: torch.Tensor, y: torch.Tensor):
    """One evaluation pass over (x, y) of ``n_units`` units, the first layer as one stacked CSR
    product (A) or as dense per-unit products (B)."""
    engine = engine_with(n_units, levels, sparse, ("sparse_eval_below",))
    assert bool(engine.sparse_eval) == sparse
    chunks = eval_chunks(engine, x, y, 10_000)

    def run(passes: int) -> float:
        t = time.perf_counter()
        for _ in range(passes):
            evaluate_many(engine, chunks)
        return time.perf_counter() - t
    return run


def best_of(a, b, warm: int, reps: int, each: int) -> tuple[float, float]:
    a(warm)
    b(warm)
    ta, tb = [], []
    for _ in range(reps):  # interleaved, so drifts in machine speed hit both arms alike
        ta.append(a(each))
        tb.append(b(each))
    return min(ta) / each, min(tb) / each


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--levels", default="5,6,7,8,10,12,14,16", help="IMP levels (hidden layers at 0.8^level)")
    ap.add_argument("--units", default="1,15")
    ap.add_argument("--eval-levels", default="6,7,8,9,10,11,12",
                    help="levels at which to time evaluation of a 5,000-image split (empty: none)")
    ap.add_argument("--results", default=None, help="write sparse_step_ab.{json,md} into this directory")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print(info)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(55000, 1, 28, 28, generator=g), torch.randint(0, 10, (55000,), generator=g)
    rows, evals = [], []
    for n in (int(u) for u in args.units.split(",")):
        for lv in (int(v) for v in args.levels.split(",")):
            sa, sb = best_of(stepper(n, lv, True, x, y), stepper(n, lv, False, x, y), 20, 5, 60)
            rows.append({"units": n, "level": lv, "density": 0.8 ** lv, "sparse_ms": sa / n * 1e3,
                         "dense_ms": sb / n * 1e3})
            print(f"units {n:2d} level {lv:2d} (layer 1 at {0.8 ** lv:.1%}): sparse kernels "
                  f"{sa / n * 1e3:.3f}  dense (default path) {sb / n * 1e3:.3f} "
                  "ms per network-iteration (best of 5)", flush=True)
    if args.eval_levels:
        xv, yv = x[:5000], y[:5000]
        for lv in (int(v) for v in args.eval_levels.split(",")):
            ea, eb = best_of(evaluator(15, lv, True, xv, yv), evaluator(15, lv, False, xv, yv), 1, 5, 2)
            evals.append({"units": 15, "level": lv, "density": 0.8 ** lv, "sparse_ms": ea * 1e3,
                          "dense_ms": eb * 1e3})
            print(f"evaluation, 15 units, 5,000 images, level {lv:2d} (layer 1 at {0.8 ** lv:.1%}): "
                  f"stacked CSR {ea * 1e3:.1f}  dense {eb * 1e3:.1f} ms (best of 5)", flush=True)
    if args.results:
        md = ["# Sparse kernels vs the dense path, LeNet-300-100 (lth.training.engines.MLPEngine)", "",
              f"- command: `{command_line('sparse_step_ab.py', argv)}`", f"- machine: {info}",
              "- training step: batch 60, Adam, float32, ms per network-iteration, best of 5 interleaved "
              "repeats of 60 steps; sparse = the first layer's block-diagonal CSR forward + batched SDDMM "
              "gradient (compact optimizer), dense = the engine's default path with the kernels off", "",
              "| units | level | layer-1 density | sparse kernels | dense path | sparse / dense |",
              "|---|---|---|---|---|---|"]
        md += [f"| {r['units']} | {r['level']} | {r['density']:.1%} | {r['sparse_ms']:.3f} | {r['dense_ms']:.3f} "
               f"| {r['sparse_ms'] / r['dense_ms']:.2f} |" for r in rows]
        if evals:
            md += ["", "Evaluation of a 5,000-image split by 15 units (ms per pass, best of 5): the first layer "
                   "as one stacked CSR product vs dense per-unit products.", "",
                   "| level | layer-1 density | stacked CSR | dense | sparse / dense |", "|---|---|---|---|---|"]
            md += [f"| {r['level']} | {r['density']:.1%} | {r['sparse_ms']:.1f} | {r['dense_ms']:.1f} "
                   f"| {r['sparse_ms'] / r['dense_ms']:.2f} |" for r in evals]
        write_results(args.results, "sparse_step_ab", {"machine": info, "step": rows, "eval": evals},
                      "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
