"""Training-step and validation-pass time of one real IMP level's units, batched as ``lth run``
trains them (``lth.training.engines.MLPEngine``, float32, denormals flushed).

Loads every trial's final weights and mask of level L from a finished LeNet-300-100 run (one
unit per branch), so the step sees the run's real densities and real late-training values, then
times ``steps`` training steps on real MNIST batches and the 5,000-image validation pass.
``--units K`` keeps the first K units. ``--profile`` adds PyTorch's profiler table per operator
and input shape. ``--ab-gradient`` instead times, interleaved, two engines that differ only in
the first layer's weight gradient (where its CSR forward is on): the batched SDDMM vs the dense
batched product gathered at the surviving weights; ``EnginePolicy.sparse_grad_below`` comes from
this. It prints only: it is the profiling tool behind the per-step numbers in
docs/PERFORMANCE.md ("Real levels: step and validation pass").

    python benchmarks/level_step.py --run-dir bench_out/lenet300-mnist-fc00979ad0 \\
        --data-dir ../shared/datasets --level 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import engine_policy, machine_info
from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model
from lth.training import denormals_flushed, make_optimizer
from lth.training.engines import MLPEngine
from lth.training.evaluation import eval_chunks, evaluate_many


def load_level(run: Path, level: int, units: int | None):
    states, masks = [], []
    for trial in sorted(run.glob("trial_*")):
        d = trial / f"level_{level}"
        if not (d / "mask.pt").exists():
            continue
        mask = torch.load(d / "mask.pt", weights_only=True)
        for unit in sorted(p for p in d.iterdir() if (p / "final.pt").exists()):
            states.append(torch.load(unit / "final.pt", weights_only=True))
            masks.append(mask)
    if not states:
        raise SystemExit(f"no finished units of level {level} under {run}: choose a finished level")
    return states[:units], masks[:units]


def engine(states, masks, gradient: str | None = None) -> MLPEngine:
    """The engine ``lth run`` would build, or with the first layer's gradient forced to
    ``"sddmm"`` or ``"dense"`` (through the policy's gradient thresholds)."""
    forced = {} if gradient is None else {k: 1.0 if gradient == "sddmm" else 0.0
                                          for k in ("sparse_grad_below", "sparse_grad_below_one_unit")}
    return MLPEngine(build_model("lenet300", (1, 28, 28), 10), states, masks, "cpu", "fp32",
                     engine_policy(**forced))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a finished LeNet-300-100 MNIST run directory")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--level", type=int, required=True)
    ap.add_argument("--units", type=int, default=None, help="keep the first K units (default: all)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="print the profiler table of 100 steps")
    ap.add_argument("--ab-gradient", action="store_true",
                    help="time the SDDMM against the dense gathered first-layer gradient, interleaved, 3 repeats")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    states, masks = load_level(Path(args.run_dir), args.level, args.units)
    n = len(states)
    sp = load_splits("mnist", args.data_dir, val_size=5000, split_seed=0, download=False)
    cfg = TrainConfig()
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, sp.train_x.shape[0], (n * cfg.batch_size,), generator=gen)
               for _ in range(args.steps)]

    def trainer(eng: MLPEngine):
        opt = make_optimizer(eng.opt_params, cfg)

        def train(k: int) -> float:
            t = time.perf_counter()
            for i in range(k):
                flat = batches[i % args.steps]
                xb = sp.train_x.index_select(0, flat).view(n, cfg.batch_size, *sp.train_x.shape[1:])
                eng.loss_and_grad(xb, sp.train_y.index_select(0, flat).view(n, cfg.batch_size))
                opt.step()
                eng.after_step()
            return (time.perf_counter() - t) / max(k, 1)
        return train

    print(machine_info())
    with denormals_flushed(True):
        if args.ab_gradient:
            arms = {g: trainer(engine(states, masks, g)) for g in ("sddmm", "dense")}
            times: dict[str, list[float]] = {g: [] for g in arms}
            for _ in range(3):  # interleaved, so drifts in machine speed hit both arms alike
                for g, train in arms.items():
                    train(20)
                    times[g].append(train(args.steps) * 1e3)
            print(f"level {args.level}, {n} units, first-layer gradient: SDDMM "
                  f"{' '.join(f'{t:.2f}' for t in times['sddmm'])} | dense product gathered "
                  f"{' '.join(f'{t:.2f}' for t in times['dense'])} ms per step")
            return
        eng = engine(states, masks)
        train = trainer(eng)
        train(30)  # warm-up: optimizer state, allocator, caches
        dt = train(args.steps)
        print(f"level {args.level}, {n} units: step {dt * 1e3:.2f} ms ({dt / n * 1e3:.3f} ms per "
              f"network-iteration); compact layers {sorted(eng.compact)}, sparse forward "
              f"{sorted(eng._sparse_fwd)}, SDDMM gradient {sorted(eng._sddmm)}")
        chunks = eval_chunks(eng, sp.val_x, sp.val_y, 10_000)
        evaluate_many(eng, chunks)
        t = time.perf_counter()
        for _ in range(5):
            evaluate_many(eng, chunks)
        print(f"validation pass (5,000 images, {n} units): {(time.perf_counter() - t) / 5 * 1e3:.1f} ms")
        if args.profile:
            from torch.profiler import profile
            with profile(record_shapes=True) as p:
                train(100)
            print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
