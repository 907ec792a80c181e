"""Conv-2 training and evaluation speed: a plain PyTorch loop vs lth's paths, side by side in one
process, and the share of a unit's wall time that evaluation takes at the paper's interval.

Arms (Conv-2, batch 60, Adam 2e-4, a layer-wise pruned mask at ~41% of the weights):

* ``plain``: what one writes first: the nn.Module in the default (NCHW) layout, data in memory,
  index batches from a permutation, fused Adam, gradients masked before each step, fp32;
* ``lth fp32`` / ``lth bf16``: ``lth.training.train`` as ``lth run`` trains a conv unit (one at a
  time on the model itself, channels-last layout; bf16 = bfloat16 products, fp32 weights and
  optimizer state; the marginal cost of more iterations, evaluations excluded);
* ``lth vmap xN``: N units as one vmapped computation (grouped convolutions), per unit: the
  alternative ``lth run`` does not take on the CPU (EnginePolicy.batch_convolutions_on_cpu).

Evaluation: seconds per 1,000 images, the plain NCHW forward at batch 1,000 vs lth's evaluation
(``evaluate_many`` on the unit's engine, in chunks of ``EnginePolicy.conv_eval_chunk_on(device)``:
100 on the CPU, 1,000 on a GPU). The share of evaluation in a unit's wall time assumes the paper's
protocol: every 100 iterations the validation split (5,000 images) and, with ``--test-eval every``,
the test split (10,000); with ``--test-eval best`` the test split only at new validation minima
(``--test-fraction``, measured from a finished run's curves if ``--figure-run`` is given).

    python benchmarks/conv_speed.py --data-dir ../shared/datasets --iterations 100 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import command_line, machine_info, write_results
from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model, initialize, prunable_parameters
from lth.pruning import apply_mask, full_mask, prune_layerwise
from lth.training import UnitInput, needs_test, train, train_many
from lth.training.engines import EnginePolicy, make_engine
from lth.training.evaluation import eval_chunks, evaluate_many

MODEL = "conv2"
LR = 2e-4
BATCH = 60


def pruned_unit(shape: tuple[int, ...], seed: int, levels: int = 4):
    """A Conv-2 unit whose mask is ``levels`` rounds of the paper's Conv-2 rates (conv 10%, fc
    20%, output 10%) applied to random magnitudes."""
    model = build_model(MODEL, shape, 10)
    initialize(model, torch.Generator().manual_seed(seed))
    params = dict(model.named_parameters())
    names = prunable_parameters(model)
    mask = full_mask({n: params[n] for n in names})
    rates = {n: 0.1 if (params[n].dim() == 4 or n == "out.weight") else 0.2 for n in names}
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(levels):
        mask = prune_layerwise({n: torch.randn(params[n].shape, generator=g) for n in names}, mask, rates)
    apply_mask(model, mask)
    return model, mask


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(model, mask, splits, iterations: int, device: str) -> float:
    """Seconds per iteration of the plain loop (after 5 warm-up iterations)."""
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    params = dict(model.named_parameters())
    masked = [(params[k], m.to(device, params[k].dtype)) for k, m in mask.items()]
    n = splits.train_x.shape[0]
    g = torch.Generator().manual_seed(0)
    perm, pos = torch.randperm(n, generator=g).to(device), 0
    t0 = 0.0
    for it in range(iterations + 5):
        if it == 5:
            sync(device)
            t0 = time.perf_counter()
        if pos + BATCH > n:
            perm, pos = torch.randperm(n, generator=g).to(device), 0
        idx = perm[pos: pos + BATCH]
        pos += BATCH
        loss = F.cross_entropy(model(splits.train_x[idx]), splits.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m in masked:
            p.grad.mul_(m)
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / iterations


def marginal(run, cfg: TrainConfig) -> float:
    """Seconds per iteration without fixed costs (set-up, the evaluations at iteration 0 and at
    the end): the difference between training ``cfg.iterations`` and twice as many."""
    t1 = run(cfg)
    t2 = run(dataclasses.replace(cfg, iterations=2 * cfg.iterations))
    return max(t2 - t1, 1e-9) / cfg.iterations


def time_lth(splits, cfg: TrainConfig, seed: int) -> float:  # train() synchronises: it returns weights
    def run(c: TrainConfig) -> float:
        model, mask = pruned_unit(splits.input_shape, seed)
        t0 = time.perf_counter()
        train(model, mask, splits, c, data_seed=seed)
        return time.perf_counter() - t0
    return marginal(run, cfg)


def time_vmap(splits, cfg: TrainConfig, n: int, seed: int) -> float:
    """Seconds per unit-iteration of ``n`` units as one vmapped computation."""
    def run(c: TrainConfig) -> float:
        made = [pruned_unit(splits.input_shape, seed + u) for u in range(n)]
        units = [UnitInput({k: v.detach().clone() for k, v in m.state_dict().items()}, k, u)
                 for u, (m, k) in enumerate(made)]
        t0 = time.perf_counter()
        train_many(build_model(MODEL, splits.input_shape, 10), units, splits, c, engine="vmap")
        return time.perf_counter() - t0
    return marginal(run, cfg) / n


def time_eval(splits, precision: str, rounds: int, device: str) -> dict[str, float]:
    """Seconds per 1,000 images: the plain NCHW forward at batch 1,000, and lth's evaluation."""
    model, mask = pruned_unit(splits.input_shape, 0)
    model = model.to(device)
    x = splits.val_x[:1000]
    out: dict[str, float] = {}
    if precision == "fp32":
        model.eval()
        with torch.no_grad():
            model(x)
            best = min(_timed(lambda: model(x), device) for _ in range(rounds))
        out["plain"] = best
    engine = make_engine(model, [model.state_dict()], [mask], device, precision)
    chunks = eval_chunks(engine, x, splits.val_y[:1000], 1000)
    evaluate_many(engine, chunks)
    out["lth"] = min(_timed(lambda: evaluate_many(engine, chunks), device) for _ in range(rounds))
    return out


