"""The one exception type of :mod:`lth.data`."""

from __future__ import annotations


class DataError(Exception):
    """A data set could not be found, downloaded, verified or parsed.

    The message is meant for the end user: it names the file or setting at fault, what is wrong
    with it, and how to fix it.
    """
