"""Sparse training of very sparse tickets: where (if anywhere) do sparse kernels beat dense ones?

The work of a LeNet-300-100 training step is dominated by its first layer (784 -> 300, 88% of the
weights): the forward product and the gradient of the weights. The dense path of lth's engine
(:class:`lth.training.engines.MLPEngine`) does both densely (the pruned weights are stored as
zeros) and then gathers the surviving entries of the gradient for the optimizer (its compact
path). The sparse alternatives compute only what the mask keeps:

* ``dense``: the engine's path: ``x @ W.T`` (batched over units) and ``dY.T @ x``, then gather
  the surviving gradient entries;
* ``sparse_fwd``: the forward as a CSR sparse-dense product (``torch.sparse.mm``), the gradient
  dense + gather;
* ``sparse_fwd_bwd``: CSR forward and the gradient at the surviving entries only, as a sampled
  dense-dense product (SDDMM, ``torch.sparse.sampled_addmm``).

The CSR tensor is built from the compact survivor values directly (row-major order, the same
order as the engine's compact values), so no conversion is timed. Batch 60 (the paper's), random
masks with equal per-unit counts, 1 and 15 units, float32. Timings: best of 9 interleaved loops
(see ``benchmarks/sparse.py``). Writes ``sparse_training.{json,md}`` (docs/PERFORMANCE.md,
"Sparse first layer: the kernels alone").

    python benchmarks/sparse_training.py --threads 2
"""

from __future__ import annotations

import argparse
import warnings

import torch

from common import machine_info, write_results
from sparse import compare

DENSITIES = (0.51, 0.21, 0.107, 0.069, 0.036, 0.018, 0.009)
OUT, IN, BATCH = 300, 784, 60


def case(n_units: int, dens: float, seed: int = 0) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    nnz = max(1, round(dens * OUT * IN))
    idx = torch.stack([torch.randperm(OUT * IN, generator=g)[:nnz].sort().values for _ in range(n_units)])
    values = torch.randn(n_units, nnz, generator=g)
    w = torch.zeros(n_units, OUT * IN).scatter_(1, idx, values).view(n_units, OUT, IN)
    x = torch.randn(n_units, BATCH, IN, generator=g)
    dy = torch.randn(n_units, BATCH, OUT, generator=g)
    grad = torch.empty(n_units, OUT, IN)
    vgrad = torch.empty(n_units, nnz)
    rows, cols = idx // IN, idx % IN
    crow = [torch.searchsorted(rows[i], torch.arange(OUT + 1)) for i in range(n_units)]
    csr = [torch.sparse_csr_tensor(crow[i], cols[i], values[i], (OUT, IN)) for i in range(n_units)]
    pattern = [torch.sparse_csr_tensor(crow[i], cols[i], torch.ones(nnz), (OUT, IN)) for i in range(n_units)]
    xt = x.transpose(1, 2).contiguous()  # [N, IN, B]: the sparse product's dense operand
    dyt = dy.transpose(1, 2).contiguous()  # [N, OUT, B]

    def dense() -> None:
        torch.bmm(x, w.transpose(1, 2))
        torch.bmm(dy.transpose(1, 2), x, out=grad)
        torch.gather(grad.view(n_units, -1), 1, idx, out=vgrad)

    def sparse_fwd() -> None:
        for i in range(n_units):
            torch.sparse.mm(csr[i], xt[i])
        torch.bmm(dy.transpose(1, 2), x, out=grad)
        torch.gather(grad.view(n_units, -1), 1, idx, out=vgrad)

    def sparse_fwd_bwd() -> None:
        for i in range(n_units):
            torch.sparse.mm(csr[i], xt[i])
            torch.sparse.sampled_addmm(pattern[i], dyt[i], x[i], beta=0.0).values()

    # the three compute the same numbers: check before timing
    ref = torch.bmm(x, w.transpose(1, 2))
    for i in range(n_units):
        torch.testing.assert_close(torch.sparse.mm(csr[i], xt[i]).t(), ref[i], rtol=1e-4, atol=1e-4)
    dense()
    sddmm = torch.stack([torch.sparse.sampled_addmm(pattern[i], dyt[i], x[i], beta=0.0).values()
                         for i in range(n_units)])
    torch.testing.assert_close(sddmm, vgrad, rtol=1e-4, atol=1e-4)
    return compare({"dense": dense, "sparse_fwd": sparse_fwd, "sparse_fwd_bwd": sparse_fwd_bwd})


def crossover(rows: list[dict], units: int, key: str) -> float | None:
    """Highest measured density at which ``key`` is at least as fast as dense (None: never)."""
    wins = [r["density"] for r in rows if r["units"] == units and r[key] <= r["dense"]]
    return max(wins) if wins else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--units", default="1,15")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    rows = []
    for units in (int(u) for u in args.units.split(",")):
        for dens in DENSITIES:
            t = case(units, dens)
            row = {"units": units, "density": dens, **{k: v * 1e3 / units for k, v in t.items()}}
            rows.append(row)
            print(f"units {units:2d} density {dens:6.1%}: dense {row['dense']:.3f}  sparse fwd "
                  f"{row['sparse_fwd']:.3f}  sparse fwd+bwd {row['sparse_fwd_bwd']:.3f} ms per network", flush=True)
    md = [
        "# Sparse training crossover: LeNet-300-100's first layer (784 -> 300), batch 60, float32",
        "",
        f"- machine: {machine_info()}",
        "- ms per network per training step for the layer's forward product and surviving-weight "
        "gradient; best of 9 interleaved loops",
        "",
        "| units | density | dense (engine) | CSR forward | CSR forward + SDDMM gradient |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(f"| {r['units']} | {r['density']:.1%} | {r['dense']:.3f} | {r['sparse_fwd']:.3f} "
                  f"({r['dense'] / r['sparse_fwd']:.2f}x) | {r['sparse_fwd_bwd']:.3f} "
                  f"({r['dense'] / r['sparse_fwd_bwd']:.2f}x) |")
    md += ["", "Crossover (highest measured density where the sparse variant is at least as fast):", ""]
    cross = {}
    for units in sorted({r["units"] for r in rows}):
        for key in ("sparse_fwd", "sparse_fwd_bwd"):
            c = crossover(rows, units, key)
            cross[f"{units}:{key}"] = c
            md.append(f"- {units} unit(s), {key}: "
                      + (f"{c:.1%}" if c is not None else "never (dense wins at every measured density)"))
    write_results(args.results, "sparse_training", {"machine": machine_info(), "rows": rows, "crossover": cross},
                  "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
