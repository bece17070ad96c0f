"""What runs in a worker process: read the pipe, run :func:`serve`, answer.

The parent's side is :mod:`aplex._processes`. This module, like the rest of
:mod:`aplex._worker`, imports nothing of the front end, so a worker process
(and the fork server that forks them) loads only what it needs.

**Dying with the parent.** A worker must not outlive its parent, even one
killed outright, and even while a plain work holds the GIL in a C call. Two
guards: the OS's parent-death signal where there is one (Linux), which the
kernel sends whatever the worker does, and a watch thread on the pipe, which
needs the GIL but works everywhere (see :func:`die_with_parent`).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import sniffio

from .messages import BATCH_BYTES, NOT_LOADED, CancelItem, StopItem, WorkerFailure
from .pickling import dumps_reload, dumps_results, load_failure, loads, loads_initargs, work_ids
from .serve import serve
from .wire import OUT_OF_BAND, receive, send

# Allocations between young collections in a worker process (Python's
# default is 700): higher means fewer collections, and more cyclic garbage
# waiting a little longer to be freed.
_WORKER_GC_THRESHOLD = 50_000

#: The worker's OS parent is the fork server, whatever its pid (see
#: run_process_worker's ``os_parent``).
FORK_SERVER = 0
# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1


class _PipeEndpoint:
    """A process worker's end of its pipe, as :func:`serve` reads it.

    A batch that cannot be loaded (see
    :class:`~aplex._worker.messages.LoadFailure`) fails its work if it held
    one; if it held several, each is asked for again alone. Until they are
    back, the control items that come are held back: a cancel may be for
    one of them, and a stop must not end the worker before they have run.
    """

    def __init__(self, connection: Any, blocked: memoryview):
        self._connection = connection
        self._fileno = connection.fileno()
        #: This worker's byte of the pool's shared flags (see serve.Endpoint).
        self.blocked = blocked
        self._reloading: set[int] = set()  # works asked for again
        self._held: list[Any] = []  # control items held back meanwhile
        # How receive() waits for the pipe, decided on its first call (see
        # _watch_natively); with asyncio's own reader, the future it sets.
        self._natively: bool | None = None
        self._loop: Any = None
        self._waiter: Any = None
        # Asked after every message whether another has come: the
        # connection's own poll() makes, fills and closes a selector each
        # time, which cost a round trip about what reading the message did.
        self._poller: Any = None
        if hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(self._fileno, select.POLLIN)

    async def receive(self) -> list[Any]:
        await self._wait_readable()
        connection = self._connection
        items: list[Any] = []
        size = 0
        while True:
            data, buffers = receive(connection)
            size += len(data) + sum(map(len, buffers))
            try:
                items += loads(data, buffers)
            except Exception as exc:
                self._not_loaded(data, exc)
            del buffers  # owned by the works now, or garbage
            # The works read run before more is read: large ones start
            # while the next come (see BATCH_BYTES).
            if size >= BATCH_BYTES or not self._more():
                break
        if self._reloading or self._held:
            items = self._hold_back(items)
        return items

    async def _wait_readable(self) -> None:
        if self._natively is None:
            self._natively = self._watch_natively()
        if not self._natively:
            await anyio.wait_readable(self._fileno)
            return
        while True:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            # The reader may have fired for what the last receive() read
            # (asyncio runs the callbacks a select found ready after the
            # task it woke): a read now would block the loop.
            if self._more():
                return

    def _watch_natively(self) -> bool:
        """Have an asyncio loop watch the pipe for the worker's whole life.

        ``anyio.wait_readable()`` adds the pipe to the loop's selector and
        removes it again on every wait: on a one-work round trip, about a
        quarter of the worker's CPU time (185 against 142 µs a trip, median
        of 6 paired runs). The loop's reader calls :meth:`_wake` while the
        pipe has something to read, which the worker reads at once.
        """
        if sniffio.current_async_library() != "asyncio":
            return False
        import asyncio  # here: a trio worker never loads it

        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(self._fileno, self._wake)
        except NotImplementedError:  # a loop without readers (Windows' proactor)
            return False
        self._loop = loop
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _more(self) -> bool:
        """Whether the pipe has more to read now (or has ended: the read
        then says so)."""
        if self._poller is None:
            return bool(self._connection.poll())
        return bool(self._poller.poll(0))

    def _not_loaded(self, data: bytes | memoryview, exc: Exception) -> None:
        ids = work_ids(data)
        if not ids:
            raise exc  # control items of aplex's own: a fault, which ends the worker
        if len(ids) > 1:
            self._reloading.update(ids)
            self._connection.send_bytes(dumps_reload(ids))
        else:
            self._reloading.discard(ids[0])
            self.send([(ids[0], NOT_LOADED, load_failure("work", exc))])

    def _hold_back(self, items: list[Any]) -> list[Any]:
        passed = []
        for item in items:
            if isinstance(item, (CancelItem, StopItem)):
                self._held.append(item)
            else:
                self._reloading.discard(item.work_id)
                passed.append(item)
        if not self._reloading:
            passed += self._held
            self._held = []
        return passed

    def send(self, results: list[Any]) -> None:
        buffers: list[Any] | None = [] if OUT_OF_BAND else None
        send(self._connection, dumps_results(results, buffers), buffers or ())


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
    connection: Any,
    setup: bytes,
    initargs: bytes | tuple[Any, ...],
    flags: Any,
    index: int,
    os_parent: int | None = None,
) -> None:
    """Serve the parent on ``connection``, its end of the pipe.

    Args:
        connection: This worker's end of its duplex pipe.
        setup: The pickled backend, loop factory and initializer.
        initargs: The initializer's arguments, as
            :func:`~aplex._worker.pickling.dumps_initargs` made them.
        flags: The pool's shared flags of blocked workers.
        index: This worker's place in them.
        os_parent: The pid of the process that started this one, if the
            parent-death signal may be used (see :func:`die_with_parent`);
            FORK_SERVER for "the fork server that forked it".
    """
    die_with_parent(connection.fileno(), os_parent)
    # Ctrl-C goes to the whole foreground process group; the parent decides
    # what it means for the workers, and stops them itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker forked from a thread running an event loop inherits that
    # loop's wake-up descriptor, shared with the parent's loop: a signal
    # here must not wake the parent.
    signal.set_wakeup_fd(-1)
    tune_collector()
    endpoint = _PipeEndpoint(connection, memoryview(flags).cast("B")[index : index + 1])
    try:
        backend, loop_factory, initializer = loads(setup)
        arguments = loads_initargs(initargs)
    except BaseException as exc:
        endpoint.send([WorkerFailure("initializer", exc)])
        return
    run = partial(
        backend.run, partial(serve, endpoint, initializer, arguments), loop_factory=loop_factory
    )
    try:
        if _inherits_a_running_loop():
            _run_in_new_thread(run)
        else:
            run()
    except (EOFError, OSError):
        pass  # the parent has gone away: nothing left to report to


def _inherits_a_running_loop() -> bool:
    """Whether this thread looks as if an event loop ran in it: a worker
    forked (``mp_context="fork"``) by a thread running trio inherits trio's
    record of its run, and trio refuses to start another in this thread.
    (asyncio checks the process id, and sees no loop here.)"""
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True


def _run_in_new_thread(run: Callable[[], None]) -> None:
    # A new thread has no loop of its own yet; the inherited record stays
    # behind in this one, which only waits.
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="aplex-worker-loop")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def die_with_parent(fileno: int, os_parent: int | None) -> None:
    """Have this worker end when its parent does, even killed outright.

    On Linux, the kernel sends SIGKILL to a process when the thread that
    forked it ends (``PR_SET_PDEATHSIG``), whatever the process is doing:
    the guard for a plain work that holds the GIL in a C call. As it is the
    forking *thread* that counts, the parent asks for it (``os_parent`` set)
    only when that thread lives as long as the worker's parent process: its
    main thread, or the fork server (which ends when the processes that use
    it do). A parent that died before the signal was asked for would never
    send it: the OS parent is checked right after.

    Everywhere, a watch thread ends the worker as soon as the parent's end
    of the pipe closes (the parent exited or was killed), even while a plain
    work blocks the loop, so long as it lets go of the GIL.
    """
    if os_parent is not None and sys.platform == "linux":
        if os_parent == FORK_SERVER:
            # The fork server ends once every process that used it has, its
            # end of the pipe to the worker closed; that is what the workers
            # it forked are signalled by. Read now: a server gone before this
            # line had seen the parent go, which the watch thread sees too.
            expected = os.getppid()
            _let_the_fork_server_go()
        else:
            expected = os_parent
        if _ask_parent_death_signal() and os.getppid() != expected:
            os._exit(1)  # reparented: the parent has already gone
    _watch_parent(fileno)


def _let_the_fork_server_go() -> None:
    # The fork server hands every process it forks a copy of the write end
    # of its "alive" pipe, and lives until every copy is closed: a worker
    # holding one would keep alive the server whose end is its own signal
    # to end. The worker has no use for it (a fork server it needed would be
    # started anew: it does not know this one's pid). Nothing public closes it.
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None and getattr(server, "_forkserver_pid", None) is None:
        server._forkserver_alive_fd = None  # type: ignore[union-attr]
        try:
            os.close(alive)
        except OSError:
            pass


def _ask_parent_death_signal() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0)
    except (OSError, AttributeError):
        return False  # no prctl in this C library: the watch thread alone


def _watch_parent(fileno: int) -> None:
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
