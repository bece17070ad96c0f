"""``map``: chunks of argument tuples submitted eagerly or within a buffer,
their results handed out in input order."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import Any

import anyio

from .futures import wait_future


class MapFeed:
    """The chunks of one ``map`` call: submits them, eagerly or within a
    buffer, and hands their futures out in order."""

    def __init__(
        self,
        submit_chunk: Callable[[list[tuple[Any, ...]]], Future[Any]],
        arguments: Iterator[tuple[Any, ...]],
        chunksize: int,
        buffersize: int | None,
    ):
        self._submit = submit_chunk
        self._chunks = iter(partial(_take, arguments, chunksize), [])
        self._lazy = buffersize is not None
        self._futures: deque[Future[Any]] = deque(
            submit_chunk(chunk) for chunk in itertools.islice(self._chunks, buffersize)
        )

    def next_future(self) -> Future[Any] | None:
        if not self._futures:
            return None
        future = self._futures.popleft()
        if self._lazy:
            chunk = next(self._chunks, None)
            if chunk is not None:
                self._futures.append(self._submit(chunk))
        return future

    def cancel(self) -> None:
        for future in self._futures:
            future.cancel()
        self._futures.clear()


def _take(arguments: Iterator[tuple[Any, ...]], count: int) -> list[tuple[Any, ...]]:
    return list(itertools.islice(arguments, count))


def iterate(feed: MapFeed, end_time: float | None) -> Iterator[Any]:
    try:
        while (future := feed.next_future()) is not None:
            timeout = None if end_time is None else end_time - time.monotonic()
            try:
                values = future.result(timeout)
            except BaseException:
                # Out of the feed already, yet one of the remaining works:
                # a timeout or an interrupt must cancel it too.
                future.cancel()
                raise
            yield from values
    finally:
        feed.cancel()


async def iterate_async(feed: MapFeed, end_time: float | None) -> AsyncIterator[Any]:
    try:
        while (future := feed.next_future()) is not None:
            with anyio.fail_after(None if end_time is None else end_time - time.monotonic()):
                values = await wait_future(future)
            for value in values:
                yield value
    finally:
        feed.cancel()
