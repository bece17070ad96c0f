"""How works reach workers and results come back, one class per worker kind.

A worker pool's parent side (:class:`ThreadWorkers`) starts the workers and
puts items into their channels without ever blocking the caller; the worker
side of each channel is the endpoint that :func:`aplex._worker.serve` reads.

Process workers get their items through a pipe, pickled (see _pickling);
their parent-side threads are described above ProcessWorkers.

Thread workers share the parent's memory, so nothing is pickled: a channel
is a list behind a lock, and the worker's loop is woken through its own
thread-safe call only when the list stops being empty (once per sleep, not
per work). Results are handed to the dispatcher on the worker's own thread.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import anyio

from ._messages import ABORT, WorkerFailure, WorkItem
from ._pickling import dumps, dumps_results, dumps_works, dumps_works_or_none, loads
from ._worker import serve
from .backends import Backend, current_backend

OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]


class ThreadChannel:
    """A thread worker's mailbox: the parent puts, the worker's loop receives."""

    def __init__(self, deliver: Callable[[list[Any]], None]):
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._closed = False
        # Set while the worker waits for items: how to wake it from the
        # parent's threads (its loop's own thread-safe call) and what to set.
        self._wake: Callable[[], object] | None = None
        self._call_soon: Callable[[Callable[[], object]], object] | None = None
        #: The endpoint's send(): hands results over on the worker's thread.
        self.send = deliver

    def put(self, items: list[Any]) -> None:
        """Add items for the worker (parent side; never blocks)."""
        with self._lock:
            if self._closed:
                return  # the worker has exited: the dispatcher learns it from on_exit
            self._items.extend(items)
            wake, self._wake = self._wake, None
            if wake is not None:
                assert self._call_soon is not None
                self._call_soon(wake)

    async def receive(self) -> list[Any]:
        """Wait for items (worker side)."""
        if self._call_soon is None:
            self._call_soon = current_backend().threadsafe_caller()
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                # Set under the lock that put() takes, so a put() after the
                # check above is sure to see it and wake us.
                ready = anyio.Event()
                self._wake = ready.set
            await ready.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True


class ThreadWorkers:
    """A pool of worker threads, each running its own event loop."""

    def __init__(
        self,
        names: list[str],
        *,
        backend: Backend,
        loop_factory: Callable[[], Any] | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        on_results: OnResults,
        on_exit: OnExit,
    ):
        self._channels = [ThreadChannel(partial(on_results, index)) for index in range(len(names))]
        self._threads = [
            threading.Thread(
                target=_run_thread_worker,
                args=(index, channel, backend, loop_factory, initializer, initargs, on_exit),
                name=f"aplex-{name}",
            )
            for index, (name, channel) in enumerate(zip(names, self._channels, strict=True))
        ]
        for thread in self._threads:
            thread.start()

    def put(self, index: int, items: list[Any]) -> None:
        self._channels[index].put(items)

    def abort(self) -> None:
        # A thread cannot be killed: its coroutine works are cancelled, and a
        # running plain function is left to return.
        for channel in self._channels:
            channel.put([ABORT])

    def join(self) -> None:
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:  # shutdown(wait=True) called from a work
                thread.join()


def _run_thread_worker(
    index: int,
    channel: ThreadChannel,
    backend: Backend,
    loop_factory: Callable[[], Any] | None,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    on_exit: OnExit,
) -> None:
    error: BaseException | None = None
    try:
        backend.run(partial(serve, channel, initializer, initargs), loop_factory=loop_factory)
    except BaseException as exc:  # reported to the dispatcher, which breaks the pool
        error = exc
    finally:
        channel.close()
        on_exit(index, error)


# -- process workers ---------------------------------------------------------
#
# Each process worker has a duplex pipe and two parent threads: a feeder that
# pickles and writes the batches put() leaves for it (so that a caller never
# blocks on a full pipe, and a work that cannot be pickled fails on its own),
# and a reader that reads result batches and, at end of file, reaps the
# process and reports its exit. Per-worker threads keep one busy worker from
# holding up the others. A batch for an idle worker is written by put()
# itself, which saves the thread switch to the feeder.

# The largest batch put() writes from the caller's thread; well below a
# pipe's buffer, so that the write cannot block even if the worker were
# slow to read. Larger batches go through the feeder thread.
_DIRECT_WRITE_MAX = 16 * 1024
# Allocations between young collections in a worker process (Python's
# default is 700): higher means fewer collections, and more cyclic garbage
# waiting a little longer to be freed.
_WORKER_GC_THRESHOLD = 50_000


class ProcessWorkers:
    """A pool of worker processes, each running its own event loop."""

    def __init__(
        self,
        names: list[str],
        *,
        context: Any,
        backend: Backend,
        loop_factory: Callable[[], Any] | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        on_results: OnResults,
        on_exit: OnExit,
    ):
        # Pickled once, with cloudpickle: they may be lambdas or closures.
        setup = dumps((backend, loop_factory, initializer, initargs))
        self._links = []
        for index, name in enumerate(names):
            parent_end, child_end = context.Pipe(duplex=True)
            process = context.Process(
                target=_run_process_worker, args=(child_end, setup), name=f"aplex-{name}"
            )
            process.start()
            child_end.close()
            self._links.append(_ProcessLink(index, name, process, parent_end, on_results, on_exit))

    def put(self, index: int, items: list[Any]) -> None:
        self._links[index].put(items)

    def abort(self) -> None:
        # SIGKILL, not SIGTERM: a work may have replaced the SIGTERM handler,
        # and a broken pool owes its running works nothing.
        for link in self._links:
            _kill(link.process)

    def join(self) -> None:
        for link in self._links:
            link.join()


class _ProcessLink:
    """The parent's end of one worker process: its feeder and reader threads."""

    def __init__(
        self,
        index: int,
        name: str,
        process: Any,
        connection: Any,
        on_results: OnResults,
        on_exit: OnExit,
    ):
        self.index = index
        self.process = process
        self._connection = connection
        self._on_results = on_results
        self._on_exit = on_exit
        # Taken as the lock itself, not through the Condition's Python-level
        # __enter__: put() and the reader take it once per batch.
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._outbox: list[Any] = []
        self._closing = False
        self._writing = False  # by put() or the feeder: one writer at a time
        self._failure: BaseException | None = None  # what broke the feeder or the reader
        self._in_flight = 0  # works sent and not yet answered
        self._feeder = threading.Thread(target=self._feed, name=f"aplex-{name}-feeder")
        self._reader = threading.Thread(target=self._read, name=f"aplex-{name}-reader")
        self._feeder.start()
        self._reader.start()

    def put(self, items: list[Any]) -> None:
        works = sum(isinstance(item, WorkItem) for item in items)
        with self._lock:
            if self._closing:
                return  # the worker has exited: the dispatcher learns it from on_exit
            self._in_flight += works
            # An idle worker (everything sent to it answered) is waiting on
            # its pipe: write to it at once rather than wake the feeder, which
            # costs a thread switch on every round trip. A busy worker gets
            # its works through the feeder, which batches them.
            if self._writing or self._outbox or self._in_flight > works:
                self._outbox.extend(items)
                self._ready.notify()
                return
            self._writing = True
        try:
            data = dumps_works_or_none(items)
            if data is not None and len(data) <= _DIRECT_WRITE_MAX:
                self._connection.send_bytes(data)
                items = []
            elif data is not None:
                items = [_Pickled(data)]
        except OSError:
            items = []  # the worker is gone: the reader reports it
        with self._lock:
            self._writing = False
            # Works put while this one was written queued behind it.
            self._outbox[:0] = items
            if self._outbox:
                self._ready.notify()

    def _feed(self) -> None:
        while True:
            with self._lock:
                while (self._writing or not self._outbox) and not self._closing:
                    self._ready.wait()
                if self._closing:
                    return
                items, self._outbox = self._outbox, []
                self._writing = True
            try:
                self._send(items)
            except OSError:
                return  # the worker is gone: the reader reports it
            except BaseException as exc:
                # Works that cannot be sent any more must not leave their
                # callers waiting: the reader breaks the pool with this cause.
                self._failure = exc
                _kill(self.process)
                return
            with self._lock:
                self._writing = False
                if self._outbox:
                    self._ready.notify()

    def _send(self, items: list[Any]) -> None:
        batch: list[Any] = []
        for item in [*items, None]:
            if item is not None and type(item) is not _Pickled:
                batch.append(item)
                continue
            if batch:
                data, failed = dumps_works(batch)
                if failed:
                    with self._lock:
                        self._in_flight -= len(failed)
                    self._on_results(self.index, failed)
                self._connection.send_bytes(data)
                batch = []
            if item is not None:
                self._connection.send_bytes(item.data)

    def _read(self) -> None:
        try:
            self._read_results()
        except BaseException as exc:
            # A batch that cannot be unpickled (its works cannot be told
            # apart any more), or a fault of ours: whatever stops the reader
            # breaks the pool, as its works' results could never arrive.
            self._failure = self._failure or exc
            _kill(self.process)
        self.process.join()
        with self._lock:
            self._closing = True
            self._ready.notify()
        self._feeder.join()
        self._connection.close()
        exitcode = self.process.exitcode
        self.process.close()
        error = self._failure
        if error is None and exitcode != 0:
            error = _ProcessExit(exitcode)
        self._on_exit(self.index, error)

    def _read_results(self) -> None:
        connection = self._connection
        while True:
            try:
                data = connection.recv_bytes()
            except (EOFError, OSError):
                return  # the worker has exited: _read() reaps it
            results = loads(data)
            with self._lock:
                self._in_flight -= len(results)
            self._on_results(self.index, results)

    def join(self) -> None:
        if threading.current_thread() is not self._reader:
            self._reader.join()


