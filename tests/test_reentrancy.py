"""User code that calls back into the pool while aplex is sending a work.

SPEC: no user code runs under the dispatcher's lock (the load balancer
aside, documented as called under it). Pickling a work's arguments runs
their ``__reduce__``, and letting go of them their ``__del__``: either may
call ``statistics()``, ``submit()`` or ``cancel()`` on the same pool, which
must neither deadlock nor reorder what reaches a worker.
"""

from __future__ import annotations

import threading

import pytest

import aplex
from aplex.executor import PoolStatistics
from tests import works
from tests.support import T, wait_until


def in_a_thread(call):
    """Run ``call`` in a thread and return what it returns; fail, rather
    than hang, if it deadlocks."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    thread.start()
    thread.join(T)
    assert not thread.is_alive(), "deadlocked: user code ran under the executor's lock"
    return outcome[0]


def make_pool(kind):
    if kind == "thread":
        return aplex.ThreadAsyncPoolExecutor(pool_size=1)
    return aplex.ProcessAsyncPoolExecutor(pool_size=1)


def test_an_argument_whose_pickling_asks_for_statistics_does_not_deadlock():
    """The worker is idle, so the caller's own thread pickles the work and
    writes it to the pipe: that must be after the lock is released."""
    seen = []
    with make_pool("process") as pool:
        argument = works.CallsBack(pool, seen, on_reduce=aplex.ProcessAsyncPoolExecutor.statistics)
        future = in_a_thread(lambda: pool.submit(works.identity, argument))
        assert future.result(T) == 7
        assert seen[0][0] == "reduce"
        assert isinstance(seen[0][1], PoolStatistics)


def test_an_argument_whose_pickling_submits_and_cancels_another_work():
    """The nested work is sent after the one being pickled, and its cancel
    request after it: it ends cancelled, in its worker too."""
    started, cleaned_up = [], []

    def submit_and_cancel(pool):
        nested = pool.submit(works.async_sleep, 60, "not cancelled")
        started.append(nested)
        cleaned_up.append(nested.cancel())
        return nested

    seen = []
    with make_pool("process") as pool:
        argument = works.CallsBack(pool, seen, on_reduce=submit_and_cancel)
        future = in_a_thread(lambda: pool.submit(works.identity, argument))
        assert future.result(T) == 7
        [nested] = started
        assert cleaned_up == [True]
        assert nested.cancelled()
        # Its worker received it, then its cancel request, and ended it:
        # the pool would otherwise wait for its 60 s on shutdown.
        wait_until(lambda: pool.statistics().running == 0)
        assert pool.statistics().cancelled == 1


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_an_argument_freed_when_its_work_ends_may_call_the_pool(kind):
    seen = []
    with make_pool(kind) as pool:

        def submit_one():
            # The only reference is the work's: it goes when the work ends.
            argument = works.CallsBack(pool, seen, on_del=type(pool).statistics)
            return pool.submit(works.ignore, argument)

        future = in_a_thread(submit_one)
        assert future.result(T) is None
        wait_until(lambda: any(when == "del" for when, _ in seen))
        # And nothing is stuck: the pool serves on.
        assert in_a_thread(lambda: pool.submit(works.add, 1, 1).result(T)) == 2
    assert all(isinstance(value, PoolStatistics) for _, value in seen)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_cancel_request_never_overtakes_its_work(kind):
    """Many threads submit coroutine works and cancel each at once: every
    cancel request reaches its worker after the work itself, so every work
    is cancelled there (one that overtook would leave its work sleeping)."""
    futures, lock = [], threading.Lock()

    def submit_and_cancel():
        for _ in range(50):
            future = pool.submit(works.async_sleep, 60, "not cancelled")
            assert future.cancel() is True
            with lock:
                futures.append(future)

    with make_pool(kind) as pool:
        threads = [threading.Thread(target=submit_and_cancel) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(T)
        assert len(futures) == 200
        wait_until(lambda: pool.statistics().running == 0)
        assert all(future.cancelled() for future in futures)
