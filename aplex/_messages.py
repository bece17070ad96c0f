"""The records that travel between the parent and a worker.

Both sides import this module, and it imports nothing else of aplex, so a
worker process can unpickle them without loading the front end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class WorkItem(NamedTuple):
    """One work for a worker: call ``fn``, or, for a chunk, call it once per
    argument tuple in ``args`` and send back the list of results."""

    work_id: int
    fn: Callable[..., Any]
    args: Any
    kwargs: dict[str, Any]
    chunk: bool = False


class CancelItem(NamedTuple):
    """Cancel the running coroutine work ``work_id``; ignored if it ended."""

    work_id: int


class StopItem(NamedTuple):
    """No more works will come: finish the running ones, then exit; with
    ``cancel``, cancel the running coroutine works first."""

    cancel: bool = False


STOP = StopItem()
ABORT = StopItem(cancel=True)

# ResultItem.status values.
DONE = 0
FAILED = 1
CANCELLED = 2


class ResultItem(NamedTuple):
    """How one work ended: its value, its exception, or cancelled."""

    work_id: int
    status: int
    value: Any


class WorkerFailure(NamedTuple):
    """The worker cannot go on: its initializer raised, or a BaseException
    that is not an Exception escaped a work. The parent breaks the pool."""

    where: str
    error: BaseException
