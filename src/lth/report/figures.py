"""The paper's figures from a run directory (matplotlib, an optional dependency)."""

from __future__ import annotations

import errno
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from .tables import ReportError, aggregate, branch_rank, load_records

BRANCH_STYLE = {"ticket": ("tab:blue", "o"), "reinit": ("tab:orange", "s"),
                "random_mask": ("tab:green", "^"), "oneshot": ("tab:red", "v"),
                "finetune": ("tab:purple", "D"), "lr_rewind": ("tab:brown", "P")}

#: Formats named first in messages; matplotlib writes several more (:func:`figure_formats`).
COMMON_FORMATS = ("png", "pdf", "svg")


def printable(text: str | os.PathLike[str]) -> str:
    """A path (or text) that any UTF-8 writer accepts: bytes of a file name that are not valid
    UTF-8 (held by Python as lone surrogates) show as ``\\xNN`` escapes."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def figure_formats() -> list[str]:
    """The file suffixes matplotlib can write, png, pdf and svg first."""
    from matplotlib.backend_bases import FigureCanvasBase

    rest = sorted(set(FigureCanvasBase.get_supported_filetypes()) - set(COMMON_FORMATS))
    return [*COMMON_FORMATS, *rest]


def _check_out(out: Path) -> str:
    """The format ``out`` asks for; :class:`ReportError` for a suffix matplotlib cannot write, a
    folder, or a file where a folder of the path must be (missing folders are created later)."""
    if out.is_dir():
        raise ReportError(f"--out {out} is a folder; give a file name, e.g. {out / 'figure.png'}")
    formats = figure_formats()
    fmt = out.suffix[1:].lower()
    if fmt not in formats:
        what = f"has the suffix .{fmt}, which matplotlib cannot write" if fmt else "has no suffix"
        raise ReportError(f"--out {out} {what}; end the name with .png, .pdf or .svg (or one of "
                          f"{', '.join('.' + f for f in formats[len(COMMON_FORMATS):])})")
    for folder in out.parents:
        if folder.is_dir():
            break
        if folder.exists() or folder.is_symlink():
            raise ReportError(f"{folder} is a file, not a folder; choose another --out")
    return fmt


def pyplot(without: str = ""):
    """matplotlib.pyplot on the Agg backend; :class:`ReportError` naming the install (and
    ``without``, how to go on without figures) when matplotlib, an optional dependency, is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ReportError(f"figures need matplotlib: pip install 'lth[plot]'{without}") from e
    return plt


def save_figure(fig, out_base: Path, formats: Sequence[str], dpi: int = 100) -> list[Path]:
    """``fig`` as ``out_base.<fmt>`` for each format, each through an atomic rename, then closed.
    SVGs keep their text as text (searchable, editable, smaller) and carry no date, so the same
    numbers give the same file."""
    plt = pyplot()
    paths = []
    try:
        fig.tight_layout()
        for fmt in formats:
            buf = io.BytesIO()
            with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lth"}), warnings.catch_warnings():
                # matplotlib warns when placing a legend took it over a second: a busy machine, not a fault
                warnings.filterwarnings("ignore", message="Creating legend with loc=", category=UserWarning)
                fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
            out = out_base.with_name(f"{out_base.name}.{fmt}")
            _write(out, buf.getvalue())
            paths.append(out)
    finally:
        plt.close(fig)
    return paths


