"""Cost of one Adam step over LeNet-300-100's parameters (1 unit and N stacked units):
torch.optim.Adam's per-tensor loop, foreach and fused implementations vs.
lth.training.optimizers.DirectFusedAdam (the same fused kernel, called without torch.optim's
per-step Python bookkeeping).

The gradients are redrawn between timed steps so the optimizer state does not decay towards
denormal numbers (a repeated gradient of zero drives exp_avg to denormals, which are far slower
on x86 and would time something no training run sees).

    python benchmarks/optimizer_step.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from common import command_line, machine_info, write_results
from lth.training.optimizers import DirectFusedAdam

SHAPES = [(300, 784), (300,), (100, 300), (100,), (10, 100), (10,)]


def time_optimizer(make, units: int, steps: int, repeats: int) -> float:
    """Best-of-``repeats`` microseconds per optimizer step (gradient refresh excluded)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn((units, *s), generator=g) for s in SHAPES]
    grads = [[torch.randn(p.shape, generator=g) * 1e-2 for p in params] for _ in range(8)]
    opt = make(params)
    best = float("inf")
    for r in range(repeats + 1):  # the first round warms up (and makes the state)
        total = 0.0
        for s in range(steps):
            for p, gr in zip(params, grads[s % len(grads)]):
                p.grad = gr
            t0 = time.perf_counter()
            opt.step()
            total += time.perf_counter() - t0
        if r:
            best = min(best, total / steps)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="1,15")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = {
        "torch for-loop": lambda ps: torch.optim.Adam(ps, lr=1.2e-3, foreach=False),
        "torch foreach": lambda ps: torch.optim.Adam(ps, lr=1.2e-3, foreach=True),
        "torch fused": lambda ps: torch.optim.Adam(ps, lr=1.2e-3, fused=True),
        "lth DirectFusedAdam": lambda ps: DirectFusedAdam(ps, lr=1.2e-3),
    }
    rows = []
    for units in (int(u) for u in args.units.split(",")):
        us = {name: time_optimizer(make, units, args.steps, args.repeats) for name, make in variants.items()}
        rows.append({"units": units, "parameters": units * sum(torch.Size(s).numel() for s in SHAPES),
                     "us_per_step": us})
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine_info(), "steps": args.steps, "repeats": args.repeats, "rows": rows}
    names = list(variants)
    lines = ["# Adam step over LeNet-300-100's parameters", "",
             f"- command: `{command_line('optimizer_step.py', argv)}`",
             f"- machine: {result['machine']}",
             f"- best of {args.repeats} rounds of {args.steps} steps; microseconds per step (speed-up vs torch fused)",
             "", "| units | parameters | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        ref = r["us_per_step"]["torch fused"]
        cells = [f"{r['us_per_step'][n]:.1f} ({ref / r['us_per_step'][n]:.2f}x)" for n in names]
        lines.append(f"| {r['units']} | {r['parameters']:,} | " + " | ".join(cells) + " |")
    lines.append("")
    write_results(args.results, "optimizer_step", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
