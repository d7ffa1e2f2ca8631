"""The one exception type the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations


class VlbenchError(Exception):
    """A problem with the user's input or environment, explained in one line.

    Raise it with a message that names the file and the item at fault; the CLI prints
    ``error: <message>`` and exits with status 2 instead of showing a traceback.
    """


class DataError(VlbenchError):
    """A dataset file or spec is missing, malformed or inconsistent."""


class PathEscapeError(DataError):
    """A path built from data points outside the folder it must stay in (``..``, an absolute path, a link)."""


class PredictionsError(VlbenchError):
    """A predictions file does not match the evaluated split."""
