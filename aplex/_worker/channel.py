"""A mailbox between threads of one process: one side puts, a worker's loop receives.

A thread worker's channel to its parent (see :mod:`aplex._threads`), and, in
a Ray actor, the channel between the actor's calls and the worker's loop
(see :mod:`.ray_actor`). Items are a list behind a lock, and the worker's
loop is woken through its own thread-safe call only when the list stops
being empty (once per sleep, not per item).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio

from ..backends import current_backend
from .messages import ABORT


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
            self._add(items)

    def stop_now(self) -> None:
        """Replace the items the worker has not received yet with a stop at
        once, and take no more (parent side): the parent has ended their
        works, and a work put after the stop must not run."""
        with self._lock:
            self._items.clear()
            self._add([ABORT])
            self._closed = True

    def _add(self, items: list[Any]) -> None:
        if self._closed:
            return  # the worker has exited, or been stopped: the parent knows
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
