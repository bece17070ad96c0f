"""Every error aplex raises of its own, in one place.

Both sides import this module: it imports nothing else of aplex, so a worker
process can rebuild a :class:`RemoteError` without loading the front end.
"""

from __future__ import annotations

import signal
from concurrent.futures import BrokenExecutor

__all__ = [
    "AplexWorkerError",
    "ProcessExit",
    "RemoteError",
    "RemoteTraceback",
    "WorkerDiedError",
    "describe",
]


class AplexWorkerError(BrokenExecutor):
    """A worker broke: a BaseException that is not an Exception escaped a
    work, the worker process died, or a worker's initializer raised.

    A :class:`concurrent.futures.BrokenExecutor` (so ``except
    BrokenExecutor`` catches it, as it does the standard library's
    ``BrokenProcessPool``), and so an :class:`Exception`.

    The executor is broken from then on: every unfinished future fails with
    :class:`concurrent.futures.CancelledError` caused by this error, and
    ``submit`` and ``map`` raise it. ``shutdown`` still works.

    It is also the exception of each work that was on a worker when
    ``terminate_workers()`` or ``kill_workers()`` was called (the executor
    is then shut down, not broken).
    """


class WorkerDiedError(AplexWorkerError):
    """The worker a work was on died, and the executor, made with
    ``on_worker_death="replace"``, replaced it and goes on; or the worker
    was killed to cancel another work sent to it (``kill_on_cancel=True``).

    Set as the exception of each future whose work was on that worker (and
    only of those); other works, and works waiting in the executor, are not
    affected. Its ``__cause__`` is what the worker reported just before it
    died (a BaseException that escaped a work), or how its process ended.

    Attributes:
        worker: The dead worker's name, e.g. ``"ProcessWorker-1"``.
        exitcode: Its process's exit code (negative: the signal that killed
            it); None for a thread worker, or when unknown.
    """

    def __init__(self, message: str, worker: str = "", exitcode: int | None = None):
        super().__init__(message)
        self.worker = worker
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (str(self), self.worker, self.exitcode)


class RemoteError(Exception):
    """An exception raised in a worker that could not be pickled back.

    Attributes:
        type_name: The qualified name of the original exception's type.
        message: ``str()`` of the original exception.
        traceback_text: The worker's traceback, formatted.
        reason: Why the original could not be pickled back.
    """

    def __init__(self, type_name: str, message: str, traceback_text: str, reason: str = ""):
        super().__init__(type_name, message, traceback_text, reason)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        self.reason = reason

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"{self.type_name}: {self.message}\n\n"
            f"[this exception could not be pickled back from the worker{why}]\n\n"
            f"Worker traceback:\n{self.traceback_text}"
        )


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class ProcessExit(Exception):
    """How a worker process ended, when that was not a clean exit."""

    def __init__(self, exitcode: int | None):
        if exitcode is not None and exitcode < 0:
            try:
                how = f"was killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"was killed by signal {-exitcode}"
        else:
            how = f"exited with code {exitcode}"
        super().__init__(f"the worker process {how}")
        self.exitcode = exitcode


def describe(obj: object, *, str_of: bool = False) -> str:
    """``repr(obj)`` (or ``str(obj)``) for an error message, even when that
    raises: an error about a work must not turn into an error about its
    ``__repr__``."""
    try:
        return str(obj) if str_of else repr(obj)
    except Exception as exc:
        how = "str" if str_of else "repr"
        return f"<{type(obj).__qualname__} object; its {how}() raised {type(exc).__name__}>"
