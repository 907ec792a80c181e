"""Reports over a run directory (read-only): tables and the paper's figures."""

from .figures import plot, plot_instability
from .instability import write_tables as write_instability_tables
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

__all__ = ["DamagedUnitsWarning", "ReportError", "Row", "Stat", "aggregate", "load_records", "markdown_table",
           "plot", "plot_instability", "report", "text_table",
           "write_instability_tables"]
