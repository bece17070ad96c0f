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

**Fork.** A process forked from the parent (a worker started with
``mp_context="fork"``, the program's own ``os.fork()``, a multiprocessing
fork child) inherits a copy of every parent end of every pool's pipes.
:func:`_forget_after_fork` closes them in the child at once: a worker that
held a copy of its own parent end, or of another pool's, would never see the
parent's death as the end of its pipe.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from ._exceptions import ProcessExit
from ._interrupts import INTERRUPTED, interruptible
from ._worker.messages import (
    ABORT,
    BATCH_BYTES,
    CONTROLS,
    KILL,
    OUT_OF_BAND_BYTES,
    RELOAD,
    RESTART,
    Ready,
    ReloadRequest,
    TasksStarted,
    WorkItem,
    work_size_hint,
)
from ._worker.pickling import (
    dumps,
    dumps_controls,
    dumps_initargs,
    dumps_works,
    dumps_works_or_none,
    loads,
)
from ._worker.process import FORK_SERVER, run_process_worker
from ._worker.wire import OUT_OF_BAND, receive, send
from .backends import Backend

# How workers report, to the dispatcher: results by batch, and their exit.
OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]


_ENDS_NO_WORK = (TasksStarted, Ready)

# The largest batch put() writes from the caller's thread; well below a
# pipe's buffer, so that the write cannot block even if the worker were
# slow to read. Larger batches go through the feeder thread.
_DIRECT_WRITE_MAX = 16 * 1024


class _Pickled(NamedTuple):
    """A batch that put() pickled and left for the feeder to write."""

    data: bytes
    buffers: list[Any]  # out of band (see aplex._worker.wire)


def _dumps_batch(items: list[Any], buffers: list[Any] | None) -> bytes | None:
    # For interruptible(), which passes arguments by position.
    return dumps_works_or_none(items, buffers=buffers)


