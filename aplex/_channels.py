"""How works reach workers and results come back, one class per worker kind.

A worker pool's parent side (:class:`ThreadWorkers`) starts the workers and
puts items into their channels without ever blocking the caller; the worker
side of each channel is the endpoint that :func:`aplex._worker.serve` reads.

Thread workers share the parent's memory, so nothing is pickled: a channel
is a list behind a lock, and a socket pair whose only job is to wake the
worker's event loop when the list stops being empty (one byte per sleep, not
per work). Results are handed to the dispatcher on the worker's own thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from ._messages import ABORT
from ._worker import serve
from .backends import Backend

OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]


class ThreadChannel:
    """A thread worker's mailbox: the parent puts, the worker's loop receives."""

    def __init__(self, deliver: Callable[[list[Any]], None]):
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._asleep = False
        self._closed = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        #: The endpoint's send(): hands results over on the worker's thread.
        self.send = deliver

    def put(self, items: list[Any]) -> None:
        """Add items for the worker (parent side; never blocks)."""
        with self._lock:
            if self._closed:
                return  # the worker has exited: the dispatcher learns it from on_exit
            self._items.extend(items)
            if self._asleep:
                self._asleep = False
                self._wake_writer.send(b"\0")

    async def receive(self) -> list[Any]:
        """Wait for items (worker side)."""
        while True:
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                # Set under the lock that put() takes, so a put() after the
                # check above is sure to see it and wake us.
                self._asleep = True
            await anyio.wait_readable(self._wake_reader)
            try:
                self._wake_reader.recv(64)
            except BlockingIOError:
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake_reader.close()
            self._wake_writer.close()


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
