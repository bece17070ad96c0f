"""Thread workers: each a thread of this process running its own event loop.

Thread workers share the parent's memory, so nothing is pickled: a channel
is a list behind a lock, and the worker's loop is woken through its own
thread-safe call only when the list stops being empty (once per sleep, not
per work). Results are handed to the dispatcher on the worker's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from ._worker.channel import ThreadChannel
from ._worker.messages import ABORT, RESTART
from ._worker.serve import serve
from .backends import Backend

# How workers report, to the dispatcher: results by batch, and their exit.
OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]


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
        self.blocked = memoryview(bytearray(len(names)))
        self._names = names
        self._run = partial(
            _run_thread_worker,
            backend=backend,
            loop_factory=loop_factory,
            initializer=initializer,
            initargs=initargs,
            on_exit=on_exit,
        )
        self._on_results = on_results
        self._on_exit = on_exit
        # Guards the workers against a restart racing abort(): a worker
        # started after the pool was aborted would never be stopped.
        self._lock = threading.Lock()
        self._aborted = False
        self._channels: list[ThreadChannel] = []
        self._threads: list[threading.Thread] = []  # every one started, for join()
        for index in range(len(names)):
            self._channels.append(self._start(index))

    def _start(self, index: int) -> ThreadChannel:
        channel = ThreadChannel(partial(self._on_results, index), self.blocked[index : index + 1])
        thread = threading.Thread(
            target=self._run, args=(index, channel), name=f"aplex-{self._names[index]}"
        )
        thread.start()
        self._threads.append(thread)
        return channel

    def put(self, index: int, items: list[Any]) -> None:
        while RESTART in items:
            # Items before the marker went to the dead worker: dropped.
            cut = items.index(RESTART)
            self._channels[index].put(items[:cut])
            items = items[cut + 1 :]
            with self._lock:
                if self._aborted:
                    return
                self.blocked[index] = 0
                try:
                    self._channels[index] = self._start(index)
                except Exception as exc:  # reported as a death before readiness
                    error: BaseException | None = exc
                else:
                    error = None
            if error is not None:
                self._on_exit(index, error)
                return
        self._channels[index].put(items)

    def abort(self) -> None:
        # A thread cannot be killed: its coroutine works are cancelled, and a
        # running plain function is left to return.
        with self._lock:
            self._aborted = True
            channels = list(self._channels)
        for channel in channels:
            channel.put([ABORT])

    def join(self) -> None:
        current = threading.current_thread()
        joined = 0
        while True:
            # A worker may be replaced while another is joined.
            with self._lock:
                threads = self._threads[joined:]
            if not threads:
                return
            for thread in threads:
                if thread is not current:  # shutdown(wait=True) called from a work
                    thread.join()
            joined += len(threads)


def _run_thread_worker(
    index: int,
    channel: ThreadChannel,
    *,
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
