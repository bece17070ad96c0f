"""Front ends that behave as asyncio and trio users expect.

Timeouts that return on time while a plain function runs on, results as
they complete (``map(ordered=False)``, ``aplex.as_completed``), the caller's
context in ``run()``, async iterators that can be abandoned, and clear errors
for a front end used on the wrong loop. Thread workers unless the kind is the
point: the front end is the same over every kind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading

import anyio
import pytest
import trio
import uvloop

import aplex
import aplex.backends.trio
from tests import works
from tests.support import T

# -- asyncio: timeouts that return on time ------------------------------------

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_on(loop_name, main):
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_wait_for_times_out_on_time_while_a_plain_function_runs_on(loop_name):
    """Guards the issue's first complaint: wait_for returned the value after
    the work ended instead of timing out. The work cannot end before the
    test releases it, so a TimeoutError proves the wait gave up on time."""
    started, release = threading.Event(), threading.Event()

    async def main():
        async with aplex.ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as pool:
            future = pool.submit(works.mark_then_wait, started, release)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(future, 0.05)
            assert future.cancelled()
            assert started.is_set() and not release.is_set()  # still running
            release.set()
            # The pool serves on; the late result was dropped, not delivered.
            assert await pool.submit(works.add, 1, 2) == 3
        return pool.statistics()

    statistics = run_on(loop_name, main)
    assert (statistics.completed, statistics.cancelled) == (2, 0)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in Python 3.11")
@pytest.mark.parametrize("loop_name", LOOPS)
def test_asyncio_timeout_returns_on_time_while_a_plain_function_runs_on(loop_name):
    release = threading.Event()

    async def main():
        async with aplex.ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as pool:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await pool.submit(works.wait_event, release)
            release.set()

    run_on(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_cancelling_an_asyncio_future_of_a_running_plain_function_ends_it_at_once(loop_name):
    started, release = threading.Event(), threading.Event()

    async def main():
        async with aplex.ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as pool:
            future = pool.submit(works.mark_then_wait, started, release)
            await asyncio.get_running_loop().run_in_executor(None, started.wait, T)
            assert future.cancel() is True
            assert future.cancelled()
            with pytest.raises(asyncio.CancelledError):
                await future
            assert future.cancel() is False  # already ended
            release.set()

    run_on(loop_name, main)


# -- results as they complete -------------------------------------------------


def test_unordered_map_yields_results_as_their_works_end():
    events = [threading.Event() for _ in range(3)]
    with aplex.ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=None) as pool:
        results = pool.map(works.async_wait_then_return, events, "abc", ordered=False)
        for index in (2, 0, 1):
            events[index].set()
            assert next(results) == "abc"[index]
        assert list(results) == []


def test_unordered_map_reraises_the_first_failure_and_cancels_the_rest():
    release = threading.Event()
    with aplex.ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=None) as pool:
        results = pool.map(
            works.async_wait_then_return, [release, release, None], ["a", "b", "c"], ordered=False
        )
        # The third work fails at once (None has no is_set), before the others end.
        with pytest.raises(AttributeError):
            next(results)
        statistics = pool.statistics()
        assert (statistics.cancelled, statistics.failed) == (2, 1)


def test_unordered_map_times_out_and_cancels_the_works():
    release = threading.Event()
    with aplex.ThreadAsyncPoolExecutor(pool_size=1) as pool:
        results = pool.map(
            works.async_wait_then_return, [release] * 3, "abc", timeout=0.05, ordered=False
        )
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        assert pool.statistics().cancelled == 3
    assert not release.is_set()


def test_unordered_map_with_buffersize_serves_an_endless_iterator():
    def endless():
        value = 0
        while True:
            yield value
            value += 1

    with aplex.ThreadAsyncPoolExecutor(pool_size=2) as pool:
        results = pool.map(works.add, endless(), chunksize=3, buffersize=2, ordered=False)
        first = [next(results) for _ in range(30)]
        results.close()
    # Unordered between chunks, never losing one: the first 30 values come
    # from the first chunks handed out.
    assert len(set(first)) == 30


@pytest.fixture
def pool(anyio_backend):
    """A thread pool whose futures the test's event loop awaits."""
    if anyio_backend == "trio":
        executor = aplex.backends.trio.ThreadAsyncPoolExecutor(
            pool_size=1, max_works_per_worker=None
        )
    else:
        executor = aplex.ThreadAsyncPoolExecutor(
            pool_size=1, max_works_per_worker=None, awaitable=True
        )
    with executor:
        yield executor


