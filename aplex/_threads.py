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

import anyio

from ._worker.messages import ABORT
from ._worker.serve import serve
from .backends import Backend, current_backend

# How workers report, to the dispatcher: results by batch, and their exit.
OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]


class ThreadChannel:
    """A thread worker's mailbox: the parent puts, the worker's loop receives."""

    def __init__(self, deliver: Callable[[list[Any]], None], blocked: memoryview):
        #: The endpoint's flag: 1 while the worker's loop runs a plain function.
        self.blocked = blocked
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
                try:
                    self._call_soon(wake)
                except RuntimeError:
                    # Its loop has closed (it was waiting when it was told to
                    # stop) and it is exiting: the dispatcher learns it from
                    # on_exit. A cancel request may well come after a stop.
                    pass

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
