"""DataLoader worker failures as the one-line errors the main process gives.

A worker's exception reaches the main process re-raised by PyTorch with the message replaced by "Caught DataError
in DataLoader worker process 0. Original Traceback ...": the CLI would print a traceback where decoding in the main
process prints "error: <file>: not a readable image". A worker killed outright (out of memory, a decoder crash)
surfaces as a RuntimeError naming its pid. Both are turned back into one line here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from harness.errors import VlbenchError

T = TypeVar("T")

_WRAPPED = "in DataLoader worker process"


def original_message(message: str) -> str:
    """The worker's own message inside PyTorch's wrapper (the last line: ``module.Class: message``)."""
    if _WRAPPED not in message.split("\n", 1)[0] or "Original Traceback" not in message:
        return message
    last = message.rstrip().rsplit("\n", 1)[-1]
    head, sep, text = last.partition(": ")
    return text if sep and " " not in head else last


def worker_died(exc: BaseException) -> VlbenchError | None:
    """The one-line error for PyTorch's report of a dead worker, or None if ``exc`` is something else.

    PyTorch says so in a RuntimeError, raised where the main process stands when SIGCHLD arrives (possibly
    outside the loader, so the CLI checks too)."""
    text = str(exc)
    if not isinstance(exc, RuntimeError) or not text.startswith("DataLoader worker"):
        return None
    return _died(text.splitlines()[0].rstrip(". "))


def _died(what: str) -> VlbenchError:
    return VlbenchError(f"a data-loader worker died ({what}); out of memory? Run with fewer --workers "
                        "(0 decodes in the main process)")


def reported(batches: Iterator[T]) -> Iterator[T]:
    """``batches`` (a DataLoader iterator), with worker failures raised as one-line :class:`VlbenchError`."""
    try:
        yield from batches
    except VlbenchError as exc:
        _stop_workers(batches)
        raise type(exc)(original_message(str(exc))) from None
    except (ConnectionError, EOFError) as exc:
        # A worker killed while handing over a batch: the pipe to it breaks before SIGCHLD is seen.
        _stop_workers(batches)
        raise _died(f"connection lost: {exc}") from None
    except RuntimeError as exc:
        error = worker_died(exc)
        if error is None:
            raise
        _stop_workers(batches)
        raise error from None


def _stop_workers(batches: Iterator[Any]) -> None:
    """Shut the iterator's workers down now, which also unregisters them from PyTorch's SIGCHLD handler: the
    iterator stays alive as long as the traceback of our error does, and until then a dead worker's SIGCHLD would
    raise a second error, a RuntimeError, wherever the main process stands when it arrives (measured: inside the
    caller's handling of the first one)."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # DataLoader's multi-process iterator
    if shutdown is None:
        return
    try:
        shutdown()
    except RuntimeError as exc:  # the signal arrived during shutdown; its finally unregistered the workers
        if worker_died(exc) is None:
            raise
