"""Is a refactoring bitwise neutral? The same short IMP experiments run by two versions of lth,
compared file by file.

Each side is a Python executable and the source folder it imports lth from (put first on
``PYTHONPATH``). Every variant runs as ``<python> -m lth run ... --run-dir <out>/<side>/<variant>``:

* ``default``: ``--preset lenet300-mnist --data-dir DIR --trials 2 --levels 4 --iterations 2000
  --branches ticket,reinit,random_mask --threads 1``;
* ``serial``: the same with ``--parallel-units 1`` (one unit at a time);
* ``rewind_oneshot``: the same with ``--rewind-iteration 500 --one-shot``;
* ``global``: the same with ``--set prune.strategy=global --set prune.prune_output=false``;
* ``deep``: ``--preset lenet300-mnist --trials 2 --levels 15 --iterations 300 --eval-every 100
  --branches ticket,random_mask --threads 1`` (down to 3.6% of weights: the sparse kernels);
* ``digits``: ``--preset digits-quick --trials 2 --levels 8 --iterations 2000 --branches ticket,reinit
  --threads 1`` (fp32);
* ``digits_bf16``: the same with ``--precision bf16 --test-eval best``.

Then, per variant: ``summary.json``'s records must be equal apart from ``train_seconds``, every
``.pt`` file must hold the same keys and bitwise the same tensors of the same dtypes, and every
``metrics.jsonl`` must be byte for byte the same (a file on one side only is a difference).
Writes ``refactor_equivalence.{json,md}`` (machine, commands, per-variant unit and file counts,
identical yes/no) and exits 1 on any difference.

Resumable: a variant whose run finished (``<out>/<side>/<variant>.done``) is not run again; an
interrupted one is rerun with the same command, which lth resumes. Runs made elsewhere are reused
with ``--before-runs DIR`` / ``--after-runs DIR`` (``DIR/<variant>`` per variant); nothing is run
for that side.

    python benchmarks/refactor_equivalence.py --before .venv/bin/python --before-path ../old/src \\
        --data-dir ../shared/datasets
    python benchmarks/refactor_equivalence.py --before-runs bench_out/equiv_base --variants digits \\
        --results /tmp/equiv
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from common import command_line, machine_info, write_results
from lth.store import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("default", "serial", "rewind_oneshot", "global", "deep", "digits", "digits_bf16")
IGNORED = {"train_seconds"}  # the only summary field allowed to differ
MAX_LISTED = 20  # differences listed per variant


def variant_args(name: str, args: argparse.Namespace) -> list[str]:
    """The ``lth run`` arguments of one variant (without ``--run-dir``)."""
    if name.startswith("digits"):
        # The sizes are given explicitly, so a change of the demo preset's defaults does not change
        # what is compared (levels, trials and branches are not in the run's identity hash).
        base = ["--preset", "digits-quick", "--trials", str(args.trials or 2), "--levels",
                str(args.levels if args.levels is not None else 8), "--iterations", str(args.iterations or 2000),
                "--branches", "ticket,reinit", "--threads", "1"]
        return base + (["--precision", "bf16", "--test-eval", "best"] if name == "digits_bf16" else [])
    if name == "deep":
        # Down to 3.6% of weights in few iterations: the levels below 25% take the MLP engine's
        # compact storage and CSR kernels (forward, SDDMM gradient, evaluation), one unit and groups.
        return ["--preset", "lenet300-mnist", "--data-dir", str(args.data_dir), "--trials", "2", "--levels", "15",
                "--iterations", "300", "--eval-every", "100", "--branches", "ticket,random_mask", "--threads", "1"]
    lenet = ["--preset", "lenet300-mnist", "--data-dir", str(args.data_dir),
             "--trials", str(args.trials or 2), "--levels", str(args.levels if args.levels is not None else 4),
             "--iterations", str(args.iterations or 2000), "--branches", "ticket,reinit,random_mask",
             "--threads", "1"]
    extra = {
        "default": [],
        "serial": ["--parallel-units", "1"],
        "rewind_oneshot": ["--rewind-iteration", str(args.rewind_iteration), "--one-shot"],
        "global": ["--set", "prune.strategy=global", "--set", "prune.prune_output=false"],
    }[name]
    return lenet + extra


class Side:
    """One version of lth: how to run it, or where its finished runs already are."""

    def __init__(self, name: str, python: str | None, path: str | None, runs: Path | None, out: Path):
        self.name = name
        self.python = os.path.abspath(python) if python and os.sep in python else python  # no symlinks resolved
        self.path = str(Path(path).resolve()) if path else None
        self.reused = runs
        self.root = runs if runs is not None else out / name

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.path:
            env["PYTHONPATH"] = self.path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def command(self, variant: str, args: argparse.Namespace) -> list[str]:
        assert self.python is not None
        return [self.python, "-m", "lth", "run", *variant_args(variant, args),
                "--run-dir", str(self.root / variant)]

    def shown(self, cmd: list[str]) -> str:
        prefix = f"PYTHONPATH={shlex.quote(self.path)} " if self.path else ""
        return prefix + shlex.join(cmd)

    def describe(self) -> dict[str, Any]:
        """What this side is: the lth it imports (file and git state of its folder), or the
        reused run directories."""
        if self.reused is not None:
            return {"reused_runs": str(self.reused)}
        out: dict[str, Any] = {"python": self.python, "pythonpath": self.path}
        probe = subprocess.run([self.python, "-c", "import lth; print(lth.__file__)"], env=self.env(),  # type: ignore[list-item]
                               capture_output=True, text=True)
        if probe.returncode != 0:
            raise SystemExit(f"{self.name}: {self.python} cannot import lth:\n{probe.stderr}")
        out["lth"] = probe.stdout.strip()
        src = Path(out["lth"]).parent
        git = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"], capture_output=True,
                             text=True)
        out["git"] = git.stdout.strip() if git.returncode == 0 else None
        return out

    def run(self, variant: str, args: argparse.Namespace) -> dict[str, Any]:
        """Run one variant unless it finished before (or this side reuses runs)."""
        run_dir = self.root / variant
        if self.reused is not None:
            if not (run_dir / "summary.json").exists():
                raise SystemExit(f"{self.name}: {run_dir} holds no finished run (no summary.json)")
            return {"run_dir": str(run_dir), "command": None, "reused": True}
        cmd = self.command(variant, args)
        done = self.root / f"{variant}.done"
        if done.exists():
            prev = read_json(done)
            if prev.get("command") == self.shown(cmd):
                print(f"[{self.name}] {variant}: finished before, skipped", flush=True)
                return prev
            raise SystemExit(f"{done} records another command:\n  {prev.get('command')}\nnot\n  {self.shown(cmd)}\n"
                             f"choose another --out or remove {run_dir} and {done}")
        self.root.mkdir(parents=True, exist_ok=True)
        print(f"[{self.name}] {variant}: {self.shown(cmd)}", flush=True)
        t0 = time.perf_counter()
        with open(self.root / f"{variant}.log", "ab") as log:
            rc = subprocess.run(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"[{self.name}] {variant} failed (exit {rc}); see {self.root / f'{variant}.log'}")
        info = {"run_dir": str(run_dir), "command": self.shown(cmd), "reused": False, "seconds": round(seconds, 1)}
        atomic_write_json(done, info)
        return info


# --------------------------------------------------------------------------- comparison


def same_object(a: Any, b: Any) -> bool:
    """Deep equality where tensors must have the same dtype, shape and bytes (NaNs included)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape or a.layout != b.layout:
            return False
        if a.layout != torch.strided:
            return same_object(a.to_dense(), b.to_dense())
        return torch.equal(a.detach().reshape(-1).contiguous().view(torch.uint8),
                           b.detach().reshape(-1).contiguous().view(torch.uint8))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return set(a) == set(b) and all(same_object(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_object(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a.hex() == b.hex() if a == a else b != b  # bitwise, NaN equal to NaN
    return a == b


def stripped(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in records]


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    """Differences between two run directories of the same experiment."""
    diffs: list[str] = []
    sa, sb = read_json(a / "summary.json"), read_json(b / "summary.json")
    if stripped(sa) != stripped(sb):
        if len(sa) != len(sb):
            diffs.append(f"summary.json: {len(sa)} vs {len(sb)} records")
        for ra, rb in zip(stripped(sa), stripped(sb)):
            if ra != rb:
                keys = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
                diffs.append(f"summary.json: trial {ra.get('trial')} level {ra.get('level')} "
                             f"{ra.get('branch')}: {', '.join(keys)}")

    def files(root: Path, suffix: str) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob(f"*{suffix}") if p.is_file()}

    counts = {}
    for suffix in (".pt", "metrics.jsonl"):
        fa, fb = files(a, suffix), files(b, suffix)
        counts[suffix] = len(fa | fb)
        diffs += [f"only in before: {p}" for p in sorted(fa - fb)]
        diffs += [f"only in after: {p}" for p in sorted(fb - fa)]
        for rel in sorted(fa & fb):
            if suffix == ".pt":
                same = same_object(torch.load(a / rel, weights_only=True), torch.load(b / rel, weights_only=True))
            else:
                same = (a / rel).read_bytes() == (b / rel).read_bytes()
            if not same:
                diffs.append(f"differs: {rel}")
    return {"units": [len(sa), len(sb)], "pt_files": counts[".pt"], "metrics_files": counts["metrics.jsonl"],
            "identical": not diffs, "differences": len(diffs), "listed": diffs[:MAX_LISTED]}


# --------------------------------------------------------------------------- report


def markdown(res: dict, cmd: str) -> str:
    def side(s: dict) -> str:
        if "reused_runs" in s:
            return f"finished runs reused from `{s['reused_runs']}`"
        git = f"git {s['git']}" if s["git"] else "not in a git checkout"
        return f"`{s['python']}` with PYTHONPATH `{s['pythonpath']}`, imports `{s['lth']}` ({git})"

    L = ["# Refactoring equivalence: the same IMP runs by two versions of lth", "",
         f"- command: `{cmd}`", f"- machine: {res['machine']}",
         f"- before: {side(res['before'])}", f"- after: {side(res['after'])}",
         "- identical: summary.json records equal apart from `train_seconds`; every `.pt` the same keys, dtypes "
         "and bytes; every `metrics.jsonl` byte for byte", "",
         "| variant | units (before / after) | .pt files | metrics.jsonl files | identical |", "|---|---|---|---|---|"]
    for name, r in res["variants"].items():
        L.append(f"| {name} | {r['units'][0]} / {r['units'][1]} | {r['pt_files']} | {r['metrics_files']} "
                 f"| {'yes' if r['identical'] else 'NO'} |")
    L += ["", "Commands:", ""]
    for name, r in res["variants"].items():
        for s in ("before", "after"):
            run = r["runs"][s]
            L.append(f"- {name}, {s}: " + (f"`{run['command']}`" if run["command"] else f"reused `{run['run_dir']}`"))
    for name, r in res["variants"].items():
        if not r["identical"]:
            L += ["", f"## {name}: {r['differences']} difference(s)", ""] + [f"- {d}" for d in r["listed"]]
            if r["differences"] > len(r["listed"]):
                L.append(f"- ... and {r['differences'] - len(r['listed'])} more")
    L += ["", f"**All identical: {'yes' if res['identical'] else 'NO'}**", ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="Python executable of the version before (required unless --before-runs)")
    ap.add_argument("--before-path", help="folder put first on PYTHONPATH for --before (its src/)")
    ap.add_argument("--before-runs", type=Path, help="reuse finished before-side runs at DIR/<variant>")
    ap.add_argument("--after", default=sys.executable, help="Python executable of the version after "
                    "(default: this one)")
    ap.add_argument("--after-path", default=str(ROOT / "src"),
                    help="folder put first on PYTHONPATH for --after (default: this checkout's src/)")
    ap.add_argument("--after-runs", type=Path, help="reuse finished after-side runs at DIR/<variant>")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"),
                    help="folder holding mnist/ (the LeNet variants)")
    ap.add_argument("--trials", type=int, default=None, help="trials of every variant (default: 2)")
    ap.add_argument("--levels", type=int, default=None,
                    help="levels of every variant (default: 4 for LeNet, 8 for digits)")
    ap.add_argument("--iterations", type=int, default=None,
                    help="iterations of every variant (default: 2000)")
    ap.add_argument("--rewind-iteration", type=int, default=500, help="of the rewind_oneshot variant")
    ap.add_argument("--out", type=Path, default=Path("bench_out/refactor_equivalence"),
                    help="run directories: OUT/before/<variant>, OUT/after/<variant>")
    ap.add_argument("--results", default="benchmarks/results",
                    help="folder for refactor_equivalence.{md,json}")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        ap.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.before is None and args.before_runs is None:
        ap.error("give --before PYTHON (with --before-path SRC) or --before-runs DIR")
    sides = {
        "before": Side("before", args.before, args.before_path, args.before_runs, args.out),
        "after": Side("after", args.after, args.after_path, args.after_runs, args.out),
    }
    described = {k: s.describe() for k, s in sides.items()}
    if described["before"].get("lth") and described["before"].get("lth") == described["after"].get("lth"):
        raise SystemExit(f"both sides import the same lth ({described['after']['lth']}): give --before-path")
    rows: dict[str, dict] = {}
    for v in variants:
        runs = {k: s.run(v, args) for k, s in sides.items()}
        row = compare_runs(Path(runs["before"]["run_dir"]), Path(runs["after"]["run_dir"]))
        rows[v] = {**row, "runs": runs}
        print(f"{v}: units {row['units'][0]} / {row['units'][1]}, {row['pt_files']} .pt and {row['metrics_files']} "
              f"metrics.jsonl files, identical: {'yes' if row['identical'] else 'NO'}", flush=True)
        for d in row["listed"]:
            print(f"  {d}", flush=True)
    res = {"machine": machine_info(), "before": described["before"], "after": described["after"],
           "variants": rows, "identical": all(r["identical"] for r in rows.values())}
    write_results(args.results, "refactor_equivalence", res,
                  markdown(res, command_line("refactor_equivalence.py", argv)))
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
