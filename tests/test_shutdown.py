"""shutdown(), with and async with, garbage collection, and statistics().

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import threading

import pytest

from aplex import ThreadAsyncPoolExecutor
from tests import works
from tests.support import T, new_threads

# -- shutdown, with, async with -----------------------------------------------


def test_shutdown_wait_true_returns_once_running_and_waiting_works_have_ended():
    release = threading.Event()
    executor = ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=1)
    running = executor.submit(works.wait_event, release)
    waiting = executor.submit(works.add, 1, 2)
    shutting_down = threading.Thread(target=executor.shutdown, kwargs={"wait": True})
    shutting_down.start()
    # Still blocked: a work it must wait for cannot end before `release`.
    shutting_down.join(0.2)
    assert shutting_down.is_alive()
    release.set()
    shutting_down.join(T)
    assert not shutting_down.is_alive()
    # Both had run to their end by the time shutdown returned.
    assert running.done() and waiting.done()
    assert (running.result(0), waiting.result(0)) == ("released", 3)


def test_shutdown_wait_false_returns_at_once_and_the_works_still_end():
    release = threading.Event()
    executor = ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=1)
    running = executor.submit(works.wait_event, release)
    waiting = executor.submit(works.async_add, 1, 2)
    executor.shutdown(wait=False)
    assert not running.done() and not waiting.done()
    release.set()
    assert running.result(T) == "released"
    assert waiting.result(T) == 3
    executor.shutdown(wait=True)


def test_shutdown_cancel_futures_cancels_waiting_and_running_coroutine_works():
    started, cleaned_up = threading.Event(), threading.Event()
    plain_started, release = threading.Event(), threading.Event()
    log = []
    executor = ThreadAsyncPoolExecutor(pool_size=2, max_works_per_worker=1)
    coroutine = executor.submit(works.async_wait_then_mark, started, cleaned_up)
    plain = executor.submit(works.mark_then_wait, plain_started, release)
    waiting = executor.submit(works.append_to, log, "waiting work ran")
    assert started.wait(T) and plain_started.wait(T)
    executor.shutdown(wait=False, cancel_futures=True)
    assert waiting.cancelled()
    assert coroutine.cancelled()
    assert cleaned_up.wait(T)
    # A running plain function cannot be interrupted: it runs to its end.
    assert not plain.done()
    release.set()
    executor.shutdown(wait=True)
    assert plain.result(0) == "released"
    assert log == []


def test_submit_and_map_after_shutdown_raise_runtime_error_and_shutdown_twice_is_harmless():
    executor = ThreadAsyncPoolExecutor(pool_size=1)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(works.add, 1)
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.map(works.add, [1])
    executor.shutdown()
    executor.shutdown(wait=False, cancel_futures=True)


def test_with_block_shuts_down_on_exit_even_on_an_exception():
    release = threading.Event()
    before = set(threading.enumerate())
    with pytest.raises(KeyError):
        with ThreadAsyncPoolExecutor(pool_size=2) as executor:
            future = executor.submit(works.wait_event, release)
            threading.Timer(0.05, release.set).start()  # ends the work while exit waits
            raise KeyError("the caller's own error")
    assert future.result(0) == "released"
    with pytest.raises(RuntimeError):
        executor.submit(works.add, 1)
    assert not any(t.name.startswith("aplex-") for t in new_threads(before))


def test_async_with_shuts_down_on_exit_without_blocking_the_event_loop():
    release = threading.Event()

    async def main():
        async with ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
            future = executor.submit(works.wait_event, release, timeout=T)

            async def release_soon():
                await asyncio.sleep(0.05)
                release.set()

            # This task runs only if the exit below leaves the loop free: if
            # it blocked, the work would time out instead of being released.
            releaser = asyncio.create_task(release_soon())
        await releaser
        assert future.done()
        assert future.result() == "released"
        with pytest.raises(RuntimeError):
            executor.submit(works.add, 1)

    asyncio.run(main())


def test_no_thread_outlives_shutdown_wait_true():
    before = set(threading.enumerate())
    started, cleaned_up = threading.Event(), threading.Event()
    executor = ThreadAsyncPoolExecutor(pool_size=2)
    futures = [executor.submit(works.async_sleep, 0.05, i) for i in range(10)]
    executor.submit(works.async_wait_then_mark, started, cleaned_up)
    assert started.wait(T)
    assert new_threads(before)
    executor.shutdown(wait=True, cancel_futures=True)
    # Checked at once, without waiting: wait=True means every thread the
    # executor started has ended.
    assert new_threads(before) == []
    assert all(future.done() for future in futures)


def test_a_garbage_collected_executor_warns_and_shuts_down():
    release = threading.Event()
    before = set(threading.enumerate())
    executor = ThreadAsyncPoolExecutor(pool_size=1)
    future = executor.submit(works.wait_event, release)
    workers = new_threads(before)
    with pytest.warns(ResourceWarning, match="shutdown"):
        del executor
        gc.collect()
    # A shutdown without cancel_futures: the running work ends normally,
    # then the worker exits.
    release.set()
    assert future.result(T) == "released"
    for thread in workers:
        thread.join(T)
        assert not thread.is_alive()


# -- statistics ---------------------------------------------------------------


def test_statistics_report_workers_running_waiting_and_the_counts_so_far():
    release, started, cleaned_up = threading.Event(), threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=2, max_works_per_worker=1) as executor:
        first = executor.submit(works.async_wait_event, release)
        second = executor.submit(works.async_wait_then_mark, started, cleaned_up)
        third = executor.submit(works.add, 1, 2)
        assert started.wait(T)
        busy = executor.statistics()
        assert [(w.index, w.name, w.running) for w in busy.workers] == [
            (0, "ThreadWorker-0", 1),
            (1, "ThreadWorker-1", 1),
        ]
        assert (busy.running, busy.waiting) == (2, 1)
        assert (busy.completed, busy.failed, busy.cancelled) == (0, 0, 0)

        second.cancel()
        assert third.result(T) == 3
        with pytest.raises(ValueError):
            executor.submit(works.raise_value_error).result(T)
        release.set()
        assert first.result(T) == "released"
        idle = executor.statistics()
    assert (idle.running, idle.waiting) == (0, 0)
    assert (idle.completed, idle.failed, idle.cancelled) == (2, 1, 1)
    # A frozen snapshot: the earlier record did not change, and cannot be.
    assert busy.waiting == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        busy.waiting = 0
