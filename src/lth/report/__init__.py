"""Reports over run directories (read-only): tables, the paper's figures, the verdict and a
self-contained HTML report."""

from .bundle import ReportFiles, write_report
from .figures import plot, plot_instability
from .instability import write_tables as write_instability_tables
from .runs import RunData, load_run
from .tables import (
    DamagedUnitsWarning,
    ReportError,
    Row,
    Stat,
    aggregate,
    load_records,
    markdown_table,
    report,
    text_table,
)
from .verdict import Verdict, verdict

__all__ = ["DamagedUnitsWarning", "ReportError", "ReportFiles", "Row", "RunData", "Stat", "Verdict", "aggregate",
           "load_records", "load_run", "markdown_table", "plot", "plot_instability", "report", "text_table", "verdict",
           "write_instability_tables", "write_report"]
