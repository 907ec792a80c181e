"""What the run directory's integrity checks cost, on a synthetic run of LeNet-300-100-sized units.

Builds a run directory through the store exactly as the driver writes it (per trial a theta0, per
level a mask; per unit 500 evaluations in metrics.jsonl, the trained weights, result.json with
its checksums) and times, in one process:

* ``finish_unit``: writing one unit's files with their SHA-256 (what every finished unit pays),
  against the same files written by plain ``torch.save`` into the same directory (no atomic
  rename, no fsync, no digest): the whole price of crash safety plus integrity;
* the first full check of the finished run by a fresh reader (``lth verify``/``lth report``/a
  rerun's start: every file hashed once), and a second check by the same reader (stat-cached);
* the run directory's size, for the MB/s of the cold check.

    python benchmarks/integrity_overhead.py --trials 5 --levels 20
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import command_line, machine_info, write_results
from lth.config import ExperimentConfig, get_preset
from lth.experiment import audit_run
from lth.models import build_model, prunable_tensors
from lth.pruning import full_mask
from lth.store import RunStore, UnitRecord

BRANCHES = ("ticket", "reinit", "random_mask")


def metrics(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(n, generator=g).tolist()
    return [{"iteration": 100 * i, "train_loss": v[i], "val_loss": 1 - v[i] / 2, "val_accuracy": v[i],
             "test_loss": 1 - v[i] / 3, "test_accuracy": v[i], "lr": 0.0012} for i in range(n)]


def build(path: Path, trials: int, levels: int, evals: int) -> tuple[RunStore, list[float]]:
    d = get_preset("lenet300-mnist").to_dict()
    d["lottery"].update(trials=trials, levels=levels)
    cfg = ExperimentConfig.from_dict(d)
    store = RunStore.open(cfg, run_dir=path, lock=False)
    model = build_model("lenet300", (1, 28, 28), 10)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mask = full_mask(prunable_tensors(model))
    finish_times = []
    for t in range(trials):
        store.save_theta0(t, state)
        for lv in range(levels + 1):
            inputs = [store.theta0_path(t)]
            if lv:
                store.save_level_mask(t, lv, mask)
                inputs.append(store.level_mask_path(t, lv))
            for b in (("ticket",) if lv == 0 else BRANCHES):
                m = metrics(evals, t * 1000 + lv)
                rec = UnitRecord.from_metrics(t, lv, b, 0.8 ** lv, m, 1.0)
                t0 = time.perf_counter()
                store.finish_unit(rec, metrics=m, final_state=state, inputs=inputs,
                                  own_mask=mask if b == "random_mask" else None)
                finish_times.append(time.perf_counter() - t0)
    return store, finish_times


def plain_write(d: Path, evals: int, state: dict, repeats: int) -> list[float]:
    import json

    out = []
    d.mkdir(parents=True, exist_ok=True)
    for i in range(repeats):
        m = metrics(evals, i)
        t0 = time.perf_counter()
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in m))
        torch.save(state, d / "final.pt")
        (d / "result.json").write_text(json.dumps({"i": i}))
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--evals", type=int, default=500, help="evaluations per unit (50K iterations / 100)")
    ap.add_argument("--results-dir", default="benchmarks/results")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lth-integrity-"))
    try:
        t0 = time.perf_counter()
        store, finish = build(tmp / "run", args.trials, args.levels, args.evals)
        build_s = time.perf_counter() - t0
        n_units = len(finish)
        state = build_model("lenet300", (1, 28, 28), 10).state_dict()
        plain = plain_write(tmp / "plain", args.evals, state, 30)
        size = sum(p.stat().st_size for p in (tmp / "run").rglob("*") if p.is_file())

        t0 = time.perf_counter()
        audit = audit_run(tmp / "run")  # a fresh reader: hashes every file
        cold = time.perf_counter() - t0
        assert not audit.damaged and len(audit.units_intact) == n_units and not audit.units_unfinished
        fresh = RunStore(tmp / "run")
        t0 = time.perf_counter()
        recs = fresh.records()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert fresh.records() == recs
        second = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med_finish, med_plain = statistics.median(finish), statistics.median(plain)
    data = {
        "command": command_line("integrity_overhead.py", argv), "machine": machine_info(),
        "units": n_units, "run_dir_bytes": size, "build_seconds": build_s,
        "finish_unit_median_s": med_finish, "plain_write_median_s": med_plain,
        "verify_cold_s": cold, "records_first_s": first, "records_cached_s": second,
    }
    md = (
        "# Integrity overhead\n\n"
        f"`{data['command']}`\n\n{data['machine']}\n\n"
        f"Synthetic run: {n_units} LeNet-300-100 units ({args.trials} trials x (1 + {args.levels} levels x 3 "
        f"branches)), {args.evals} evaluations each, {size / 1e6:.0f} MB.\n\n"
        "| what | time |\n|---|---|\n"
        f"| finish one unit (atomic writes, fsync, SHA-256, result.json, summary), median "
        f"| {1e3 * med_finish:.1f} ms |\n"
        f"| the same files by plain writes (no fsync, no digest), median | {1e3 * med_plain:.1f} ms |\n"
        f"| `lth verify` of the whole run, fresh process state (every file hashed) | {cold:.2f} s "
        f"({size / 1e6 / cold:.0f} MB/s) |\n"
        f"| `RunStore.records()` by a fresh reader | {first:.2f} s |\n"
        f"| `RunStore.records()` again, same reader (stat-cached) | {1e3 * second:.0f} ms |\n"
    )
    write_results(args.results_dir, "integrity_overhead", data, md)


if __name__ == "__main__":
    main()
