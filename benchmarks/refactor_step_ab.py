"""Interleaved A/B of one training iteration before and after a change of lth's code, in one
process: is the step as fast as it was?

The "before" package is a checkout's ``src/lth`` (e.g. a git worktree of the commit before the
change), loaded under the name ``lth_before`` (lth uses relative imports only, so it can be). Both
versions train the same LeNet-300-100 units (same weights, masks, data order) on real MNIST for
``--iterations`` steps per timing; each arm is timed in a block of its own whose two sides
alternate (before, after, after, before, ...), so a drift of the machine's speed hits both alike
and no other arm runs in between; per arm the median over ``--repeats`` is reported,
with the plain PyTorch loop of ``train_step.py`` beside them for the speed-ups. Validation and
test splits are cut to 500 images each so the two evaluations of every timed run (iteration 0 and
the last) are a small, equal share of both arms.

Arms: the engine ``lth run`` uses with 1 and with 15 units (fp32), and the module path (autograd
over the model itself, what BatchNorm/dropout models use).

    git worktree add /tmp/before <commit>
    python benchmarks/refactor_step_ab.py --before-src /tmp/before/src --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from common import command_line, machine_info, write_results
from lth import models as new_models
from lth.config import TrainConfig
from lth.data import Splits, load_splits
from lth.training import UnitInput, train, train_many
from train_step import plain_loop, sparse_lenet


def load_before(src: Path):
    """The package at ``src/lth`` imported as ``lth_before``."""
    tmp = Path(tempfile.mkdtemp(prefix="lth_before_"))
    shutil.copytree(src / "lth", tmp / "lth_before")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("lth_before")


def small_eval(s: Splits) -> Splits:
    return Splits(s.name, s.train_x, s.train_y, s.val_x[:500], s.val_y[:500], s.test_x[:500], s.test_y[:500],
                  s.num_classes, s.input_shape)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before-src", type=Path, required=True, help="a checkout's src/ holding the old lth/")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--levels", default="0,2,7,15", help="IMP levels whose density to time (0 = dense)")
    ap.add_argument("--units", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before(args.before_src)
    old_batched = importlib.import_module("lth_before.batched")
    old_train = importlib.import_module("lth_before.train")
    splits = small_eval(load_splits("mnist", args.data_dir, val_size=5000, split_seed=0, download=False))
    cfg = TrainConfig(iterations=args.iterations, batch_size=60, optimizer="adam", lr=1.2e-3,
                      eval_every=args.iterations)

    def units(n: int, level: int, cls) -> list:
        out = []
        for u in range(n):
            m, mk = sparse_lenet(100 + u, level)
            out.append(cls({k: v.detach().clone() for k, v in m.state_dict().items()}, mk, u))
        return out

    old_models = importlib.import_module("lth_before.models")

    def lenet(models):
        """Each version builds its own template: engines choose by the model's (package's) class."""
        return models.build_model("lenet300", (1, 28, 28), 10)

    def arms(level: int) -> dict:
        """arm -> (before, after): each a setup (untimed) returning the call to time."""
        n = args.units

        def engine(pkg_train_many, unit_cls, models, k):
            return lambda: partial(pkg_train_many, lenet(models), units(k, level, unit_cls), splits, cfg)

        def module(pkg_train, **kw):
            return lambda: partial(pkg_train, *sparse_lenet(7, level), splits, cfg, data_seed=0, **kw)

        return {
            "engine x1": (engine(old_batched.train_many, old_batched.UnitInput, old_models, 1),
                          engine(train_many, UnitInput, new_models, 1)),
            f"engine x{n} (per net)": (engine(old_batched.train_many, old_batched.UnitInput, old_models, n),
                                       engine(train_many, UnitInput, new_models, n)),
            "module x1": (module(old_train.train), module(train, engine="module")),
        }

    rows, raw = [], {}
    for level in [int(x) for x in args.levels.split(",")]:
        level_arms = arms(level)
        times: dict[str, dict[str, list[float]]] = {a: {"before": [], "after": []} for a in level_arms}
        # One arm at a time, its two sides alternating: another arm's memory traffic in between
        # would land on one side more than the other.
        for arm, (old, new) in level_arms.items():
            per_net = args.units if arm.startswith(f"engine x{args.units}") else 1
            old()()  # warm-up: first calls pay for allocations and kernel choice
            new()()
            for rep in range(args.repeats):
                order = [("before", old), ("after", new)] if rep % 2 == 0 else [("after", new), ("before", old)]
                for side, setup in order:
                    call = setup()
                    t0 = time.perf_counter()
                    call()
                    times[arm][side].append((time.perf_counter() - t0) / args.iterations * 1e3 / per_net)
        plain = []
        for _ in range(args.repeats):
            m, mk = sparse_lenet(7, level)
            plain.append(plain_loop(m, mk, splits, args.iterations, 60, 1.2e-3) * 1e3)
        p = statistics.median(plain)
        density = sum(int(v.sum()) for v in sparse_lenet(7, level)[1].values()) / 266_200
        for arm, sides in times.items():
            b, a = statistics.median(sides["before"]), statistics.median(sides["after"])
            rows.append((f"{100 * density:.1f}%", arm, p, b, a))
        raw[str(level)] = {"plain_ms": plain, **times}

    md = ["# One training iteration before vs after a code change (interleaved A/B)", "",
          f"- command: `{command_line('refactor_step_ab.py', argv)}`",
          f"- machine: {machine_info()}",
          f"- before: `{args.before_src}`; after: this checkout",
          f"- median of {args.repeats} alternating timings of {args.iterations} iterations each (ms per iteration "
          "per network, two 500-image evaluations included); speed-up = plain loop / arm", "",
          "| weights left | arm | plain ms/it | before ms/it (speed-up) | after ms/it (speed-up) | after / before |",
          "|---|---|---|---|---|---|"]
    for d, arm, p, b, a in rows:
        md.append(f"| {d} | {arm} | {p:.3f} | {b:.3f} ({p / b:.2f}x) | {a:.3f} ({p / a:.2f}x) | {a / b:.3f} |")
    write_results(args.results, "refactor_step_ab", {"rows": rows, "raw": raw}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
