"""``lth report``'s files: figures (PNG and SVG), tables (markdown and CSV), the verdict, and one
self-contained ``report.html`` (figures embedded as data URIs, no script, no external resource:
it opens offline and can be mailed as one file).

Everything is read from the run directories (read-only) and written into one output folder,
each file through an atomic rename, so a reader never sees a torn file and a failed report
leaves the previous one whole.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .figures import _write, printable
from .paper import FORMATS, _pyplot, curves_figure, summary_figures
from .runs import RunData
from .tables import HEADER, markdown_table, table_rows
from .verdict import Verdict, verdict


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote, by kind."""

    out_dir: Path
    html: Path | None = None
    figures: dict[str, list[Path]] = field(default_factory=dict)
    tables: list[Path] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)


# ---------------------------------------------------------------------- tables
ROW_CSV = ("run", "level", "weights_remaining_percent", "branch", "trials", "failed",
           "early_stop_iteration_mean", "early_stop_iteration_min", "early_stop_iteration_max",
           "early_stop_test_accuracy_mean", "early_stop_test_accuracy_min", "early_stop_test_accuracy_max",
           "final_test_accuracy_mean", "final_test_accuracy_min", "final_test_accuracy_max")
UNIT_COLUMNS = ("run", "trial", "level", "branch", "weights %", "status", "start it.", "early-stop it.",
                "test acc @ early stop %", "final test acc %", "train seconds", "machine", "software")


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def rows_csv(runs: Sequence[RunData]) -> str:
    """Every run's aggregated rows, one CSV line per (run, level, branch); accuracies in percent."""
    out = []
    for run in runs:
        for r in run.rows:
            s = (r.early_stop_iteration, r.early_stop_test_accuracy, r.final_test_accuracy)
            out.append([run.name, r.level, f"{100 * r.weights_remaining:.4f}", r.branch, r.trials, r.failed,
                        *(f"{v:.6g}" for st in s for v in (st.mean, st.lo, st.hi))])
    return _csv(ROW_CSV, out)


def unit_rows(runs: Sequence[RunData]) -> list[tuple[str, ...]]:
    """One row per finished unit: its numbers, wall time, machine and software."""
    out = []
    for run in runs:
        for r in run.records:
            def num(v, fmt):
                return "" if v is None else format(v, fmt)
            out.append((run.name, str(r.trial), str(r.level), r.branch, f"{100 * r.weights_remaining:.2f}", r.status,
                        num(r.start_iteration, "d"), num(r.early_stop_iteration, "d"),
                        num(None if r.early_stop_test_accuracy is None else 100 * r.early_stop_test_accuracy, ".2f"),
                        num(None if r.final_test_accuracy is None else 100 * r.final_test_accuracy, ".2f"),
                        num(r.train_seconds, ".1f"), r.machine or "not recorded", r.software or "not recorded"))
    return out


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def results_markdown(runs: Sequence[RunData]) -> str:
    if len(runs) == 1:
        return markdown_table(runs[0].rows)
    return "\n".join(f"### {run.name}\n\n{markdown_table(run.rows)}" for run in runs)


def wall_time(run: RunData) -> float:
    """Seconds of training summed over the run's finished units (their ``train_seconds``)."""
    return sum(r.train_seconds or 0.0 for r in run.records)


