"""Whole-step A/B of the engine's sparse kernels against its dense compact path.

One training step of LeNet-300-100 units (batch 60, Adam, float32) on ``lth.stacked.MLPEngine``,
with the first layer's CSR forward + SDDMM gradient forced on (A) or off (B), at several IMP
levels, 1 and 15 units. The two arms' loops are interleaved and the best of 5 is kept. The data
are random stand-ins (this times the step; it trains nothing). The thresholds
``lth.stacked.SPARSE_FORWARD_BELOW`` / ``SPARSE_GRAD_BELOW`` are chosen from this.

    python benchmarks/sparse_step_ab.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from common import machine_info
from train_step import sparse_lenet

import lth.stacked as st
from lth.config import TrainConfig
from lth.train import make_optimizer


def stepper(n_units: int, levels: int, sparse: bool, x: torch.Tensor, y: torch.Tensor):
    saved = st.SPARSE_FORWARD_BELOW, st.SPARSE_GRAD_BELOW
    st.SPARSE_FORWARD_BELOW = st.SPARSE_GRAD_BELOW = 1.0 if sparse else 0.0
    try:
        units = [sparse_lenet(100 + i, levels) for i in range(n_units)]
        engine = st.MLPEngine(units[0][0], [{k: v.detach().clone() for k, v in m.state_dict().items()}
                                            for m, _ in units], [k for _, k in units], "cpu", "fp32")
    finally:
        st.SPARSE_FORWARD_BELOW, st.SPARSE_GRAD_BELOW = saved
    assert bool(engine._sparse_fwd) == sparse
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--levels", default="8,10,12,15", help="IMP levels (hidden layers at 0.8^level)")
    ap.add_argument("--units", default="1,15")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_info())
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(55000, 1, 28, 28, generator=g), torch.randint(0, 10, (55000,), generator=g)
    for n in (int(u) for u in args.units.split(",")):
        for lv in (int(v) for v in args.levels.split(",")):
            a, b = stepper(n, lv, True, x, y), stepper(n, lv, False, x, y)
            a(20)
            b(20)
            ta, tb = [], []
            for _ in range(5):
                ta.append(a(60))
                tb.append(b(60))
            print(f"units {n:2d} level {lv:2d} (layer 1 at {0.8 ** lv:.1%}): sparse kernels "
                  f"{min(ta) / 60 / n * 1e3:.3f}  dense compact {min(tb) / 60 / n * 1e3:.3f} "
                  "ms per network-iteration (best of 5)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
