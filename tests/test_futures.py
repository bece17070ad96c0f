"""Worker loops, and the futures themselves as concurrent.futures sees them.

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading

import uvloop

from aplex import ThreadAsyncPoolExecutor
from tests import works
from tests.support import T

# -- worker loops -------------------------------------------------------------


def test_worker_loop_factory_runs_the_works_on_a_uvloop_loop():
    with ThreadAsyncPoolExecutor(pool_size=1, worker_loop_factory=uvloop.new_event_loop) as ex:
        loop_class = ex.submit(works.async_loop_class).result(T)
        assert ex.submit(works.async_sleep, 0.01, value="on uvloop").result(T) == "on uvloop"
    assert issubclass(loop_class, uvloop.Loop)


# -- the futures themselves -----------------------------------------------------


def test_a_concurrent_future_has_every_field_of_the_standard_one():
    """ConcurrentFuture sets up concurrent.futures.Future's fields itself (to
    use a lighter condition): a Python version that adds one must fail here,
    not in concurrent.futures.wait() of a user."""
    from aplex.futures import ConcurrentFuture

    # dir(): a field may be a class attribute until first used.
    assert set(vars(concurrent.futures.Future())) <= set(dir(ConcurrentFuture()))


def test_concurrent_futures_wait_and_as_completed_take_aplex_futures():
    with ThreadAsyncPoolExecutor(pool_size=2) as executor:
        release = threading.Event()
        slow = executor.submit(works.async_wait_event, release)
        fast = [executor.submit(works.identity, i) for i in range(20)]
        done, not_done = concurrent.futures.wait(
            [slow, *fast], timeout=T, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert done and slow in not_done
        assert sorted(f.result() for f in concurrent.futures.as_completed(fast, timeout=T)) == list(
            range(20)
        )
        release.set()
        done, not_done = concurrent.futures.wait([slow], timeout=T)
        assert (done, not_done) == ({slow}, set())


def test_an_awaitable_future_does_not_keep_its_closed_loop_alive():
    """Guards against a leak: the registry that wakes a loop once per batch
    of results held every loop it had woken, closed or not."""
    import weakref

    loops = []

    async def main(executor):
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await executor.submit(works.identity, 1), await executor.run(works.identity, 2)

    with ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
        for _ in range(3):
            assert asyncio.run(main(executor)) == (1, 2)
    gc.collect()
    assert [loop() for loop in loops] == [None, None, None]


def test_cancel_after_the_end_answers_as_the_standard_library():
    """A future lets go of its work once ended; cancel() then still answers
    as concurrent.futures does: True again for a cancelled future, False
    for one that finished."""
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        finished = executor.submit(works.identity, 1)
        assert finished.result(T) == 1
        running = executor.submit(works.async_sleep, 60)
        assert running.cancel()
        assert running.cancel()
        assert running.cancelled()
        assert not finished.cancel()
        assert finished.result(T) == 1
