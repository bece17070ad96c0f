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
from ._worker.messages import ABORT
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
        self._channels = [
            ThreadChannel(partial(on_results, index), self.blocked[index : index + 1])
            for index in range(len(names))
        ]
        self._on_exit = on_exit
        # Workers not yet exited, and those no longer waited for; join()
        # waits on this condition rather than on the threads, so that a
        # thread left behind stops holding up a join already waiting on it.
        self._exits = threading.Condition(threading.Lock())
        self._running = set(range(len(names)))
        self._left: set[int] = set()
        self._reporting = True
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(index, channel, backend, loop_factory, initializer, initargs),
                name=f"aplex-{name}",
                daemon=True,
            )
            for index, (name, channel) in enumerate(zip(names, self._channels, strict=True))
        ]
        try:
            for thread in self._threads:
                thread.start()
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

    def put(self, index: int, items: list[Any]) -> None:
        self._channels[index].put(items)

    def abort(self) -> None:
        # A thread cannot be killed: its coroutine works are cancelled, and a
        # running plain function is left to return.
        for channel in self._channels:
            channel.put([ABORT])

    def stop_now(self, busy: Collection[int]) -> None:
        for channel in self._channels:
            channel.stop_now()
        self._leave(busy)

    def kill_remaining(self) -> None:
        # Threads cannot be killed: those still running are left behind.
        self._leave(range(len(self._threads)))

    def join(self, timeout: float | None = None) -> bool:
        # A worker does not wait for itself: a cancelled block of a work's
        # own stops its pool from that worker's thread.
        current = threading.current_thread()
        own = {index for index, thread in enumerate(self._threads) if thread is current}
        with self._exits:
            if not self._exits.wait_for(lambda: self._running <= self._left | own, timeout):
                return False
            exited = set(range(len(self._threads))) - self._running
        for index in exited:
            self._threads[index].join()  # it has reported its exit: only returning is left
        return True

    def runs_current_thread(self) -> bool:
        return threading.current_thread() in self._threads

    def _leave(self, indexes: Iterable[int]) -> None:
        with self._exits:
            self._left.update(indexes)
            self._exits.notify_all()

    def _run(
        self,
        index: int,
        channel: ThreadChannel,
        backend: Backend,
        loop_factory: Callable[[], Any] | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
    ) -> None:
        error: BaseException | None = None
        try:
            backend.run(partial(serve, channel, initializer, initargs), loop_factory=loop_factory)
        except BaseException as exc:  # reported to the dispatcher, which breaks the pool
            error = exc
        finally:
            channel.close()
            if self._reporting:
                self._on_exit(index, error)
            with self._exits:
                self._running.discard(index)
                self._exits.notify_all()
