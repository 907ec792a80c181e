"""Compare a run of the LeNet-300-100 figure (the paper's full protocol) with the recorded one
(benchmarks/results/lenet_figure/lenet_mnist.json), unit by unit and at the paper's reference
points (docs/RESULTS.md, "Spread across runs").

    python benchmarks/runs/lenet_figure_compare.py RUN_DIR [--reference JSON] [--results DIR]

Reads the run's units through lth's own store (damaged units are left out and named); writes
``compare.md`` and ``compare.json`` into ``--results`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: lenet_mnist, common

from lenet_mnist import paper_comparison  # noqa: E402
from lth.report import load_records  # noqa: E402

KEYS = ("early_stop_iteration", "early_stop_test_accuracy", "final_test_accuracy", "min_val_loss")


def rows(table: str) -> dict[str, tuple[str, str]]:
    """A paper_comparison table as {reference point: (paper, measured)}."""
    out = {}
    for line in table.splitlines()[2:]:
        name, paper, measured = (c.strip() for c in line.strip("|").split("|"))
        out[name] = (paper, measured)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--reference", type=Path, default=Path("benchmarks/results/lenet_figure/lenet_mnist.json"))
    ap.add_argument("--results", type=Path, help="folder for compare.md and compare.json")
    args = ap.parse_args(argv)

    run = [asdict(r) for r in load_records(args.run_dir)]
    ref = json.loads(args.reference.read_text())["records"]
    key = lambda r: (r["trial"], r["level"], r["branch"])  # noqa: E731
    ref_by = {key(r): r for r in ref}
    shared = [r for r in run if key(r) in ref_by]
    same = [r for r in shared if all(r[k] == ref_by[key(r)][k] for k in KEYS)]
    diffs = [100 * (r["early_stop_test_accuracy"] - ref_by[key(r)]["early_stop_test_accuracy"]) for r in shared]
    levels = max(r["level"] for r in run)
    # the recorded run up to this run's deepest level, so a run still in progress compares like with like
    ref_upto = [r for r in ref if r["level"] <= levels]
    mine, theirs = rows(paper_comparison(run, levels)), rows(paper_comparison(ref_upto, levels))
    machines = sorted({r.get("machine", "?") for r in run})
    points = {n: {"paper": (mine.get(n) or theirs[n])[0], "this_run": mine.get(n, ("", None))[1],
                  "recorded": theirs.get(n, ("", None))[1]} for n in dict.fromkeys([*theirs, *mine])}

    lines = [
        f"# {args.run_dir.name} against the recorded figure run",
        "",
        f"- this run: `{args.run_dir}`, {len(run)} units, levels 0-{levels}; machine: {'; '.join(machines)}",
        f"- recorded run: `{args.reference}`, {len(ref)} units",
        f"- units in both: {len(shared)}; identical in {', '.join(KEYS)}: {len(same)}",
        f"- early-stop test accuracy, this run minus recorded, unit by unit: mean {sum(diffs) / len(diffs):+.2f}, "
        f"from {min(diffs):+.2f} to {max(diffs):+.2f} points" if diffs else "- no unit in both",
        f"- units' train_seconds summed: {sum(r['train_seconds'] for r in run) / 60:.1f} min",
        "",
        "| reference point | paper | this run | recorded run |",
        "|---|---|---|---|",
    ]
    for name, p in points.items():
        lines.append(f"| {name} | {p['paper']} | {p['this_run'] or '-'} | {p['recorded'] or '-'} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "compare.md").write_text(text)
        summary = {"run_dir": str(args.run_dir), "units": len(run), "units_in_both": len(shared),
                   "identical_units": len(same), "early_stop_test_accuracy_diff_points": diffs,
                   "reference_points": points}
        (args.results / "compare.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
