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
from ._worker.messages import ABORT
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
        self._channels = [
            ThreadChannel(partial(on_results, index), self.blocked[index : index + 1])
            for index in range(len(names))
        ]
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