@pytest.mark.anyio
async def test_async_unordered_map_yields_results_as_their_works_end(pool):
    events = [threading.Event() for _ in range(3)]
    results = pool.map(works.async_wait_then_return, events, "abc", ordered=False)
    with anyio.fail_after(T):
        for index in (1, 2, 0):
            events[index].set()
            assert await results.__anext__() == "abc"[index]
        assert [value async for value in results] == []


@pytest.mark.anyio
async def test_as_completed_yields_each_future_as_it_ends(pool):
    events = [threading.Event() for _ in range(3)]
    futures = [
        pool.submit(works.async_wait_then_return, e, v) for e, v in zip(events, "abc", strict=True)
    ]
    seen = []
    with anyio.fail_after(T):
        iterator = aplex.as_completed([*futures, futures[0]])  # a duplicate comes once
        for index in (2, 0, 1):
            events[index].set()
            future = await iterator.__anext__()
            assert future is futures[index]
            seen.append(await future)
        with pytest.raises(StopAsyncIteration):
            await iterator.__anext__()
    assert seen == ["c", "a", "b"]


@pytest.mark.anyio
async def test_as_completed_takes_ended_and_concurrent_futures_and_nothing(pool):
    with anyio.fail_after(T):
        ended = pool.submit(works.add, 1, 2)
        assert await ended == 3
        plain = concurrent.futures.Future()
        plain.set_result("plain")
        got = [future async for future in aplex.as_completed([ended, plain])]
        assert set(got) == {ended, plain}
        assert [future async for future in aplex.as_completed([])] == []
    with pytest.raises(TypeError, match="as_completed\\(\\) takes futures"):
        aplex.as_completed([42])


# -- abandoning an async map --------------------------------------------------


@pytest.mark.anyio
async def test_leaving_an_async_map_early_cancels_the_rest_without_a_warning(pool):
    """Guards against trio's "async generator was garbage collected before
    it had been exhausted" ResourceWarning (an error in this suite) when a
    program breaks out of ``async for``: no aclosing needed."""
    release = threading.Event()
    with anyio.fail_after(T):
        results = pool.map(works.async_wait_then_return, [None, release, release], "abc")
        with pytest.raises(AttributeError):
            async for _ in results:
                pass
        done = threading.Event()
        done.set()
        results = pool.map(
            works.async_wait_then_return, [done, release, release], "abc", buffersize=1
        )
        async for value in results:
            assert value == "a"
            break
        del results
        gc.collect()
    statistics = pool.statistics()
    assert statistics.cancelled == 2 + 1  # two after the failure, one in the buffer
    release.set()


# -- the caller's context -----------------------------------------------------


@pytest.mark.anyio
async def test_run_on_thread_workers_sees_the_callers_context(pool):
    token = works.request_id.set("req-42")
    try:
        with anyio.fail_after(T):
            assert await pool.run(works.read_request_id) == "req-42"
            # submit() is concurrent.futures', which copies no context.
            assert await pool.submit(works.read_request_id) == "unset"
    finally:
        works.request_id.reset(token)


def test_run_on_process_workers_does_not_carry_the_context():
    async def main():
        works.request_id.set("req-42")
        async with aplex.ProcessAsyncPoolExecutor(pool_size=1) as processes:
            return await processes.run(works.read_request_id)

    assert asyncio.run(main()) == "unset"


# -- a front end on the wrong loop --------------------------------------------


def test_an_awaitable_asyncio_pool_inside_trio_says_what_to_use():
    async def main():
        with aplex.ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as pool:
            with pytest.raises(RuntimeError, match="use the executors of aplex.backends.trio"):
                pool.submit(works.add, 1, 2)
            # run() works from any loop.
            assert await pool.run(works.add, 1, 2) == 3

    trio.run(main)


def test_a_trio_pool_is_awaitable_from_asyncio_too():
    """Not misuse: its futures and map go through AnyIO, so asyncio awaits them."""

    async def main():
        async with aplex.backends.trio.ThreadAsyncPoolExecutor(pool_size=1) as pool:
            assert await pool.submit(works.add, 1, 2) == 3
            assert [value async for value in pool.map(works.add, [1, 2])] == [1, 2]

    asyncio.run(main())
