"""Per-iteration cost of training LeNet-300-100 on MNIST (batch 60, Adam 1.2e-3, sparse mask):
a plain PyTorch loop vs. lth's single-ticket step vs. lth's batched trainer (per network).

The plain loop is what one writes first: data in memory, a fresh permutation each epoch,
default Adam, masks re-applied to the weights after every step, and the loss read with .item()
every step. All variants train the same masked network in the same process, side by side.

    python benchmarks/train_step.py --data-dir ../shared/datasets --iterations 1000 --units 15
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import machine_info

from lth.batched import UnitInput, train_many
from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model, initialize, prunable_parameters
from lth.pruning import full_mask, prune_layerwise
from lth.store import atomic_write_bytes, atomic_write_json
from lth.train import apply_mask_, train


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
    apply_mask_(model, mask)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--units", type=int, default=15)
    ap.add_argument("--levels", type=int, default=7, help="pruning levels of the test mask (7 = 21%%)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_splits("mnist", args.data_dir, val_size=5000, split_seed=0)
    cfg = TrainConfig(iterations=args.iterations, batch_size=60, lr=1.2e-3,
                      eval_every=args.iterations * 10)  # no evaluation inside the timed region
    timings: dict[str, list[float]] = {"plain": [], "lth_single": [], "lth_batched_per_network": []}
    for rep in range(args.repeats):
        model, mask = sparse_lenet(rep, args.levels)
        timings["plain"].append(plain_loop(model, mask, splits, args.iterations, 60, 1.2e-3))
        model, mask = sparse_lenet(rep, args.levels)
        res = train(model, mask, splits, cfg, data_seed=rep)
        # train() evaluates at iteration 0 and at the end; subtract nothing: that is its real cost.
        timings["lth_single"].append(res.seconds / args.iterations)
        units = []
        for u in range(args.units):
            m, mk = sparse_lenet(100 * rep + u, args.levels)
            units.append(UnitInput({k: v.detach().clone() for k, v in m.state_dict().items()}, mk, u))
        t0 = time.perf_counter()
        train_many(build_model("lenet300", (1, 28, 28), 10), units, splits, cfg)
        timings["lth_batched_per_network"].append((time.perf_counter() - t0) / args.iterations / args.units)
    best = {k: min(v) for k, v in timings.items()}
    speed_single = best["plain"] / best["lth_single"]
    speed_batched = best["plain"] / best["lth_batched_per_network"]
    result = {
        "machine": machine_info(), "iterations": args.iterations, "units": args.units,
        "mask_levels": args.levels, "ms_per_iteration": {k: 1000 * v for k, v in best.items()},
        "all_runs_ms": {k: [1000 * x for x in v] for k, v in timings.items()},
        "speedup_single_vs_plain": speed_single,
        "throughput_batched_vs_plain": speed_batched,
    }
    md = "\n".join([
        "# Training-step benchmark: LeNet-300-100, MNIST, batch 60, Adam",
        "",
        f"- command: `python benchmarks/train_step.py {' '.join(argv if argv is not None else __import__('sys').argv[1:])}`",
        f"- machine: {result['machine']}",
        f"- best of {args.repeats} runs of {args.iterations} iterations; mask after {args.levels} levels",
        "",
        "| variant | ms per network-iteration | vs plain |",
        "|---|---|---|",
        f"| plain PyTorch loop | {1000 * best['plain']:.3f} | 1.00x |",
        f"| lth single ticket (`lth.train.train`) | {1000 * best['lth_single']:.3f} | {speed_single:.2f}x |",
        f"| lth batched, {args.units} networks (`lth.batched.train_many`), per network | "
        f"{1000 * best['lth_batched_per_network']:.3f} | {speed_batched:.2f}x |",
        "",
    ])
    out = Path(args.results)
    atomic_write_json(out / "train_step.json", result)
    atomic_write_bytes(out / "train_step.md", md.encode())
    print(md)
    print(json.dumps(result["ms_per_iteration"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
