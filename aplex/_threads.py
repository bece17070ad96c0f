"""Thread workers: each a thread of this process running its own event loop.

Thread workers share the parent's memory, so nothing is pickled: a channel
is a list behind a lock, and the worker's loop is woken through its own
thread-safe call only when the list stops being empty (once per sleep, not
per work). Results are handed to the dispatcher on the worker's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import Any

from ._worker.channel import ThreadChannel
from ._worker.messages import ABORT, RESTART
from ._worker.serve import serve
from .backends import Backend

# How workers report, to the dispatcher: results by batch, and their exit.
OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]

# How long a constructor that failed waits for each thread it had started:
# they exit at once unless an initializer blocks them, and are daemon
# threads, left behind after that.
_START_FAILURE_WAIT = 1.0


class ThreadKind:
    """Thread workers, as an executor is composed of them."""

    #: What the worker handles are called: "ThreadWorker-0", ...
    name = "Thread"
    in_process = True

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
    ) -> ThreadWorkers:
        """Start one worker thread per name."""
        return ThreadWorkers(
            names,
            backend=backend,
            loop_factory=loop_factory,
            initializer=initializer,
            initargs=initargs,
            on_results=on_results,
            on_exit=on_exit,
        )


class ThreadWorkers:
    """A pool of worker threads, each running its own event loop.

    The threads are daemon threads, so that the interpreter never waits for
    one left behind by :meth:`stop_now`; on a normal exit the pool's exit
    hook (see :mod:`aplex._lifecycle`) waits for them instead.
    """

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
        self.blocked = memoryview(bytearray(len(names)))
        self._names = names
        self._serve = partial(serve, initializer=initializer, initargs=initargs)
        self._backend = backend
        self._loop_factory = loop_factory
        self._on_results = on_results
        self._on_exit = on_exit
        # Threads not yet exited, those no longer waited for, and those
        # exited; join() waits on this condition rather than on the threads,
        # so that a thread left behind stops holding up a join already
        # waiting on it.
        # Taken as the plain lock, never through the condition: Condition's
        # __enter__ is Python code, and a Ctrl-C landing in it once the lock
        # is held would leave the lock held for good (shutdown() takes it on
        # the main thread, outside any deferred section).
        self._exits_lock = threading.Lock()
        self._exits = threading.Condition(self._exits_lock)
        self._running: set[threading.Thread] = set()
        self._left: set[threading.Thread] = set()
        self._exited: list[threading.Thread] = []
        self._reporting = True
        # Guards the workers against a restart racing abort() or stop_now():
        # a worker started after the pool was stopped would never be.
        self._lock = threading.Lock()
        self._no_restarts = False
        self._channels: list[ThreadChannel] = []
        self._threads: list[threading.Thread] = []  # each index's current thread
        try:
            for index in range(len(names)):
                channel, thread = self._start(index)
                self._channels.append(channel)
                self._threads.append(thread)
        except BaseException:
            # Too many threads, or Ctrl-C: the threads already started must
            # not outlive the constructor that failed.
            self._reporting = False
            for channel in self._channels:
                channel.stop_now()
            for thread in self._threads:
                if thread.is_alive():
                    thread.join(_START_FAILURE_WAIT)
            raise

    def _start(self, index: int) -> tuple[ThreadChannel, threading.Thread]:
        channel = ThreadChannel(partial(self._on_results, index), self.blocked[index : index + 1])
        thread = threading.Thread(
            target=self._run, args=(index, channel), name=f"aplex-{self._names[index]}", daemon=True
        )
        with self._exits_lock:
            self._running.add(thread)
        try:
            thread.start()
        except BaseException:
            channel.stop_now()  # if it started all the same, it ends at once
            if not thread.is_alive():  # it never ran: nothing to wait for
                with self._exits_lock:
                    self._running.discard(thread)
                    self._exits.notify_all()
            raise
        return channel, thread

    def put(self, index: int, items: list[Any]) -> None:
        while RESTART in items:
            # Items before the marker went to the dead worker: dropped.
            cut = items.index(RESTART)
            self._channels[index].put(items[:cut])
            items = items[cut + 1 :]
            with self._lock:
                if self._no_restarts:
                    return
                self.blocked[index] = 0
                try:
                    self._channels[index], self._threads[index] = self._start(index)
                except Exception as exc:  # reported as a death before readiness
                    error: BaseException | None = exc
                else:
                    error = None
            if error is not None:
                self._on_exit(index, error)
                return
        self._channels[index].put(items)

    def _last_workers(self) -> tuple[list[ThreadChannel], list[threading.Thread]]:
        """Start no worker from now on; return the channels and threads to stop."""
        with self._lock:
            self._no_restarts = True
            return list(self._channels), list(self._threads)

    def abort(self) -> None:
        # A thread cannot be killed: its coroutine works are cancelled, and a
        # running plain function is left to return.
        channels, _ = self._last_workers()
        for channel in channels:
            channel.put([ABORT])

    def stop_now(self, busy: Collection[int]) -> None:
        channels, threads = self._last_workers()
        for channel in channels:
            channel.stop_now()
        self._leave([threads[index] for index in busy])

    def kill_remaining(self) -> None:
        # Threads cannot be killed: those still running are left behind.
        with self._exits_lock:
            running = list(self._running)
        self._leave(running)

    def join(self, timeout: float | None = None) -> bool:
        # A worker does not wait for itself: a cancelled block of a work's
        # own stops its pool from that worker's thread.
        current = threading.current_thread()
        try:
            with self._exits_lock:
                if not self._exits.wait_for(
                    lambda: self._running <= self._left | {current}, timeout
                ):
                    return False
                exited, self._exited = self._exited, []
        except RuntimeError as exc:
            # Ctrl-C landed inside Condition.wait() after it released the
            # lock and before its own try block (seen on Python 3.10): the
            # with block's release then fails on the released lock, and
            # would hide the KeyboardInterrupt that the caller must get.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None
            raise
        for thread in exited:
            if thread is not current:
                thread.join()  # it has reported its exit: only returning is left
        return True

    def runs_current_thread(self) -> bool:
        current = threading.current_thread()
        with self._exits_lock:
            return current in self._running

    def signal_all(self, *, kill: bool) -> None:
        # Thread executors do not offer terminate_workers() or kill_workers().
        raise NotImplementedError("a thread cannot be terminated or killed")

    def _leave(self, threads: Iterable[threading.Thread]) -> None:
        with self._exits_lock:
            self._left.update(threads)
            self._exits.notify_all()

    def _exited_now(self, thread: threading.Thread) -> None:
        with self._exits_lock:
            self._running.discard(thread)
            self._exited.append(thread)
            self._exits.notify_all()

    def _run(self, index: int, channel: ThreadChannel) -> None:
        error: BaseException | None = None
        try:
            self._backend.run(partial(self._serve, channel), loop_factory=self._loop_factory)
        except BaseException as exc:  # reported to the dispatcher: it breaks or replaces
            error = exc
        finally:
            channel.close()
            if self._reporting:
                self._on_exit(index, error)
            self._exited_now(threading.current_thread())
