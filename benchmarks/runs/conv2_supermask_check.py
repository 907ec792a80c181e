"""Independent check of Conv-2 tickets' test accuracy at iteration 0 (docs/RESULTS.md, Conv-2 on
Fashion-MNIST): theta0 times each level's mask, evaluated by a hand-written forward pass
(F.conv2d, max-pool, linear) on Fashion-MNIST's test file read with numpy. It reads only the run's
theta0.pt and mask.pt files; no lth code.

    python benchmarks/runs/conv2_supermask_check.py RUN_DIR [--data-dir ../shared/datasets] [--trials 0]
"""

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's training-set pixel mean and std (in [0, 1])


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def forward(w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = F.relu(F.conv2d(x, w["features.0.weight"], w["features.0.bias"], padding=1))
    h = F.relu(F.conv2d(h, w["features.2.weight"], w["features.2.bias"], padding=1))
    h = F.max_pool2d(h, 2).flatten(1)
    h = F.relu(F.linear(h, w["fc.2.weight"], w["fc.2.bias"]))
    h = F.relu(F.linear(h, w["fc.5.weight"], w["fc.5.bias"]))
    return F.linear(h, w["out.weight"], w["out.bias"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--trials", default="0", help="comma-separated trials")
    args = ap.parse_args()
    folder = args.data_dir / "fashion-mnist"
    x = read_idx(folder / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    y = torch.tensor(read_idx(folder / "t10k-labels-idx1-ubyte.gz", 8), dtype=torch.long)
    x = (torch.tensor(x, dtype=torch.float32) / 255 - MEAN) / STD
    torch.set_grad_enabled(False)
    for trial in (int(t) for t in args.trials.split(",")):
        theta0 = torch.load(args.run_dir / f"trial_{trial}" / "theta0.pt")
        row, level = [], 0
        while level == 0 or (args.run_dir / f"trial_{trial}" / f"level_{level}" / "mask.pt").exists():
            w = dict(theta0)
            if level:
                mask = torch.load(args.run_dir / f"trial_{trial}" / f"level_{level}" / "mask.pt")
                w.update({k: theta0[k] * m.to(theta0[k].dtype) for k, m in mask.items()})
            correct = sum(int((forward(w, x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                          for i in range(0, len(y), 1000))
            row.append(f"level {level}: {100 * correct / len(y):.2f}")
            level += 1
        print(f"trial {trial} at iteration 0, test accuracy %:", ", ".join(row))


if __name__ == "__main__":
    main()
