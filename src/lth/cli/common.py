"""Helpers shared by the command modules."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def lth_warnings() -> Iterator[None]:
    """Show lth's own warnings (e.g. damaged units left out of a report) as one
    ``lth: warning: ...`` line on stderr each, instead of Python's file:line form."""
    from ..report import DamagedUnitsWarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DamagedUnitsWarning):
            print(f"lth: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    original = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always", DamagedUnitsWarning)
        warnings.showwarning = show
        yield