def _kill(process: Any) -> None:
    try:
        process.kill()
    except ValueError:
        pass  # already reaped and closed by its reader


class _Pickled(NamedTuple):
    """A batch put() pickled but left to the feeder: too big to write from
    the caller's thread without risking to block it."""

    data: bytes


class _ProcessExit(Exception):
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


class _PipeEndpoint:
    """A process worker's end of its pipe, as :func:`serve` reads it."""

    def __init__(self, connection: Any):
        self._connection = connection
        self._fileno = connection.fileno()

    async def receive(self) -> list[Any]:
        await anyio.wait_readable(self._fileno)
        connection = self._connection
        items: list[Any] = loads(connection.recv_bytes())
        while connection.poll():
            items.extend(loads(connection.recv_bytes()))
        return items

    def send(self, results: list[Any]) -> None:
        self._connection.send_bytes(dumps_results(results))


def _run_process_worker(connection: Any, setup: bytes) -> None:
    # Ctrl-C goes to the whole foreground process group; the parent decides
    # what it means for the workers, and stops them itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker keeps thousands of small objects alive at once (a task and
    # its state per coroutine work), and the young-generation collections
    # that, by default, every 700 allocations trigger end up walking them
    # over and over: half of a coroutine work's cost. This process is ours
    # to tune; a thread worker shares its program's collector, left alone.
    gc.set_threshold(_WORKER_GC_THRESHOLD, *gc.get_threshold()[1:])
    _exit_with_parent(connection.fileno())
    endpoint = _PipeEndpoint(connection)
    try:
        backend, loop_factory, initializer, initargs = loads(setup)
    except BaseException as exc:
        endpoint.send([WorkerFailure("initializer", exc)])
        return
    try:
        backend.run(partial(serve, endpoint, initializer, initargs), loop_factory=loop_factory)
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
