"""What runs in a worker process: read the pipe, run :func:`serve`, answer.

The parent's side is :mod:`aplex._processes`. This module, like the rest of
:mod:`aplex._worker`, imports nothing of the front end, so a worker process
(and the fork server that forks them) loads only what it needs.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import threading
from functools import partial
from typing import Any

import anyio

from .messages import WorkerFailure
from .pickling import dumps_results, loads, loads_initargs
from .serve import serve

# Allocations between young collections in a worker process (Python's
# default is 700): higher means fewer collections, and more cyclic garbage
# waiting a little longer to be freed.
_WORKER_GC_THRESHOLD = 50_000


class _PipeEndpoint:
    """A process worker's end of its pipe, as :func:`serve` reads it."""

    def __init__(self, connection: Any, blocked: memoryview):
        self._connection = connection
        self._fileno = connection.fileno()
        #: This worker's byte of the pool's shared flags (see serve.Endpoint).
        self.blocked = blocked

    async def receive(self) -> list[Any]:
        await anyio.wait_readable(self._fileno)
        connection = self._connection
        items: list[Any] = loads(connection.recv_bytes())
        while connection.poll():
            items.extend(loads(connection.recv_bytes()))
        return items

    def send(self, results: list[Any]) -> None:
        self._connection.send_bytes(dumps_results(results))


def tune_collector() -> None:
    """Tune the garbage collector of a process that runs only a worker.

    A worker keeps thousands of small objects alive at once (a task and its
    state per coroutine work), and the young-generation collections that, by
    default, every 700 allocations trigger end up walking them over and
    over: half of a coroutine work's cost. A worker process (or a Ray actor's)
    is ours to tune; a thread worker shares its program's collector, left
    alone.
    """
    gc.set_threshold(_WORKER_GC_THRESHOLD, *gc.get_threshold()[1:])


def run_process_worker(
    connection: Any, setup: bytes, initargs: bytes | tuple[Any, ...], flags: Any, index: int
) -> None:
    """Serve the parent on ``connection``, its end of the pipe.

    Args:
        connection: This worker's end of its duplex pipe.
        setup: The pickled backend, loop factory and initializer.
        initargs: The initializer's arguments, as
            :func:`~aplex._worker.pickling.dumps_initargs` made them.
        flags: The pool's shared flags of blocked workers.
        index: This worker's place in them.
    """
    # Ctrl-C goes to the whole foreground process group; the parent decides
    # what it means for the workers, and stops them itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_collector()
    _exit_with_parent(connection.fileno())
    endpoint = _PipeEndpoint(connection, memoryview(flags).cast("B")[index : index + 1])
    try:
        backend, loop_factory, initializer = loads(setup)
        arguments = loads_initargs(initargs)
    except BaseException as exc:
        endpoint.send([WorkerFailure("initializer", exc)])
        return
    try:
        backend.run(partial(serve, endpoint, initializer, arguments), loop_factory=loop_factory)
    except (EOFError, OSError):
        pass  # the parent has gone away: nothing left to report to


def _exit_with_parent(fileno: int) -> None:
    """Exit as soon as the parent's end of the pipe closes, even while a
    plain work blocks the loop: the parent may have been killed outright."""

    if not hasattr(select, "POLLRDHUP"):  # not Linux: rely on end of file in the loop
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(fileno, select.POLLRDHUP)
        while True:
            for _, events in poller.poll():
                if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    os._exit(1)

    threading.Thread(target=watch, name="aplex-parent-watch", daemon=True).start()