# Every pool's parent ends and worker processes, for _forget_after_fork().
# A parent end is added before the worker that must not inherit it is
# started, as a fork-start worker is forked from this very process.
_parent_ends: weakref.WeakSet[Any] = weakref.WeakSet()
_worker_processes: weakref.WeakSet[Any] = weakref.WeakSet()
# Reaping a worker reads its exit code once from a pipe when the fork server
# started it, and Process.start() first polls every child of this process:
# two threads reading one exit code at once leave one of them with end of
# file, which multiprocessing reports as exit code 255, and a clean exit
# looks like a crash. Starting (a replacement, a recycled worker's
# successor) and reaping take this lock; waiting for an exit does not.
_children_lock = threading.Lock()
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
    # A fork server skips a module it cannot import.
    missing = [name for name in _worker_modules(backend) if name not in preload]
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
        self._method = getattr(context, "get_start_method", lambda: None)()
        if self._method == "fork":
            _import_before_fork(backend)
        # Guards the links against a restart racing abort() or stop_now(): a
        # worker started after the pool was stopped would never be.
        self._lock = threading.Lock()
        self._no_restarts = False
        self._retired: list[_ProcessLink] = []  # replaced links, joined by join()
        self._links: list[_ProcessLink] = []
        try:
            for index in range(len(names)):
                self._links.append(self._start(index))
        except BaseException:
            # Too many open files, a fork that failed, or Ctrl-C: the workers
            # already started must not outlive the constructor that failed.
            for link in self._links:
                link.discard()
            raise

    def _start(self, index: int) -> _ProcessLink:
        context = self._context
        name = self._names[index]
        parent_end, child_end = context.Pipe(duplex=True)
        _parent_ends.add(parent_end)
        process = context.Process(
            target=run_process_worker,
            args=(
                child_end,
                self._setup,
                self._initargs,
                self._flags,
                index,
                # Asked for each start: a replacement may be started from
                # another thread than the first workers.
                _death_signal_parent(self._method),
            ),
            name=f"aplex-{name}",
        )
        try:
            with _children_lock:
                process.start()
        except BaseException as exc:
            # A child started before the failure (Ctrl-C while it starts)
            # sees its pipe closed and exits on its own; one whose pid is
            # known is also killed and reaped here.
            parent_end.close()
            child_end.close()
            if process.pid is not None:
                process.kill()
                process.join(_START_FAILURE_WAIT)
            if (
                not isinstance(exc, Exception)
                or isinstance(self._initargs, bytes)
                or isinstance(exc, OSError)
            ):
                raise
            raise TypeError(
                f"initargs cannot be passed to a worker process "
                f"({context.get_start_method()} start method): {exc}"
            ) from exc
        _worker_processes.add(process)
        child_end.close()
        link = _ProcessLink(index, name, process, parent_end, self._on_results, self._on_exit)
        try:
            link.start()
        except BaseException:
            link.discard()
            raise
        return link

    def put(self, index: int, items: list[Any]) -> None:
        if RESTART in items or KILL in items:
            self._put_marked(index, items)
        else:
            self._links[index].put(items)

    def _put_marked(self, index: int, items: list[Any]) -> None:
        """Put items with markers among them, in order: KILL kills the
        current worker; RESTART starts a new one in place of the dead one
        (the items before it went to the dead one: they are dropped)."""
        batch: list[Any] = []
        for item in items:
            if item is not RESTART and item is not KILL:
                batch.append(item)
                continue
            if batch:
                self._links[index].put(batch)
                batch = []
            if item is KILL:
                _kill(self._links[index].process)
            elif not self._restart(index):
                return
        if batch:
            self._links[index].put(batch)

    def _restart(self, index: int) -> bool:
        """Start a new worker at ``index``; False if none may be started, or
        if it failed to start (reported as a death before readiness: the
        dispatcher decides whether to try again)."""
        with self._lock:
            if self._no_restarts:
                return False
            self.blocked[index] = 0  # the dead worker may have died blocked
            try:
                link = self._start(index)
            except Exception as exc:
                error: BaseException = exc
            else:
                self._retired.append(self._links[index])
                self._links[index] = link
                return True
        self._on_exit(index, error)
        return False

    def _last_links(self) -> list[_ProcessLink]:
        """Start no worker from now on; return the links to stop."""
        with self._lock:
            self._no_restarts = True
            return list(self._links)

    def abort(self) -> None:
        # SIGKILL, not SIGTERM: a work may have replaced the SIGTERM handler,
        # and a broken pool owes its running works nothing.
        for link in self._last_links():
            _kill(link.process)

    def stop_now(self, busy: Collection[int]) -> None:
        for link in self._last_links():
            if link.index in busy:
                _kill(link.process)  # its plain function would not let it answer
            else:
                link.stop_now()

    def kill_remaining(self) -> None:
        self.abort()

    def signal_all(self, *, kill: bool) -> None:
        for link in self._last_links():
            if kill:
                _kill(link.process)
            else:
                _terminate(link.process)

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        # A link may be replaced while its predecessor is joined: loop until
        # every link known has been joined.
        joined: set[int] = set()
        while True:
            with self._lock:
                links = [link for link in (*self._retired, *self._links) if id(link) not in joined]
            if not links:
                return True
            for link in links:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not link.join(left):
                    return False
                joined.add(id(link))

    def runs_current_thread(self) -> bool:
        with self._lock:
            links = [*self._retired, *self._links]
        return any(link.runs_current_thread() for link in links)


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
        # Works the worker could not load in a batch with others, to be
        # sent again each on its own (see LoadFailure).
        self._alone: set[int] = set()
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
        if multiprocessing.connection.wait([self.process.sentinel], _START_FAILURE_WAIT):
            with _children_lock:
                self.process.join()
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
            # its works through the feeder, which batches them. So do works
            # to be sent alone among others (_send() sets them apart).
            alone = self._alone
            if (
                self._writing
                or self._outbox
                or self._in_flight > works
                or (alone and len(items) > 1)
            ):
                self._outbox.extend(items)
                self._ready.notify()
                return
            self._writing = True
        if alone:
            alone.discard(getattr(items[0], "work_id", -1))  # goes alone now
        # Pickling runs the arguments' __reduce__: Ctrl-C may stop it (see
        # aplex._interrupts), and so may whatever it raises beyond an
        # Exception. Either way the feeder gets the items, pickles them
        # again, and fails alone a work that still cannot be; nothing may
        # leave the writing flag set, or this worker would get nothing more.
        buffers: list[Any] | None = [] if OUT_OF_BAND else None
        try:
            data = interruptible(_dumps_batch, items, buffers)
        except BaseException:
            data = None  # by __reduce__ itself, on a thread no signal reaches
        if data is INTERRUPTED:
            data = None
        try:
            if data is not None and not buffers and len(data) <= _DIRECT_WRITE_MAX:
                self._connection.send_bytes(data)
                items = []
            elif data is not None:
                # Too big to write from the caller's thread without risking
                # to block it: the feeder writes it, pickled already.
                items = [_Pickled(data, buffers or [])]
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
        # Works and control items go in batches of their own (see
        # dumps_works_or_none), the works first: a control item is for a
        # work sent before it, or the last word (stop).
        works: list[Any] = []
        controls: list[Any] = []
        size = 0  # of the works' payloads (see BATCH_BYTES)
        alone = self._alone
        for item in [*items, None]:
            if item is None or type(item) is _Pickled:
                self._send_batch(works, controls, size)
                works, controls, size = [], [], 0
                if item is not None:
                    send(self._connection, item.data, item.buffers)
            elif isinstance(item, CONTROLS):
                controls.append(item)
            elif alone and item.work_id in alone:
                alone.discard(item.work_id)
                self._send_batch([item], [])
            else:
                works.append(item)
                size += work_size_hint(item)
                if size >= BATCH_BYTES:
                    self._send_batch(works, [], size)
                    works, size = [], 0

    def _send_batch(
        self, works: list[Any], controls: list[Any], size: int = OUT_OF_BAND_BYTES
    ) -> None:
        """Send ``works`` (``size`` as :func:`work_size_hint` adds it up), then
        ``controls``."""
        if works:
            buffers: list[Any] | None = [] if OUT_OF_BAND else None
            large = size >= OUT_OF_BAND_BYTES
            data, failed = dumps_works(works, buffers=buffers, large=large)
            if failed:
                with self._lock:
                    self._in_flight -= len(failed)
                self._on_results(self.index, failed)
            if data is not None:
                send(self._connection, data, buffers or ())
        if controls:
            self._connection.send_bytes(dumps_controls(controls))

    def _read(self) -> None:
        try:
            self._read_until_exit()
        finally:
            self._reader_done.set()

    def _read_until_exit(self) -> None:
        try:
            self._read_results()
        except BaseException as exc:
            # A fault of ours (a result that cannot be loaded fails its own
            # work: see LoadFailure): whatever stops the reader breaks the
            # pool, as its works' results could never arrive.
            self._failure = self._failure or exc
            _kill(self.process)
        multiprocessing.connection.wait([self.process.sentinel])
        with _children_lock:
            self.process.join()
        with self._lock:
            self._closing = True
            self._ready.notify()
        self._feeder.join()
        self._connection.close()
        exitcode = self.process.exitcode  # known since join(): no second read
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
                data, buffers = receive(connection)
            except (EOFError, OSError):
                return  # the worker has exited: _read() reaps it
            results = loads(data, buffers)
            if type(results) is ReloadRequest:
                # Answered, for now: the dispatcher sends them again, and
                # they go alone.
                self._alone.update(results.ids)
                results = [(work_id, RELOAD, None) for work_id in results.ids]
            # A worker's report of tasks started, or of being ready, ends no work.
            ended = len(results) - (type(results[-1]) in _ENDS_NO_WORK)
            with self._lock:
                self._in_flight -= ended
            self._on_results(self.index, results)
            del data, buffers, results  # not kept while waiting for the next

    def join(self, timeout: float | None) -> bool:
        """Wait until the worker has exited and been reaped; False on timeout."""
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout)
        return not self._reader.is_alive() or threading.current_thread() is self._reader


