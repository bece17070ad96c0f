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
import time
from collections.abc import Callable, Collection
from typing import Any

from ._exceptions import ProcessExit
from ._worker.messages import ABORT, TasksStarted, WorkItem
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


# The largest batch put() writes from the caller's thread; well below a
# pipe's buffer, so that the write cannot block even if the worker were
# slow to read. Larger batches go through the feeder thread.
_DIRECT_WRITE_MAX = 16 * 1024

# How long a constructor that failed waits for each worker it had started
# to be reaped (they are killed first, so this is rarely more than a few ms).
_START_FAILURE_WAIT = 5.0


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
        setup = dumps((backend, loop_factory, initializer))
        sent_initargs = dumps_initargs(initargs)
        # Shared memory, handed to each worker at its start: each writes its
        # own byte while a plain function holds its loop.
        flags = context.RawArray("B", len(names))
        self.blocked = memoryview(flags).cast("B")
        self._links: list[_ProcessLink] = []
        try:
            for index, name in enumerate(names):
                parent_end, child_end = context.Pipe(duplex=True)
                process = context.Process(
                    target=run_process_worker,
                    args=(child_end, setup, sent_initargs, flags, index),
                    name=f"aplex-{name}",
                )
                try:
                    process.start()
                except BaseException as exc:
                    # A child started before the failure (Ctrl-C while it
                    # starts) sees its pipe closed and exits on its own; one
                    # whose pid is known is also killed and reaped here.
                    parent_end.close()
                    child_end.close()
                    if process.pid is not None:
                        process.kill()
                        process.join(_START_FAILURE_WAIT)
                    if (
                        not isinstance(exc, Exception)
                        or isinstance(sent_initargs, bytes)
                        or isinstance(exc, OSError)
                    ):
                        raise
                    raise TypeError(
                        f"initargs cannot be passed to a worker process "
                        f"({context.get_start_method()} start method): {exc}"
                    ) from exc
                child_end.close()
                link = _ProcessLink(index, name, process, parent_end, on_results, on_exit)
                self._links.append(link)
                link.start()
        except BaseException:
            # Too many open files, a fork that failed, or Ctrl-C: the workers
            # already started must not outlive the constructor that failed.
            for link in self._links:
                link.discard()
            raise

    def put(self, index: int, items: list[Any]) -> None:
        self._links[index].put(items)

    def abort(self) -> None:
        # SIGKILL, not SIGTERM: a work may have replaced the SIGTERM handler,
        # and a broken pool owes its running works nothing.
        for link in self._links:
            _kill(link.process)

    def stop_now(self, busy: Collection[int]) -> None:
        for link in self._links:
            if link.index in busy:
                _kill(link.process)  # its plain function would not let it answer
            else:
                link.stop_now()

    def kill_remaining(self) -> None:
        self.abort()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for link in self._links:
            if not link.join(None if deadline is None else max(0.0, deadline - time.monotonic())):
                return False
        return True

    def runs_current_thread(self) -> bool:
        return any(link.runs_current_thread() for link in self._links)


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
        self._stopped = False  # by stop_now(): nothing more is sent but the stop
        self._reporting = True  # False once discarded: its exit is nobody's news
        self._feeder = threading.Thread(target=self._feed, name=f"aplex-{name}-feeder")
        self._reader = threading.Thread(target=self._read, name=f"aplex-{name}-reader")
        self._reader_started = False
        self._reader_done = threading.Event()

    def start(self) -> None:
        self._feeder.start()
        self._reader_started = True
        try:
            self._reader.start()
        except RuntimeError:  # no thread could be made: it never ran
            self._reader_started = False
            raise

    def discard(self) -> None:
        """Kill the worker and end the link's threads, reporting nothing: the
        pool's constructor failed."""
        self._reporting = False
        _kill(self.process)
        if self._reader_started:
            # Even if Ctrl-C cut its start() short, it runs: it reaps the
            # worker and ends the feeder. (Joined only once it has surely
            # started: join() raises before that.)
            if self._reader_done.wait(_START_FAILURE_WAIT):
                self._reader.join(_START_FAILURE_WAIT)
            return
        with self._lock:
            self._closing = True
            self._ready.notify()
        if self._feeder.is_alive():
            self._feeder.join(_START_FAILURE_WAIT)
        self.process.join(_START_FAILURE_WAIT)
        self._connection.close()

    def stop_now(self) -> None:
        """Replace the items not yet sent with a stop at once, and send
        nothing more: the dispatcher has ended their works, and a work sent
        after the stop must not run."""
        with self._lock:
            if self._closing or self._stopped:
                return
            self._stopped = True
            self._outbox[:] = [ABORT]
            self._ready.notify()

    def runs_current_thread(self) -> bool:
        return threading.current_thread() in (self._feeder, self._reader)

    def put(self, items: list[Any]) -> None:
        works = sum(isinstance(item, WorkItem) for item in items)
        with self._lock:
            if self._closing or self._stopped:
                return  # exited (the dispatcher learns it from on_exit), or stopped
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
            # Works put while this one was written queued behind it; none
            # goes after a stop.
            if not self._stopped:
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
            self._read_until_exit()
        finally:
            self._reader_done.set()

    def _read_until_exit(self) -> None:
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
        if self._reporting:
            self._on_exit(self.index, error)

    def _read_results(self) -> None:
        connection = self._connection
        while True:
            try:
                data = connection.recv_bytes()
            except (EOFError, OSError):
                return  # the worker has exited: _read() reaps it
            results = loads(data)
            # A worker's report of tasks started ends no work.
            ended = len(results) - (type(results[-1]) is TasksStarted)
            with self._lock:
                self._in_flight -= ended
            self._on_results(self.index, results)
            del data, results  # not kept while waiting for the next

    def join(self, timeout: float | None) -> bool:
        """Wait until the worker has exited and been reaped; False on timeout."""
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout)
        return not self._reader.is_alive() or threading.current_thread() is self._reader


def _kill(process: Any) -> None:
    try:
        process.kill()
    except ValueError:
        pass  # already reaped and closed by its reader
