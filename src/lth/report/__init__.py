"""Reports over a run directory (read-only): tables and the paper's figures."""

from .figures import plot
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
           "plot", "report", "text_table"]