def _worker_modules(backend: Backend) -> list[str]:
    """What a worker imports first thing: the worker's side, the backend it
    unpickles, AnyIO's module for it, and on Linux ctypes (for the
    parent-death signal)."""
    names = ["aplex._worker.process", type(backend).__module__, f"anyio._backends._{backend.name}"]
    if sys.platform == "linux":
        names.append("ctypes")
    return names


def _import_before_fork(backend: Backend) -> None:
    """Import here what a forked worker imports first thing.

    A thread of this process may be importing one of them right now (a
    thread worker starting its loop): a child forked meanwhile inherits the
    module's import lock held by a thread it does not have, and hangs on it.
    Imported here first, the child finds them loaded.
    """
    for name in _worker_modules(backend):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a backend of another library: the worker imports what it needs


def _death_signal_parent(method: str | None) -> int | None:
    """What the workers' OS parent is, for their parent-death signal
    (:func:`aplex._worker.process.die_with_parent`).

    The signal comes when the *thread* that forked the worker ends, not its
    process: it is asked for only when that thread lives as long as the
    process that must not outlive the workers. Returns this process's pid for
    a worker forked (or spawned) by the main thread, FORK_SERVER for one
    forked by the fork server (single-threaded, and gone once every process
    that used it is), and None otherwise: a pool made in another thread (one
    of ``anyio.to_thread``'s, a thread worker...), which may end long before
    the pool, or an unknown start method. Those workers rely on their watch
    thread alone.
    """
    if method == "forkserver":
        return FORK_SERVER
    if method in ("fork", "spawn") and threading.current_thread() is threading.main_thread():
        return os.getpid()
    return None


