"""Worker loops, and the futures themselves as concurrent.futures sees them.

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import threading
from collections.abc import Callable

import pytest
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
    make its condition on demand): a Python version that adds one must fail
    here, not in concurrent.futures.wait() of a user."""
    from aplex.futures import ConcurrentFuture

    future = ConcurrentFuture()
    # getattr(): a field may be a class attribute, or made on demand.
    missing = [name for name in vars(concurrent.futures.Future()) if not hasattr(future, name)]
    assert missing == []
    assert isinstance(future._condition, threading.Condition)
    assert future._waiters == []


@pytest.mark.parametrize("waited_on", [False, True], ids=["no-waiter-yet", "waited-on"])
@pytest.mark.parametrize("end", ["set_result", "set_exception", "set_cancelled"])
def test_a_second_ending_raises_invalid_state_instead_of_hanging(end, waited_on):
    """A future ends once; a second set_result() or set_exception() raises
    InvalidStateError naming the future, as the standard library's does,
    and set_cancelled() returns False. (It used to hang: the message's repr
    took the future's lock, not reentrant, while it was held.)"""
    from aplex.futures import ConcurrentFuture

    future: ConcurrentFuture[int] = ConcurrentFuture()
    if waited_on:  # a future someone waited on has a condition of its own
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=0)
    getattr(future, end)(*{"set_result": (1,), "set_exception": (ValueError(),)}.get(end, ()))
    ended_state = repr(future)
    with pytest.raises(concurrent.futures.InvalidStateError, match="ConcurrentFuture at"):
        future.set_result(2)
    with pytest.raises(concurrent.futures.InvalidStateError, match="ConcurrentFuture at"):
        future.set_exception(KeyError())
    assert future.set_cancelled() is False
    assert repr(future) == ended_state


def test_futures_ending_on_one_thread_wake_every_kind_of_waiter_on_others_once():
    """Futures that end on one thread while others wait on them in every way
    the standard library offers: result(), concurrent.futures.wait(),
    as_completed(), a done callback. The waiters start at any point of the
    ending (the interpreter switches threads after every few bytecodes), so
    some find a future that has no condition yet and make it while it ends:
    each waiter must still see each future end, once."""
    import sys

    from aplex.futures import ConcurrentFuture

    count = 400
    futures: list[ConcurrentFuture[int]] = [ConcurrentFuture() for _ in range(count)]
    called = [0] * count
    asked = [threading.Event() for _ in range(count)]
    seen: dict[str, list[int]] = {"result": [], "wait": [], "as_completed": []}
    started = threading.Barrier(4)

    def end() -> None:
        started.wait(T)
        for i, future in enumerate(futures):
            # Once the result() waiter is on its way to wait on it, maybe
            # there already, maybe not yet: every order of the two is tried.
            assert asked[i].wait(T)
            if i % 3 == 2:
                assert future.set_cancelled()
            elif i % 3 == 1:
                future.set_exception(ValueError(i))
            else:
                future.set_result(i)

    def by_result() -> None:
        started.wait(T)
        for i, future in enumerate(futures):
            asked[i].set()
            with contextlib.suppress(concurrent.futures.CancelledError, ValueError):
                future.result(T)
            seen["result"].append(i)

    def by_wait() -> None:
        started.wait(T)
        for i, future in enumerate(futures):
            done, _ = concurrent.futures.wait([future], timeout=T)
            assert done == {future}
            seen["wait"].append(i)

    def by_as_completed() -> None:
        started.wait(T)
        for future in concurrent.futures.as_completed(futures, timeout=T):
            seen["as_completed"].append(futures.index(future))

    def callback(i: int) -> Callable[[object], None]:
        def called_once(_: object) -> None:
            called[i] += 1

        return called_once

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [
            threading.Thread(target=target) for target in (end, by_result, by_wait, by_as_completed)
        ]
        for thread in threads:
            thread.start()
        for i, future in enumerate(futures):  # this thread: callbacks, as they end
            future.add_done_callback(callback(i))
        for thread in threads:
            thread.join(T)
    finally:
        sys.setswitchinterval(switch)
    assert not any(thread.is_alive() for thread in threads)
    assert seen["result"] == seen["wait"] == list(range(count))
    assert sorted(seen["as_completed"]) == list(range(count))
    assert called == [1] * count


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
