"""The records that travel between the parent and a worker.

Both sides import this module, and it imports nothing else of aplex, so a
worker process can unpickle them without loading the front end.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import CO_COROUTINE
from types import CodeType
from typing import Any, NamedTuple


class WorkItem:
    """One work for a worker: call ``fn``, or, for a chunk, call it once per
    argument tuple in ``args`` and send back the list of results.

    A class with slots rather than a tuple: the parent's record of a work
    extends it (see _dispatch), so that one object per work is made and a
    thread worker is handed that very object. A process worker receives a
    plain WorkItem, as that is what one pickles to.
    """

    __slots__ = ("work_id", "fn", "args", "kwargs", "chunk")

    def __init__(
        self,
        work_id: int,
        fn: Callable[..., Any],
        args: Any,
        kwargs: dict[str, Any],
        chunk: bool = False,
    ):
        self.work_id = work_id
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.chunk = chunk

    def __reduce__(self) -> tuple[Any, ...]:
        return WorkItem, (self.work_id, self.fn, self.args, self.kwargs, self.chunk)


class CancelItem(NamedTuple):
    """Cancel the running coroutine work ``work_id``; ignored if it ended."""

    work_id: int


class StopItem(NamedTuple):
    """No more works will come: finish the running ones, then exit; with
    ``cancel``, cancel the running coroutine works first."""

    cancel: bool = False


STOP = StopItem()
ABORT = StopItem(cancel=True)

#: The control items: sent in batches of their own, never with works (see
#: pickling.dumps_works_or_none).
CONTROLS = (CancelItem, StopItem)


class RestartItem(NamedTuple):
    """Never sent to a worker: told to the parent's side of a worker, it
    starts a new worker in place of the dead one, and the items after it go
    to the new one (those before it went to the dead one, and were lost)."""


RESTART = RestartItem()


class KillItem:
    """Never sent to a worker: told to the parent's side of a process
    worker, it kills the worker (SIGKILL) once the items before it have been
    put (kill_on_cancel); the death is reported as any other. Not a tuple,
    unlike the other items: it equals nothing but itself."""

    __slots__ = ()


KILL = KillItem()


#: About how many bytes of payload one message carries. A message is read
#: whole before any work in it runs, and pickled whole before it is sent:
#: works with large arguments (or results) go in batches of about this
#: size, so that a worker runs one while the next is on its way. Tiny works
#: never come near it, and keep their batches of thousands.
BATCH_BYTES = 256 * 1024

#: The smallest buffer that travels out of band (see :mod:`.wire`): below
#: it, copying it into the pickle costs less than writing and reading it on
#: its own.
OUT_OF_BAND_BYTES = 64 * 1024


# Types whose values add little to a message, told apart at a glance.
_SMALL = frozenset({int, float, bool, type(None), tuple, list, dict})


def size_hint(value: Any) -> int:
    """What ``value`` adds to a message, if it is bytes, a bytearray, text,
    or has ``nbytes`` (a memoryview, a NumPy array); 0 otherwise (a cheap
    lower bound, not a measure)."""
    kind = type(value)
    if kind is bytes or kind is bytearray or kind is str:
        return len(value)
    if kind in _SMALL:
        return 0
    if kind is memoryview:
        # Goes out of band whatever its size (the standard pickle takes no
        # memoryview): counted as large enough for its batch to be looked at.
        return max(int(value.nbytes), OUT_OF_BAND_BYTES)
    nbytes = getattr(value, "nbytes", 0)
    return nbytes if type(nbytes) is int else 0


def work_size_hint(item: WorkItem) -> int:
    """:func:`size_hint` of a work's arguments."""
    size = 0
    for args in item.args if item.chunk else (item.args,):
        for value in args:
            if type(value) not in _SMALL:
                size += size_hint(value)
    for value in item.kwargs.values():
        size += size_hint(value)
    return size


# ResultItem.status values.
DONE = 0
FAILED = 1
CANCELLED = 2
# Beyond CANCELLED: the work, or its result, did not load (the dispatcher
# tells them apart with one comparison).
#: The work, or its result, could not be unpickled where it arrived; the
#: value is a LoadFailure, which the parent turns into the work's error.
NOT_LOADED = 3
#: The work arrived in a batch that could not be unpickled: the parent sends
#: it again, on its own (see LoadFailure). The value is None.
RELOAD = 4


class ResultItem(NamedTuple):
    """How one work ended: its value, its exception, or cancelled.

    The worker sends plain ``(work_id, status, value)`` tuples on its hot
    path (a NamedTuple costs a Python call to make, once per work); readers
    unpack results, so either form is a result.
    """

    work_id: int
    status: int
    value: Any


class TasksStarted(NamedTuple):
    """These works' calls returned awaitables, which now run as tasks: they
    can be cancelled. Sent, at the end of a batch of results, only for works
    whose callable is not a coroutine function (see
    :func:`is_coroutine_function`): the parent knows those from the start."""

    work_ids: list[int]


def is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a coroutine function or a method of one, told by
    its code alone: cheap enough for a worker to ask of every coroutine work.

    Both sides rely on it: the parent counts a work whose callable it
    recognises as cancellable from the moment it is sent, and a worker
    reports in :class:`TasksStarted` every other work that it starts as a
    task.
    """
    code = getattr(fn, "__code__", None)
    return type(code) is CodeType and bool(code.co_flags & CO_COROUTINE)


class Ready(NamedTuple):
    """The worker's initializer has returned: it serves works from now on.
    Sent once, alone in its batch. A worker that dies before sending it died
    starting, which the parent does not answer by starting it again and
    again."""


READY = Ready()


class WorkerFailure(NamedTuple):
    """The worker cannot go on: its initializer raised, or a BaseException
    that is not an Exception escaped a work. The parent breaks the pool."""

    where: str
    error: BaseException


class LoadFailure(NamedTuple):
    """Why a work (in its worker) or a result (in the parent) could not be
    unpickled, e.g. a class the process cannot import, or a reconstructor
    that raises. Text only, so that it always loads where it is sent.

    A batch is pickled whole, which keeps the many tiny works cheap; one
    item that cannot be loaded then takes its batch with it. So a worker
    that cannot load a batch of several works asks for each again alone
    (RELOAD), and fails only the one that still cannot be loaded; a result
    that is not plain data travels pickled on its own inside its batch.
    """

    what: str  # "work" or "result"
    reason: str  # the error, and where it came from when the traceback says
    traceback: str


class ReloadRequest(NamedTuple):
    """A worker's message in place of results: it could not load the batch
    that held works ``ids``, and needs each of them again, alone."""

    ids: tuple[int, ...]