def _timed(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def test_fraction(run_dir: str) -> float:
    """Mean fraction of evaluation points at which a finished run measured (or, under
    ``--test-eval best``, would measure) the test split."""
    tested = total = 0
    files = sorted(Path(run_dir).glob("trial_*/level_*/*/metrics.jsonl"))
    if not files:
        raise SystemExit(f"--figure-run {run_dir}: no trial_*/level_*/*/metrics.jsonl there")
    for f in files:
        hist = [json.loads(line) for line in f.read_text().splitlines()]
        best = float("inf")
        for h in hist:
            tested += needs_test("best", h["iteration"], hist[-1]["iteration"], h["val_loss"], best)
            best = min(best, h["val_loss"])
        total += len(hist)
    return tested / total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--vmap-units", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--test-fraction", type=float, default=None,
                    help="fraction of evaluation points that measure the test split under --test-eval best")
    ap.add_argument("--figure-run", default=None, help="a finished Conv-2 run directory to measure "
                    "--test-fraction from")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    frac = test_fraction(args.figure_run) if args.figure_run else args.test_fraction
    splits = load_splits(args.dataset, args.data_dir, val_size=5000, split_seed=0, device=args.device)
    cfg = TrainConfig(iterations=args.iterations, batch_size=BATCH, lr=LR, eval_every=args.iterations * 10)
    # the training arms evaluate at their first and last iteration; small splits keep that fixed
    # cost (subtracted by `marginal` anyway) from dominating the benchmark's run time
    small = dataclasses.replace(splits, val_x=splits.val_x[:200], val_y=splits.val_y[:200],
                                test_x=splits.test_x[:200], test_y=splits.test_y[:200])
    t: dict[str, list[float]] = {}
    for rep in range(args.repeats):  # interleaved, so drifting machine load hits every arm alike
        model, mask = pruned_unit(splits.input_shape, rep)
        t.setdefault("plain", []).append(plain_loop(model, mask, small, args.iterations, args.device))
        for prec in ("fp32", "bf16"):
            t.setdefault(f"lth_{prec}", []).append(time_lth(small, dataclasses.replace(cfg, precision=prec), rep))
        t.setdefault("vmap", []).append(time_vmap(small, cfg, args.vmap_units, rep))
        print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(f"{k} {1000 * v[-1]:.1f} ms" for k, v in t.items()),
              flush=True)
    ms = {k: 1000 * min(v) for k, v in t.items()}
    ev32 = time_eval(splits, "fp32", 3, args.device)
    ev16 = time_eval(splits, "bf16", 3, args.device)
    ev = {"plain_fp32": ev32["plain"], "lth_fp32": ev32["lth"], "lth_bf16": ev16["lth"]}

    def share(train_ms: float, eval_s_per_1000: float, test_frac: float) -> float:
        """Evaluation's share of wall time per 100 iterations: 5 (validation) + 10 * test_frac
        (test) thousand images against 100 training iterations."""
        e = eval_s_per_1000 * (5 + 10 * test_frac)
        return e / (e + 0.1 * train_ms)

    shares = {}
    for name, tr, e in (("plain", ms["plain"], ev["plain_fp32"]), ("lth_fp32", ms["lth_fp32"], ev["lth_fp32"]),
                        ("lth_bf16", ms["lth_bf16"], ev["lth_bf16"])):
        shares[name] = {"every": share(tr, e, 1.0)}
        if frac is not None:
            shares[name]["best"] = share(tr, e, frac)
    result = {"machine": machine_info(args.device), "device": args.device,
              "command": command_line("conv_speed.py", argv),
              "dataset": args.dataset, "input_shape": list(splits.input_shape), "iterations": args.iterations,
              "repeats": args.repeats, "ms_per_unit_iteration": ms,
              "all_runs_ms": {k: [1000 * x for x in v] for k, v in t.items()},
              "eval_s_per_1000_images": ev, "test_fraction_best": frac, "eval_share_of_wall_time": shares}
    chunk = EnginePolicy().conv_eval_chunk_on(args.device)
    gain = lambda k: f"{ev['plain_fp32'] / ev[k]:.2f}x"  # noqa: E731
    x = lambda k: f"{ms[k]:.1f} ms ({ms['plain'] / ms[k]:.2f}x)"  # noqa: E731
    lines = [
        f"# Conv-2 speed: plain loop vs lth ({args.dataset}, input {tuple(splits.input_shape)}, batch {BATCH})",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}",
        f"- training: best of {args.repeats} interleaved runs per arm in one process; lth arms are the marginal "
        f"cost of {args.iterations} more iterations (evaluations and set-up excluded)",
        "",
        "| arm | per unit-iteration (speed-up vs plain) |",
        "|---|---|",
        f"| plain loop (NCHW, fused Adam, fp32) | {ms['plain']:.1f} ms |",
        f"| lth, one unit at a time, channels-last, fp32 (`lth run` default) | {x('lth_fp32')} |",
        f"| lth, one unit at a time, channels-last, bf16 (`--precision bf16`) | {x('lth_bf16')} |",
        f"| lth vmap, {args.vmap_units} units as grouped convolutions, fp32 (per unit) | {x('vmap')} |",
        "",
        ("A level's units train one after another on the CPU (EnginePolicy.batch_convolutions_on_cpu), so "
         "their aggregate throughput is the one-unit speed-up." if torch.device(args.device).type == "cpu" else
         "On this device a level's units train together as one vmapped computation (`lth run`'s default "
         "off the CPU), so their aggregate throughput is the vmap arm's."),
        "",
        "| evaluation, per 1,000 images | seconds |",
        "|---|---|",
        f"| plain forward, NCHW, fp32, batch 1,000 | {ev['plain_fp32']:.3f} |",
        f"| lth, channels-last, fp32, chunks of {chunk} | {ev['lth_fp32']:.3f} ({gain('lth_fp32')}) |",
        f"| lth, channels-last, bf16, chunks of {chunk} | {ev['lth_bf16']:.3f} ({gain('lth_bf16')}) |",
        "",
        "Evaluation's share of a unit's wall time at the paper's interval (validation 5,000 + test "
        "10,000 images every 100 iterations; `best`: the test split at "
        + (f"{100 * frac:.1f}% of the points" if frac is not None else "(not given)") + "):",
        "",
        "| arm | --test-eval every | --test-eval best |",
        "|---|---|---|",
    ]
    for name, s in shares.items():
        best = f"{100 * s['best']:.1f}%" if "best" in s else "-"
        lines.append(f"| {name} | {100 * s['every']:.1f}% | {best} |")
    lines += ["", "Evaluation's floor, by arithmetic: every 100 iterations the protocol trains 6,000 images "
              "(forward and backward, about 3x a forward's FLOPs) and evaluates 15,000 (forward only), so "
              "evaluation is 15 / (15 + 18) = 45% of the FLOPs with `every`, and 7,000 / 25,000 = 28% "
              "with `best` testing at 20% of the points, at equal kernel efficiency.", ""]
    write_results(args.results, "conv_speed", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
