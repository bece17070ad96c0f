"""awaitable=True: AsyncioFuture, the async map and the futures' loop.

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import collections.abc
import threading

import pytest

from aplex import AsyncioFuture, ThreadAsyncPoolExecutor
from tests import works
from tests.support import T

# -- awaitable=True -----------------------------------------------------------


def test_awaitable_submit_returns_asyncio_futures_awaited_in_asyncio():
    async def main():
        async with ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
            future = executor.submit(works.async_add, 1, y=2)
            assert isinstance(future, AsyncioFuture)
            assert isinstance(future, asyncio.Future)
            assert future.get_loop() is asyncio.get_running_loop()
            assert await asyncio.wait_for(future, T) == 3
            assert await asyncio.wait_for(executor.submit(works.add, 2, 3), T) == 5
            with pytest.raises(ValueError, match="boom"):
                await asyncio.wait_for(executor.submit(works.raise_value_error), T)

    asyncio.run(main())


def test_awaitable_map_is_an_async_generator_of_results_in_order():
    async def main():
        async with ThreadAsyncPoolExecutor(pool_size=2, awaitable=True) as executor:
            results = executor.map(works.async_add, range(7), range(7), chunksize=3)
            assert isinstance(results, collections.abc.AsyncGenerator)
            assert [value async for value in results] == [2 * i for i in range(7)]
            empty = executor.map(works.identity, [])
            assert isinstance(empty, collections.abc.AsyncGenerator)
            assert [value async for value in empty] == []

    asyncio.run(main())


def test_awaitable_map_timeout_raises_timeout_error_and_cancels_the_works():
    started, cleaned_up = threading.Event(), threading.Event()

    async def main():
        async with ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
            results = executor.map(works.async_wait_then_mark, [started], [cleaned_up], timeout=0.3)
            with pytest.raises(TimeoutError):
                async for _ in results:
                    pass
            assert await asyncio.to_thread(cleaned_up.wait, T)

    asyncio.run(main())
    assert started.is_set()


def test_closing_the_awaitable_map_early_cancels_the_remaining_works():
    started = [None, threading.Event(), threading.Event()]
    cleaned_up = [None, threading.Event(), threading.Event()]

    async def main():
        async with ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
            results = executor.map(works.async_first_or_wait, range(3), started, cleaned_up)
            assert await asyncio.wait_for(results.__anext__(), T) == 0
            for event in started[1:]:
                assert await asyncio.to_thread(event.wait, T)
            await results.aclose()
            for event in cleaned_up[1:]:
                assert await asyncio.to_thread(event.wait, T)

    asyncio.run(main())


def test_cancelling_the_task_awaiting_an_asyncio_future_cancels_the_work():
    started, cleaned_up = threading.Event(), threading.Event()

    async def main():
        async with ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
            future = executor.submit(works.async_wait_then_mark, started, cleaned_up)
            task = asyncio.create_task(asyncio.wait_for(future, 30))
            assert await asyncio.to_thread(started.wait, T)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(cleaned_up.wait, T)
            assert future.cancelled()

    asyncio.run(main())


def test_future_loop_binds_futures_submitted_from_a_thread_without_a_loop():
    async def main():
        loop = asyncio.get_running_loop()
        executor = ThreadAsyncPoolExecutor(pool_size=1, awaitable=True, future_loop=loop)
        try:
            future = await asyncio.to_thread(executor.submit, works.add, 1, 2)
            assert isinstance(future, AsyncioFuture)
            assert future.get_loop() is loop
            assert await asyncio.wait_for(future, T) == 3
        finally:
            await asyncio.to_thread(executor.shutdown)

    asyncio.run(main())


def test_set_future_loop_binds_the_futures_submitted_after_it():
    async def main():
        loop = asyncio.get_running_loop()
        # Made outside any loop, as a program does at start-up.
        executor = await asyncio.to_thread(ThreadAsyncPoolExecutor, pool_size=1, awaitable=True)
        try:
            executor.set_future_loop(loop)
            future = await asyncio.to_thread(executor.submit, works.async_add, 2, 2)
            assert future.get_loop() is loop
            assert await asyncio.wait_for(future, T) == 4
        finally:
            await asyncio.to_thread(executor.shutdown)

    asyncio.run(main())


def test_set_future_loop_raises_runtime_error_when_unawaitable_or_shut_down():
    loop = asyncio.new_event_loop()
    try:
        with ThreadAsyncPoolExecutor(pool_size=1) as unawaitable:
            with pytest.raises(RuntimeError, match="awaitable"):
                unawaitable.set_future_loop(loop)
        awaitable = ThreadAsyncPoolExecutor(pool_size=1, awaitable=True)
        awaitable.shutdown()
        with pytest.raises(RuntimeError, match="shutdown"):
            awaitable.set_future_loop(loop)
    finally:
        loop.close()