def _forget_after_fork() -> None:
    """In a forked child: let go of the parent's worker processes.

    Their parent ends are closed (see the module doc); they leave
    multiprocessing's own list of children, whose exit handler would join
    them (they are not this process's children: it fails) or terminate them;
    and the fork server the parent started is forgotten, so that a pool made
    here starts a server of its own: the parent's is not this process's
    child, and multiprocessing would fail to check on it
    (``ChildProcessError``).
    """
    global _children_lock
    _children_lock = threading.Lock()  # a thread of the parent may have held it
    for connection in list(_parent_ends):
        connection.close()
    _parent_ends.clear()
    # multiprocessing has no public way to disown a child.
    children: set[Any] = getattr(multiprocessing.process, "_children", set())
    children.difference_update(_worker_processes)
    _worker_processes.clear()
    _forget_fork_server()


def _forget_fork_server() -> None:
    # The standard library leaves a forked child with its parent's fork
    # server state, which it cannot use (ensure_running() waits on the
    # server's pid); nothing public resets it. The lock may have been held
    # by a thread of the parent.
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return  # none started, or this is the fork server's own child
    alive = server._forkserver_alive_fd
    server._lock = threading.Lock()
    for name in ("_forkserver_pid", "_forkserver_address", "_forkserver_alive_fd"):
        setattr(server, name, None)
    if alive is not None:
        # The server lives while a copy of this end is open: the parent's
        # server must not live on for this child.
        try:
            os.close(alive)
        except OSError:
            pass


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_forget_after_fork)


def _kill(process: Any) -> None:
    try:
        process.kill()
    except ValueError:
        pass  # already reaped and closed by its reader


def _terminate(process: Any) -> None:
    try:
        process.terminate()
    except ValueError:
        pass  # already reaped and closed by its reader
