"""``map``: chunks of argument tuples submitted eagerly or within a buffer,
their results handed out in input order or as they complete.

Every iterator here lets go of a result as it hands it out (CPython's
``test_free_reference``), and cancels the works still in flight when it is
closed, exhausted by an error or a timeout, or dropped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future
from functools import partial
from types import TracebackType
from typing import Any

import anyio

from .futures import Completions, wait_future

SubmitChunk = Callable[[list[tuple[Any, ...]]], Future[Any]]


class MapFeed:
    """The chunks of one ``map`` call: submits them, eagerly or within a
    buffer, and hands out their futures in submission order or, when not
    ``ordered``, in the order they end."""

    def __init__(
        self,
        submit_chunk: SubmitChunk,
        arguments: Iterator[tuple[Any, ...]],
        chunksize: int,
        buffersize: int | None,
        ordered: bool = True,
    ):
        self._submit = submit_chunk
        self._chunks = iter(partial(_take, arguments, chunksize), [])
        self._lazy = buffersize is not None
        self._in_flight: dict[Future[Any], None] = {}  # in submission order
        self._completions: Completions[Future[Any]] | None = None if ordered else Completions()
        for chunk in itertools.islice(self._chunks, buffersize):
            self._send(chunk)

    def _send(self, chunk: list[tuple[Any, ...]]) -> None:
        future = self._submit(chunk)
        self._in_flight[future] = None
        if self._completions is not None:
            self._completions.watch(future, future)

    def _taken(self, future: Future[Any]) -> Future[Any]:
        del self._in_flight[future]
        if self._lazy:
            chunk = next(self._chunks, None)
            if chunk is not None:
                self._send(chunk)
        return future

    def next_future(self, timeout: float | None) -> Future[Any] | None:
        """The next chunk's future, None when there is none left; unordered,
        the next one to end (TimeoutError if none ends within ``timeout``)."""
        if not self._in_flight:
            return None
        if self._completions is None:
            return self._taken(next(iter(self._in_flight)))
        return self._taken(self._completions.next(timeout))

    async def next_future_async(self) -> Future[Any] | None:
        """As :meth:`next_future`, waiting on the running loop."""
        if not self._in_flight:
            return None
        if self._completions is None:
            return self._taken(next(iter(self._in_flight)))
        return self._taken(await self._completions.next_async())

    def cancel(self) -> None:
        """Cancel every chunk still in flight."""
        in_flight, self._in_flight = self._in_flight, {}
        for future in in_flight:
            future.cancel()


def _take(arguments: Iterator[tuple[Any, ...]], count: int) -> list[tuple[Any, ...]]:
    return list(itertools.islice(arguments, count))


def _remaining(end_time: float | None) -> float | None:
    return None if end_time is None else end_time - time.monotonic()


def iterate(feed: MapFeed, end_time: float | None) -> Iterator[Any]:
    """``map``'s results, for plain code."""
    try:
        while (future := feed.next_future(_remaining(end_time))) is not None:
            try:
                values = future.result(_remaining(end_time))
            except BaseException:
                # Out of the feed already, yet one of the remaining works:
                # a timeout or an interrupt must cancel it too.
                future.cancel()
                raise
            del future
            values.reverse()
            while values:
                yield values.pop()
    finally:
        feed.cancel()


class AsyncResults(AsyncGenerator[Any, None]):
    """``map``'s results, for asyncio and trio code.

    A class rather than an async generator: one abandoned half-way would be
    left to the event loop to finalize (trio warns of each). This one cancels
    the works still in flight when it is closed, runs into an error or a
    timeout, or is garbage-collected; ``aclosing`` is never needed.
    """

    def __init__(self, feed: MapFeed, end_time: float | None):
        self._feed: MapFeed | None = feed
        self._end_time = end_time
        self._values: list[Any] = []  # the current chunk's, reversed

    async def __anext__(self) -> Any:
        while not self._values:
            feed = self._feed
            if feed is None:
                raise StopAsyncIteration
            try:
                with anyio.fail_after(_remaining(self._end_time)):
                    future = await feed.next_future_async()
                    if future is None:
                        self._close()
                        raise StopAsyncIteration
                    self._values = await wait_future(future)
            except BaseException:
                self._close()
                raise
            self._values.reverse()
        return self._values.pop()

    async def asend(self, value: None) -> Any:
        return await self.__anext__()

    async def athrow(
        self,
        typ: type[BaseException] | BaseException,
        value: BaseException | object = None,
        traceback: TracebackType | None = None,
    ) -> Any:
        self._close()
        if isinstance(typ, BaseException):
            raise typ
        raise typ() if value is None else value  # type: ignore[misc]

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        feed, self._feed = self._feed, None
        self._values = []
        if feed is not None:
            feed.cancel()

    def __del__(self) -> None:
        self._close()