def plot(run_dir: Path, out: Path, title: str | None = None) -> Path:
    """The paper's Fig. 3/4 view: early-stop iteration and test accuracy at early stop against
    the percent of weights remaining (log scale, dense on the left), mean with min/max bars.

    ``out``'s suffix picks the format (png, pdf, svg or any other that matplotlib writes); a
    suffix it cannot write, or an ``out`` that cannot become a file, is a :class:`ReportError`
    before the run is read. Missing folders of ``out`` are created; the file appears atomically.
    """
    plt = pyplot()
    out = Path(out)
    fmt = _check_out(out)
    rows = aggregate(load_records(run_dir))
    dense = [r for r in rows if r.level == 0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for branch in sorted({r.branch for r in rows if r.level > 0}, key=branch_rank):
        rs = dense + [r for r in rows if r.branch == branch]
        x = [100 * r.weights_remaining for r in rs]
        color, marker = BRANCH_STYLE.get(branch, ("gray", "x"))
        for ax, key in zip(axes, ("early_stop_iteration", "early_stop_test_accuracy")):
            stats = [getattr(r, key) for r in rs]
            y = [s.mean for s in stats]
            err = [[s.mean - s.lo for s in stats], [s.hi - s.mean for s in stats]]
            ax.errorbar(x, y, yerr=err, color=color, marker=marker, ms=4, capsize=2, label=branch)
    xs = sorted({100 * r.weights_remaining for r in rows}, reverse=True)
    ticks = xs[:: max(1, len(xs) // 8)]
    for ax, label in zip(axes, ("early-stop iteration (min. validation loss)", "test accuracy at early stop (%)")):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("percent of weights remaining")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    # a run directory's name is shown as it is; a title of the caller's may use matplotlib's $math$
    fig.suptitle(printable(title or Path(run_dir).name), parse_math=title is not None)
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format=fmt, dpi=120)
    except (ValueError, RuntimeError, OSError) as e:  # bad $math$ in a title, pgf without LaTeX, ...
        why = (str(e).strip().splitlines() or [type(e).__name__])[-1]  # the math parser's reason is last
        fix = ("write the $...$ of --title as matplotlib math, or leave out the $ signs"
               if isinstance(e, ValueError) and title and "$" in title else "choose another --out, e.g. a .png")
        raise ReportError(f"matplotlib cannot draw the figure as .{fmt} ({why}); {fix}") from None
    finally:
        plt.close(fig)
    _write(out, buf.getvalue())
    return out


def _write(out: Path, data: bytes) -> None:
    """``data`` into ``out`` through ``.<name>.<pid>.tmp`` and a rename, so a reader never sees a
    torn figure; missing folders are created."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ReportError(f"no space left on the device while writing {out}; free some space, or "
                              "choose another --out") from None
        raise ReportError(f"cannot write {out} ({e.strerror or e}); make its folder writable, or choose "
                          "another --out") from None


def plot_instability(results, out_base: Path, title: str | None = None) -> list[Path]:
    """Barrier against the rewind iteration k (Frankle et al. 2020, Fig. 3/5 style): one line for
    the train and one for the test barrier per level (the mean over trials where there are
    several), with the paper's 2-point stability threshold. The x axis is symmetric-log, linear
    below the smallest k > 0, so k = 0 sits at its left end. Writes ``out_base`` + ``.png`` and
    ``.svg`` atomically; :class:`ReportError` without matplotlib (``pip install 'lth[plot]'``)."""
    plt = pyplot()
    if not results:
        raise ReportError("no instability results to plot")
    from .instability import STABLE_BELOW_PCT

    levels = sorted({r.level for r in results})
    ks = sorted({r.rewind_iteration for r in results})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, level in enumerate(levels):
        rs = [r for r in results if r.level == level]
        xs = sorted({r.rewind_iteration for r in rs})
        density = 100 * rs[0].weights_remaining
        color = colors[i % len(colors)]
        for key, style, what in (("test_barrier", "-", "test"), ("train_barrier", "--", "train")):
            ys = [100 * sum(getattr(r, key) for r in rs if r.rewind_iteration == k)
                  / sum(1 for r in rs if r.rewind_iteration == k) for k in xs]
            ax.plot(xs, ys, style, color=color, marker="o" if what == "test" else "s", ms=4,
                    label=f"{what}, level {level} ({density:.3g}% of weights)")
    ax.axhline(STABLE_BELOW_PCT, color="gray", lw=0.8, ls=":", label=f"{STABLE_BELOW_PCT:g} points (stable below)")
    positive = [k for k in ks if k > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1, linscale=0.5)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.set_xlabel("rewind iteration k")
    ax.set_ylabel("error barrier (percentage points)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    n = sorted({r.trial for r in results})
    ax.set_title(printable(title or "instability"), fontsize=10)
    if len(n) > 1:
        fig.text(0.99, 0.01, f"mean of {len(n)} trials", ha="right", fontsize=7)
    return save_figure(fig, Path(out_base), ("png", "svg"), dpi=120)
