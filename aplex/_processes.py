"""Process workers, the parent's side: start them, feed them, read them.

Each process worker has a duplex pipe and two parent threads: a feeder that
pickles and writes the batches put() leaves for it (so that a caller never
blocks on a full pipe, and a work that cannot be pickled fails on its own),
and a reader that reads result batches and, at end of file, reaps the
process and reports its exit. Per-worker threads keep one busy worker from
holding up the others. A batch for an idle worker is written by put()
itself, which saves the thread switch to the feeder.

What runs in the child is :mod:`aplex._worker.process`; items travel
pickled (see :mod:`aplex._worker.pickling`). The initializer travels the
same way, and so do its arguments, unless they hold what multiprocessing
lets a process have only when it starts (a Queue, a Lock, an Event...):
then they are handed to the process as it starts, as the standard library
does, inherited or pickled by multiprocessing itself.

Neither thread keeps a batch once it is written or delivered: the works'
arguments and results would stay alive until the next batch.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from typing import Any

from ._exceptions import ProcessExit
from ._worker.messages import RESTART, Ready, TasksStarted, WorkItem
from ._worker.pickling import (
    Pickled,
    dumps,
    dumps_initargs,
    dumps_works,
    dumps_works_or_none,
    loads,
)
from ._worker.process import run_process_worker
from .backends import Backend

# How workers report, to the dispatcher: results by batch, and their exit.
OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]


_ENDS_NO_WORK = (TasksStarted, Ready)

# The largest batch put() writes from the caller's thread; well below a
# pipe's buffer, so that the write cannot block even if the worker were
# slow to read. Larger batches go through the feeder thread.
_DIRECT_WRITE_MAX = 16 * 1024


class ProcessKind:
    """Process workers, as an executor is composed of them.

    Args:
        mp_context: A :mod:`multiprocessing` start method name or context;
            None for ``"forkserver"`` where there is one, else ``"spawn"``:
            neither forks a parent that runs threads.

    Raises:
        ValueError: An unknown start method.
        TypeError: ``mp_context`` is neither a name nor a context.
    """

    #: What the worker handles are called: "ProcessWorker-0", ...
    name = "Process"
    in_process = False

    def __init__(self, mp_context: Any = None):
        self._context = _multiprocessing_context(mp_context)

    def start(
        self,
        names: list[str],
        *,
        backend: Backend,
        loop_factory: Callable[[], Any] | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        on_results: OnResults,
        on_exit: OnExit,
    ) -> ProcessWorkers:
        """Start one worker process per name."""
        if self._context.get_start_method() == "forkserver":
            _preload_in_forkserver(backend)
        return ProcessWorkers(
            names,
            context=self._context,
            backend=backend,
            loop_factory=loop_factory,
            initializer=initializer,
            initargs=initargs,
            on_results=on_results,
            on_exit=on_exit,
        )


def _multiprocessing_context(mp_context: Any) -> Any:
    if mp_context is None:
        methods = multiprocessing.get_all_start_methods()
        return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if isinstance(mp_context, str):
        return multiprocessing.get_context(mp_context)  # ValueError names a bad method
    if not (hasattr(mp_context, "Process") and hasattr(mp_context, "Pipe")):
        raise TypeError(
            f"mp_context must be a start method name or a multiprocessing context, "
            f"got {mp_context!r}"
        )
    return mp_context


def _preload_in_forkserver(backend: Backend) -> None:
    """Add what a worker imports to what the fork server preloads, so that
    it forks workers ready to run instead of each importing them anew. Keeps
    what the program asked for; has no effect once the server runs."""
    import multiprocessing.forkserver as forkserver

    server = forkserver._forkserver
    preload = list(getattr(server, "_preload_modules", ["__main__"]))
    # The worker's side, the backend it unpickles, and AnyIO's module for
    # it (a fork server skips a module it cannot import).
    wanted = [
        "aplex._worker.process",
        type(backend).__module__,
        f"anyio._backends._{backend.name}",
    ]
    missing = [name for name in wanted if name not in preload]
    if missing:
        server.set_forkserver_preload(preload + missing)


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
        # Pickled once, as works are: they may be lambdas or closures.
        self._setup = dumps((backend, loop_factory, initializer))
        self._initargs = dumps_initargs(initargs)
        self._context = context
        self._names = names
        self._on_results = on_results
        self._on_exit = on_exit
        # Shared memory, handed to each worker at its start: each writes its
        # own byte while a plain function holds its loop.
        self._flags = context.RawArray("B", len(names))
        self.blocked = memoryview(self._flags).cast("B")
        # Guards the links against a restart racing abort(): a worker
        # started after the pool was aborted would never be stopped.
        self._lock = threading.Lock()
        self._aborted = False
        self._retired: list[_ProcessLink] = []  # replaced links, joined by join()
        self._links = [self._start(index) for index in range(len(names))]

    def _start(self, index: int) -> _ProcessLink:
        context = self._context
        name = self._names[index]
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(
            target=run_process_worker,
            args=(child_end, self._setup, self._initargs, self._flags, index),
            name=f"aplex-{name}",
        )
        try:
            process.start()
        except Exception as exc:
            parent_end.close()
            child_end.close()
            if isinstance(self._initargs, bytes) or isinstance(exc, OSError):
                raise
            raise TypeError(
                f"initargs cannot be passed to a worker process "
                f"({context.get_start_method()} start method): {exc}"
            ) from exc
        child_end.close()
        return _ProcessLink(index, name, process, parent_end, self._on_results, self._on_exit)

    def put(self, index: int, items: list[Any]) -> None:
        if RESTART in items:
            self._put_restarting(index, items)
        else:
            self._links[index].put(items)

    def _put_restarting(self, index: int, items: list[Any]) -> None:
        """Put items with RESTART markers among them: those before a marker
        go to the worker it replaces (dead: they are dropped)."""
        while RESTART in items:
            cut = items.index(RESTART)
            if cut:
                self._links[index].put(items[:cut])
            items = items[cut + 1 :]
            with self._lock:
                if self._aborted:
                    return
                self.blocked[index] = 0  # the dead worker may have died blocked
                try:
                    link = self._start(index)
                except Exception as exc:
                    # Reported as a death before readiness: the dispatcher
                    # decides whether to try again.
                    failed = True
                    error: BaseException = exc
                else:
                    failed = False
                    self._retired.append(self._links[index])
                    self._links[index] = link
            if failed:
                self._on_exit(index, error)
                return
        if items:
            self._links[index].put(items)

    def abort(self) -> None:
        # SIGKILL, not SIGTERM: a work may have replaced the SIGTERM handler,
        # and a broken pool owes its running works nothing.
        with self._lock:
            self._aborted = True
            links = list(self._links)
        for link in links:
            _kill(link.process)

    def join(self) -> None:
        # A link may be replaced while its predecessor is joined: loop until
        # every link known has been joined.
        joined: set[int] = set()
        while True:
            with self._lock:
                links = [link for link in (*self._retired, *self._links) if id(link) not in joined]
            if not links:
                return
            for link in links:
                link.join()
                joined.add(id(link))


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
                # Too big to write from the caller's thread without risking
                # to block it: the feeder writes it, pickled already.
                items = [Pickled(data)]
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
            del items  # not kept while waiting for the next
            with self._lock:
                self._writing = False
                if self._outbox:
                    self._ready.notify()

    def _send(self, items: list[Any]) -> None:
        batch: list[Any] = []
        for item in [*items, None]:
            if item is not None and type(item) is not Pickled:
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
            error = ProcessExit(exitcode)
        self._on_exit(self.index, error)

    def _read_results(self) -> None:
        connection = self._connection
        while True:
            try:
                data = connection.recv_bytes()
            except (EOFError, OSError):
                return  # the worker has exited: _read() reaps it
            results = loads(data)
            # A worker's report of tasks started, or of being ready, ends no work.
            ended = len(results) - (type(results[-1]) in _ENDS_NO_WORK)
            with self._lock:
                self._in_flight -= ended
            self._on_results(self.index, results)
            del data, results  # not kept while waiting for the next

    def join(self) -> None:
        if threading.current_thread() is not self._reader:
            self._reader.join()


def _kill(process: Any) -> None:
    try:
        process.kill()
    except ValueError:
        pass  # already reaped and closed by its reader
