"""Load balancing and max_works_per_worker: which worker a work goes to, how
many run at once, and the FIFO of the works that wait.

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import threading

import pytest

from aplex import ThreadAsyncPoolExecutor
from aplex.load_balancers import Average, RoundRobin
from tests import works
from tests.support import Sticky, T, recording_balancer, worker_index

# -- load balancing -----------------------------------------------------------


def test_load_balancing_meta_reaches_the_balancer_and_not_the_work():
    balancer, seen = recording_balancer()
    meta = {"tenant": "acme"}
    with ThreadAsyncPoolExecutor(pool_size=2, load_balancer=balancer) as executor:
        assert executor.submit(works.add, 1, y=2, load_balancing_meta=meta).result(T) == 3
        assert executor.submit(works.add, 1).result(T) == 1
        assert list(executor.map(works.add, range(4), chunksize=2, load_balancing_meta="m")) == [
            0,
            1,
            2,
            3,
        ]
    assert seen[0] is meta
    # No meta given means None; map passes its meta once per chunk.
    assert seen[1:] == [None, "m", "m"]


def test_load_balancing_meta_decides_the_worker_with_a_balancer_of_the_users_own():
    with ThreadAsyncPoolExecutor(pool_size=2, load_balancer=Sticky) as executor:
        names = [
            executor.submit(works.thread_name, load_balancing_meta=index).result(T)
            for index in [1, 1, 0, 1, 0]
        ]
    assert [worker_index(name) for name in names] == [1, 1, 0, 1, 0]


# -- max_works_per_worker and the FIFO of waiting works -----------------------


def test_max_works_per_worker_caps_the_works_running_at_once_on_each_worker():
    gauge, release = works.Gauge(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=2, max_works_per_worker=2) as executor:
        futures = [executor.submit(works.async_gauged, gauge, i, release) for i in range(9)]
        gauge.wait_running(4)
        statistics = executor.statistics()
        assert [worker.running for worker in statistics.workers] == [2, 2]
        assert statistics.waiting == 5
        release.set()
        assert [f.result(T) for f in futures] == list(range(9))
    # Measured inside the works: never more than two at once on a worker,
    # also while the waiting ones were being started.
    assert sorted(gauge.peak.values()) == [2, 2]


def test_waiting_works_start_in_the_order_they_were_submitted():
    gauge, release = works.Gauge(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=2) as executor:
        futures = [executor.submit(works.async_gauged, gauge, i, release) for i in range(10)]
        gauge.wait_running(2)
        release.set()
        for future in futures:
            future.result(T)
    assert gauge.started == list(range(10))


@pytest.mark.parametrize("balancer", [RoundRobin, Average])
def test_the_shipped_balancers_pass_over_a_worker_blocked_by_a_plain_function(balancer):
    """Guards against the issue's report: RoundRobin sent works to a worker
    busy with a long plain function while the other worker sat idle."""
    started, release = threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=2, load_balancer=balancer) as executor:
        blocking = executor.submit(works.mark_then_wait, started, release)
        assert started.wait(T)
        statistics = executor.statistics()
        assert [worker.blocked for worker in statistics.workers] == [True, False]
        names = [executor.submit(works.thread_name).result(T) for _ in range(4)]
        assert {worker_index(name) for name in names} == {1}
        release.set()
        assert blocking.result(T) == "released"
    assert not any(worker.blocked for worker in executor.statistics().workers)
