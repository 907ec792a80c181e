"""The two errors of the tickets package (a module of its own so every other module can raise them)."""

from __future__ import annotations

__all__ = ["ExportError", "TicketFormatError"]


class ExportError(ValueError):
    """A ticket cannot be exported or loaded; the message names the problem and the fix."""


class TicketFormatError(ExportError):
    """A file is not a valid safetensors file or not a ticket written by ``lth export``."""