# ---------------------------------------------------------------------- html
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.verdict { background: #f3f7ff; border-left: 4px solid #3a6fd8; padding: .6em 1em; }
.verdict.none { background: #fff6f0; border-left-color: #d8733a; }
.verdict p { margin: .3em 0; } .verdict p.detail { margin-left: 1.2em; font-size: .95em; }
table { border-collapse: collapse; font-size: .86em; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.figs { display: flex; flex-wrap: wrap; gap: 0 1.5em; }
figure { margin: 1em 0; } figure.half { max-width: 560px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .82em; }
.meta { color: #555; font-size: .92em; }
"""


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = ()) -> str:
    def cell(tag, i, text):
        cls = ' class="l"' if i in left else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_width(png: Path) -> int:
    with open(png, "rb") as f:
        return int.from_bytes(f.read(24)[16:20], "big")


def _img(png: Path, alt: str, caption: str, cls: str = "") -> str:
    raw = png.read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    w, h = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")  # the PNG header's size
    attr = f' class="{cls}"' if cls else ""
    return (f'<figure{attr}><img src="data:image/png;base64,{data}" width="{w}" height="{h}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _verdict_html(v: Verdict) -> str:
    lines = v.lines()
    cls = "verdict" if v.found else "verdict none"
    body = "".join(f'<p class="{"detail" if ln.startswith("  ") else "head"}">{html.escape(ln.strip())}</p>'
                   for ln in lines)
    return f'<div class="{cls}">{body}</div>'


CAPTIONS = {
    "early_stop_accuracy": "Test accuracy at the early-stopping iteration (minimum validation loss) against the "
                           "percent of weights remaining; mean over trials with min/max bars.",
    "final_accuracy": "Test accuracy at the end of training against the percent of weights remaining; mean "
                      "over trials with min/max bars.",
    "early_stop_iteration": "Early-stopping iteration (minimum validation loss) against the percent of weights "
                            "remaining; mean over trials with min/max bars.",
}


def _html(runs: Sequence[RunData], files: ReportFiles, extra_sections: Sequence[tuple[str, str]],
          units: Sequence[Sequence[str]]) -> str:
    from ..training import software_versions

    title = "lth report: " + ", ".join(r.name for r in runs)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">Made {html.escape(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))} by '
             f"{html.escape(software_versions())} from the run director{'ies' if len(runs) > 1 else 'y'} "
             f"{html.escape(', '.join(printable(r.path) for r in runs))}.</p>",
             "<h2>Verdict</h2>"]
    parts += [_verdict_html(v) for v in files.verdicts]
    parts.append("<h2>The paper's figures</h2><div class=\"figs\">")
    for stem in ("early_stop_accuracy", "final_accuracy", "early_stop_iteration"):
        png = next((p for p in files.figures.get(stem, []) if p.suffix == ".png"), None)
        if png is not None:
            parts.append(_img(png, stem.replace("_", " "), CAPTIONS[stem], "half"))
    parts.append("</div>")
    for run in runs:
        png = next((p for p in files.figures.get(f"curves_{run.name}", []) if p.suffix == ".png"), None)
        if png is not None:
            parts.append(_img(png, f"training curves of {run.name}",
                              f"{run.name}: test accuracy and validation loss during training of the ticket at "
                              "chosen levels (the paper's Fig. 3); mean over trials, min/max shaded."))
    parts.append("<h2>Results</h2>")
    for run in runs:
        if len(runs) > 1:
            parts.append(f"<h3>{html.escape(run.name)}</h3>")
        parts.append(_table_html(HEADER, table_rows(run.rows), left=(2,)))
    parts += [f"<h2>{html.escape(h)}</h2>{body}" for h, body in extra_sections]
    parts.append("<h2>Configuration</h2>")
    for run in runs:
        config = html.escape(json.dumps(run.config, indent=2), quote=False)
        parts.append(f"<h3>{html.escape(run.name)}</h3><pre>{config}</pre>")
    parts.append("<h2>Machines, software and wall time</h2>")
    for run in runs:
        machines = sorted({(r.machine or "not recorded", r.software or "not recorded") for r in run.records})
        parts.append(f"<p>{html.escape(run.name)}: {len(run.records)} finished units, "
                     f"{wall_time(run) / 60:.1f} minutes of training in all.</p>")
        parts.append(_table_html(("machine", "software"), machines, left=(0, 1)))
    parts.append(_table_html(UNIT_COLUMNS, units, left=(0, 3, 11, 12)))
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------- the whole report
def _md_to_html(table: str) -> str:
    """One of lth's own markdown tables (no escaped pipes in its cells) as an HTML table."""
    lines = [ln.strip().strip("|").split("|") for ln in table.strip().splitlines()]
    header, body = [c.strip() for c in lines[0]], [[c.strip() for c in r] for r in lines[2:]]
    return _table_html(header, body, left=tuple(i for i, h in enumerate(header) if h == "branch"))


STAT_CAPTIONS = {
    "statistics_layers": "Each prunable layer's weights kept against the pruning level (mean over trials).",
    "statistics_init": "Initial values (theta0, in units of the layer's initial std) of the weights that survive "
                       "and of those pruned, at three levels (the paper's Appendix F).",
    "statistics_overlap": "Jaccard index of the kept weights between trials, against two random masks of the "
                          "same sizes.",
    "statistics_movement": "How far surviving weights moved in training: abs(w_final - w_start) in units of the "
                           "layer's initial std.",
}


def _statistics(runs: Sequence[RunData], out_dir: Path, files: ReportFiles, figures: bool,
                formats: Sequence[str]) -> list[tuple[str, str]]:
    """Ticket statistics of each run: files written, and the report's HTML section."""
    import warnings

    from ..analysis.statistics import ticket_statistics
    from ..store import StoreError
    from .statistics import statistics_csv, statistics_figures, statistics_tables

    parts = []
    for run in runs:
        suffix = f"_{run.name}" if len(runs) > 1 else ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the notes below say what was left out
                stats = ticket_statistics(run.path, run.records)
        except StoreError as e:
            parts.append(f"<p>{html.escape(run.name)}: no statistics ({html.escape(str(e))}).</p>")
            continue
        texts = {f"statistics{suffix}.json": json.dumps(stats.to_dict(), indent=2) + "\n"}
        texts.update({f"statistics_{k}{suffix}.csv": v for k, v in statistics_csv(stats).items()})
        tables = statistics_tables(stats)
        texts.update({f"statistics_{k}{suffix}.md": v for k, v in tables.items()})
        for name, text in texts.items():
            _write(out_dir / name, text.encode())
            files.tables.append(out_dir / name)
        if len(runs) > 1:
            parts.append(f"<h3>{html.escape(run.name)}</h3>")
        if figures:
            made = statistics_figures(stats, out_dir, formats)
            for stem, paths in made.items():
                renamed = []
                for p in paths:  # one run's figures beside another's
                    target = p.with_name(f"{stem}{suffix}{p.suffix}")
                    if target != p:
                        p.replace(target)
                    renamed.append(target)
                files.figures[f"{stem}{suffix}"] = renamed
                png = next(q for q in renamed if q.suffix == ".png")
                wide = png_width(png) > 700  # the three histograms side by side take the page's width
                parts.append(_img(png, stem.replace("_", " "), STAT_CAPTIONS[stem], "" if wide else "half"))
        for title, key in (("Initial values of survivors and pruned weights", "init"),
                           ("Mask overlap", "overlap"), ("Movement of surviving weights", "movement")):
            parts.append(f"<h4>{title}</h4>{_md_to_html(tables[key])}")
        parts += [f"<p class=\"meta\">{html.escape(n)}</p>" for n in stats.notes]
    return [("Ticket statistics", "<div class=\"figs\">" + "".join(p for p in parts if p.startswith("<figure"))
             + "</div>" + "".join(p for p in parts if not p.startswith("<figure")))]


def _instability(runs: Sequence[RunData], out_dir: Path, files: ReportFiles, figures: bool) -> list[tuple[str, str]]:
    """Each run's ``lth instability`` results (``RUN_DIR/instability``), where it has any: which
    rewind points are stable, the table and the barrier-vs-k figure. Damaged results are left out
    with a line naming them, as ``lth instability`` does."""
    from .figures import plot_instability
    from .instability import HEADER as INSTABILITY_HEADER
    from .instability import STABLE_BELOW_PCT, csv_table, markdown_report, run_instability, stability_lines
    from .instability import table_rows as instability_rows

    parts = []
    for run in runs:
        results, damaged = run_instability(run.path)
        if not results:
            continue
        suffix = f"_{run.name}" if len(runs) > 1 else ""
        if len(runs) > 1:
            parts.append(f"<h3>{html.escape(run.name)}</h3>")
        for name, text in ((f"instability{suffix}.md", markdown_report(results, run.name)),
                           (f"instability{suffix}.csv", csv_table(results))):
            _write(out_dir / name, text.encode())
            files.tables.append(out_dir / name)
        parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in stability_lines(results)) + "</ul>")
        if figures:
            paths = plot_instability(results, out_dir / f"instability{suffix}", f"{run.name}: instability")
            files.figures[f"instability{suffix}"] = paths
            png = next(q for q in paths if q.suffix == ".png")
            parts.append(_img(png, "instability", "Error barrier between two copies trained from the rewind point k "
                              "with different data orders (test: solid, train: dashed), against k; stable below "
                              f"{STABLE_BELOW_PCT:g} points."))
        parts.append(_table_html(INSTABILITY_HEADER, instability_rows(results)))
        parts += [f'<p class="meta">left out, damaged: {html.escape(str(e))}</p>' for e in damaged]
    if not parts:
        return []
    intro = ("<p>Linear mode connectivity (Frankle, Dziugaite, Roy &amp; Carbin, ICML 2020), from "
             "<code>lth instability</code>: the barrier is the largest error on the line between the two copies' "
             "final weights minus the mean of its ends' errors, in percentage points.</p>")
    return [("Instability (linear mode connectivity)", intro + "".join(parts))]


def write_report(runs: Sequence[RunData], out_dir: Path, *, tolerance: float = 0.0,
                 curve_levels: Sequence[int] | None = None, figures: bool = True,
                 formats: Sequence[str] = FORMATS, statistics: bool = True,
                 extra_sections: Sequence[tuple[str, str]] = ()) -> ReportFiles:
    """Write every file of the report into ``out_dir`` (module docstring), with each run's
    instability results where ``lth instability`` has made some. ``statistics``: also
    the ticket statistics (:mod:`lth.analysis.statistics`: reads every mask and trained weight).
    ``extra_sections``: (heading, HTML) pairs placed after the results table."""
    out_dir = Path(out_dir)
    files = ReportFiles(out_dir)
    if figures:
        _pyplot()  # without matplotlib: one ReportError naming the fix, before any file is written
    extra_sections = [*_instability(runs, out_dir, files, figures),
                      *(_statistics(runs, out_dir, files, figures, formats) if statistics else []), *extra_sections]
    files.verdicts = [verdict(run.rows, run.name, tolerance, run.planned_levels)
                      for run in runs if any(r.level == 0 for r in run.rows)]
    if figures:
        files.figures.update(summary_figures(runs, out_dir, formats))
        for run in runs:
            if run.curves:
                files.figures[f"curves_{run.name}"] = curves_figure(run, out_dir / f"curves_{run.name}", curve_levels,
                                                                    formats=formats)
    units = unit_rows(runs)
    texts = {
        "results.md": results_markdown(runs),
        "results.csv": rows_csv(runs),
        "units.md": _md(UNIT_COLUMNS, units),
        "units.csv": _csv(UNIT_COLUMNS, units),
        "verdict.md": "\n".join(v.text() for v in files.verdicts),
        "verdict.json": json.dumps([_verdict_json(v) for v in files.verdicts], indent=2) + "\n",
    }
    for name, text in texts.items():
        _write(out_dir / name, text.encode())
        files.tables.append(out_dir / name)
    files.html = out_dir / "report.html"
    _write(files.html, _html(runs, files, extra_sections, units).encode())
    return files


def _verdict_json(v: Verdict) -> dict:
    d = asdict(v)
    d["found"] = v.found
    d["bar"] = v.bar
    d["text"] = v.lines()
    return d
