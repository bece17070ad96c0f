"""Constructing an executor: the seed reference's defaults, and bad arguments
rejected before any worker starts.

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import threading

import pytest
import uvloop

from aplex import ConcurrentFuture, ThreadAsyncPoolExecutor
from aplex.load_balancers import RoundRobin, Worker
from tests import works
from tests.support import T, new_threads, worker_index

# -- construction: defaults ---------------------------------------------------


def test_signature_shows_the_seed_reference_arguments_and_defaults():
    """Guards against the documented keyword arguments disappearing from
    help(), IDEs and the API docs behind a ``**kwargs``."""
    parameters = inspect.signature(ThreadAsyncPoolExecutor).parameters
    documented = {
        "pool_size": 4,
        "max_works_per_worker": 300,
        "load_balancer": RoundRobin,
        "awaitable": False,
        "future_loop": None,
        "worker_loop_factory": None,
    }
    shown = {name: parameters[name].default for name in documented if name in parameters}
    assert shown == documented
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in documented)


def test_default_pool_size_is_four_worker_threads():
    before = set(threading.enumerate())
    with ThreadAsyncPoolExecutor() as executor:
        assert len(executor.statistics().workers) == 4
        names = {executor.submit(works.thread_name).result(T) for _ in range(8)}
        assert len([t for t in new_threads(before) if t.name.startswith("aplex-")]) == 4
    assert len(names) == 4


def test_pool_size_none_means_one_worker_per_cpu():
    with ThreadAsyncPoolExecutor(pool_size=None) as executor:
        assert len(executor.statistics().workers) == (os.cpu_count() or 1)


def test_default_max_works_per_worker_is_300():
    gauge, release = works.Gauge(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        futures = [executor.submit(works.async_gauged, gauge, i, release) for i in range(301)]
        gauge.wait_running(300)
        statistics = executor.statistics()
        assert (statistics.running, statistics.waiting) == (300, 1)
        release.set()
        assert [f.result(T) for f in futures] == list(range(301))
    assert list(gauge.peak.values()) == [300]


def test_max_works_per_worker_none_means_no_cap():
    gauge, release = works.Gauge(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=None) as executor:
        futures = [executor.submit(works.async_gauged, gauge, i, release) for i in range(400)]
        gauge.wait_running(400)
        assert executor.statistics().waiting == 0
        release.set()
        assert [f.result(T) for f in futures] == list(range(400))


def test_default_load_balancer_is_round_robin():
    with ThreadAsyncPoolExecutor(pool_size=3) as executor:
        names = [executor.submit(works.thread_name).result(T) for _ in range(7)]
    # Each work to the next worker, even though every worker is idle (Average
    # would pick worker 0 each time, Random any order).
    assert [worker_index(name) for name in names] == [0, 1, 2, 0, 1, 2, 0]


def test_default_is_not_awaitable_concurrent_futures_and_a_plain_map():
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        future = executor.submit(works.add, 1, 2)
        assert isinstance(future, ConcurrentFuture)
        assert isinstance(future, concurrent.futures.Future)
        assert not isinstance(future, asyncio.Future)
        results = executor.map(works.add, [1, 2])
        assert inspect.isgenerator(results)
        assert list(results) == [1, 2]


def test_default_worker_loop_is_plain_asyncio():
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        assert executor.submit(works.async_library).result(T) == "asyncio"
        loop_class = executor.submit(works.async_loop_class).result(T)
    assert issubclass(loop_class, asyncio.AbstractEventLoop)
    assert not issubclass(loop_class, uvloop.Loop)


# -- construction: validation -------------------------------------------------


def _a_round_robin_instance():
    worker = Worker(0, "w")
    return RoundRobin([worker], {worker: 0}, 1)


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        pytest.param({"pool_size": 0}, ValueError, "pool_size", id="pool_size-0"),
        pytest.param({"pool_size": -3}, ValueError, "pool_size", id="pool_size-negative"),
        pytest.param({"pool_size": 2.5}, TypeError, "pool_size", id="pool_size-float"),
        pytest.param(
            {"max_works_per_worker": 0}, ValueError, "max_works_per_worker", id="max_works-0"
        ),
        pytest.param(
            {"max_works_per_worker": "10"}, TypeError, "max_works_per_worker", id="max_works-str"
        ),
        pytest.param({"load_balancer": dict}, TypeError, "load_balancer", id="balancer-class"),
        pytest.param(
            {"load_balancer": _a_round_robin_instance()},
            TypeError,
            "load_balancer",
            id="balancer-instance",
        ),
        pytest.param({"worker_backend": "tokio"}, ValueError, "tokio", id="unknown-backend"),
        pytest.param({"future_loop": "LOOP"}, ValueError, "future_loop", id="loop-unawaitable"),
        pytest.param(
            {"worker_loop_factory": 42}, TypeError, "worker_loop_factory", id="factory-not-callable"
        ),
        pytest.param(
            {"worker_loop_factory": uvloop.new_event_loop, "worker_backend": "trio"},
            ValueError,
            "worker_loop_factory",
            id="factory-with-trio-workers",
        ),
        pytest.param({"initializer": 42}, TypeError, "initializer", id="initializer-not-callable"),
    ],
)
def test_bad_arguments_raise_at_construction_before_any_worker_starts(arguments, error, named):
    if arguments.get("future_loop") == "LOOP":
        loop = asyncio.new_event_loop()
        loop.close()
        arguments = {"future_loop": loop}
    before = set(threading.enumerate())
    with pytest.raises(error, match=named):
        ThreadAsyncPoolExecutor(**arguments)
    assert new_threads(before) == []
