"""ThreadAsyncPoolExecutor against real thread workers.

Each test shows one behaviour of the seed reference or of SPEC.md by what a
user observes: results, exceptions, the works' own effects (events set in a
``finally``, lists appended to), ``statistics()`` and the threads alive.
Every wait is bounded; nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import inspect
import itertools
import os
import threading
import time
import traceback
from concurrent.futures import CancelledError

import pytest
import uvloop

from aplex import (
    AplexWorkerError,
    AsyncioFuture,
    ConcurrentFuture,
    ThreadAsyncPoolExecutor,
)
from aplex.load_balancers import LoadBalancer, RoundRobin, Worker
from tests import works
from tests.support import wait_until, worker_index

# Seconds to wait for anything that should take milliseconds: generous,
# because the machine is small and shared.
T = 10


def new_threads(before):
    return [thread for thread in threading.enumerate() if thread not in before]


def recording_balancer(base=RoundRobin):
    """A balancer class of the user's own that records every meta it is given."""
    seen = []

    class Recording(base):
        def get_proper_worker(self, load_balancing_meta):
            seen.append(load_balancing_meta)
            return super().get_proper_worker(load_balancing_meta)

    return Recording, seen


class Sticky(LoadBalancer):
    """Routes a work to the worker whose index is its load_balancing_meta."""

    def get_proper_worker(self, load_balancing_meta):
        return self.workers[load_balancing_meta]


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
        wait_until(lambda: gauge.total_running() == 300)
        statistics = executor.statistics()
        assert (statistics.running, statistics.waiting) == (300, 1)
        release.set()
        assert [f.result(T) for f in futures] == list(range(301))
    assert list(gauge.peak.values()) == [300]


def test_max_works_per_worker_none_means_no_cap():
    gauge, release = works.Gauge(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=None) as executor:
        futures = [executor.submit(works.async_gauged, gauge, i, release) for i in range(400)]
        wait_until(lambda: gauge.total_running() == 400)
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


# -- submit -------------------------------------------------------------------


def test_submit_runs_a_plain_function_with_args_and_kwargs_on_a_worker_thread():
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        assert executor.submit(works.add, 1, y=41).result(T) == 42
        assert executor.submit(works.thread_name).result(T).startswith("aplex-")


def test_submit_runs_a_coroutine_function_with_args_and_kwargs():
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        assert executor.submit(works.async_add, 1, y=41).result(T) == 42
        assert executor.submit(works.async_sleep, 0.01, value="slept").result(T) == "slept"


def test_submit_rejects_what_is_not_callable_and_names_the_coroutine_mistake():
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        with pytest.raises(TypeError, match="callable"):
            executor.submit(42)
        coroutine = works.async_add(1, 2)
        try:
            with pytest.raises(TypeError, match="coroutine function"):
                executor.submit(coroutine)
        finally:
            coroutine.close()


@pytest.mark.parametrize("work", [works.raise_detailed, works.async_raise_detailed])
def test_an_exception_comes_back_with_its_type_args_and_the_worker_traceback(work):
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        future = executor.submit(work, 7, detail="disk full")
        with pytest.raises(works.DetailedError) as info:
            future.result(T)
        # The executor goes on serving after a work's exception.
        assert executor.submit(works.add, 1, 1).result(T) == 2
    assert info.value.args == (7, "disk full")
    assert work.__name__ in "".join(traceback.format_exception(info.value))


# -- cancellation -------------------------------------------------------------


def test_cancelling_a_waiting_work_cancels_it_at_once_and_it_never_runs():
    release, log = threading.Event(), []
    with ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=1) as executor:
        blocker = executor.submit(works.wait_event, release)
        waiting = executor.submit(works.append_to, log, "cancelled work ran")
        assert waiting.cancel() is True
        assert waiting.cancelled()
        with pytest.raises(CancelledError):
            waiting.result(0)
        release.set()
        assert blocker.result(T) == "released"
        # The worker has taken the next work since; the cancelled one never ran.
        assert executor.submit(works.append_to, log, "next").result(T) == "next"
    assert log == ["next"]


def test_cancelling_a_running_coroutine_work_runs_its_cleanup_and_spares_the_others():
    started, cleaned_up, keep_going = threading.Event(), threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        other = executor.submit(works.async_wait_event, keep_going)
        target = executor.submit(works.async_wait_then_mark, started, cleaned_up)
        assert started.wait(T)
        assert target.cancel() is True
        assert target.cancelled()
        with pytest.raises(CancelledError):
            target.result(T)
        # The work's own `finally` ran in the worker: it was really cancelled.
        assert cleaned_up.wait(T)
        # The other work on that same worker is still running, and finishes.
        assert not other.done()
        keep_going.set()
        assert other.result(T) == "released"
        assert executor.statistics().cancelled == 1


def test_cancelling_a_running_plain_function_returns_false_and_it_runs_to_its_end():
    started, release = threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        future = executor.submit(works.mark_then_wait, started, release)
        assert started.wait(T)
        assert future.cancel() is False
        release.set()
        assert future.result(T) == "released"
        assert not future.cancelled()


def test_a_cancelled_running_coroutine_work_stays_cancelled_when_its_result_comes_anyway():
    """Guards against a result that reaches the parent after cancel()
    reviving the future: SPEC says it ends cancelled, the result dropped."""
    started, release = threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        # Shielded: the work ignores the cancel request and returns a value.
        future = executor.submit(works.async_shielded_until_set, started, release, "late")
        assert started.wait(T)
        assert future.cancel() is True
        release.set()
        # The work's slot is freed when its result has come back.
        wait_until(lambda: executor.statistics().running == 0)
        assert future.cancelled()
        with pytest.raises(CancelledError):
            future.result(0)
        statistics = executor.statistics()
    assert (statistics.completed, statistics.cancelled) == (0, 1)


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
        wait_until(lambda: gauge.total_running() == 4)
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
        wait_until(lambda: gauge.total_running() == 2)
        release.set()
        for future in futures:
            future.result(T)
    assert gauge.started == list(range(10))


# -- map ----------------------------------------------------------------------


def test_map_yields_results_in_input_order_over_several_iterables():
    with ThreadAsyncPoolExecutor(pool_size=2) as executor:
        # Later items finish first; results still come in input order.
        delays = [0.2, 0.15, 0.1, 0.05, 0.0]
        assert list(executor.map(works.async_sleep, delays, "abcde")) == list("abcde")
        # The shortest iterable ends the map, as with the builtin map.
        assert list(executor.map(works.add, range(10), range(3))) == [0, 2, 4]


def test_map_sends_each_chunk_of_chunksize_items_to_one_worker():
    with ThreadAsyncPoolExecutor(pool_size=2) as executor:
        names = list(executor.map(works.thread_name_of, range(8), chunksize=3))
    chunks = [names[0:3], names[3:6], names[6:8]]
    assert all(len(set(chunk)) == 1 for chunk in chunks)
    assert [worker_index(chunk[0]) for chunk in chunks] == [0, 1, 0]


def test_map_runs_the_coroutine_works_of_a_chunk_concurrently_as_one_work():
    gauge, release = works.Gauge(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=1) as executor:
        results = executor.map(
            works.async_gauged,
            itertools.repeat(gauge),
            range(8),
            itertools.repeat(release),
            chunksize=4,
        )
        # One chunk is one work under the cap, and its four items run at once.
        wait_until(lambda: gauge.total_running() == 4)
        assert executor.statistics().waiting == 1
        release.set()
        assert list(results) == list(range(8))


def test_map_reraises_a_work_exception_and_cancels_the_remaining_works():
    release = threading.Event()
    executor = ThreadAsyncPoolExecutor(pool_size=1, max_works_per_worker=1)
    try:
        results = executor.map(works.async_fail_first, range(10), itertools.repeat(release))
        with pytest.raises(ValueError, match="first item failed"):
            next(results)
    finally:
        # The nine others wait for `release`, which never comes: shutdown
        # returns only because they were cancelled.
        started = time.monotonic()
        executor.shutdown(wait=True)
    assert time.monotonic() - started < T
    statistics = executor.statistics()
    assert (statistics.completed, statistics.failed, statistics.cancelled) == (0, 1, 9)


def test_map_timeout_raises_timeout_error_and_cancels_the_works():
    started = [threading.Event() for _ in range(3)]
    cleaned_up = [threading.Event() for _ in range(3)]
    executor = ThreadAsyncPoolExecutor(pool_size=1)
    try:
        begun = time.monotonic()
        results = executor.map(works.async_wait_then_mark, started, cleaned_up, timeout=0.5)
        with pytest.raises(TimeoutError):
            next(results)
        waited = time.monotonic() - begun
        assert 0.4 < waited < T
        # Each work that had started ran its own cleanup: it was cancelled,
        # the one whose result was being waited for included.
        for was_started, cleaned in zip(started, cleaned_up, strict=True):
            assert cleaned.wait(T) if was_started.is_set() else not cleaned.is_set()
        wait_until(lambda: executor.statistics().cancelled == 3)
        assert started[0].is_set()
    finally:
        # Should the works not have been cancelled, end them here rather
        # than wait for their own 30 s timeout.
        executor.shutdown(wait=True, cancel_futures=True)


def test_map_without_buffersize_reads_all_the_input_at_once():
    pulled = []

    def source():
        for item in range(10):
            pulled.append(item)
            yield item

    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        results = executor.map(works.identity, source())
        assert pulled == list(range(10))  # before the first result is asked for
        assert list(results) == list(range(10))


def test_map_with_buffersize_reads_the_input_only_buffersize_chunks_ahead():
    pulled = []

    def endless():
        for item in itertools.count():
            pulled.append(item)
            yield item

    chunksize, buffersize = 2, 3
    with ThreadAsyncPoolExecutor(pool_size=2) as executor:
        results = executor.map(
            works.identity, endless(), chunksize=chunksize, buffersize=buffersize
        )
        try:
            assert len(pulled) <= buffersize * chunksize
            for taken in range(1, 41):
                assert next(results) == taken - 1
                chunks_begun = -(-taken // chunksize)
                assert taken <= len(pulled) <= (chunks_begun + buffersize) * chunksize
        finally:
            results.close()


def test_map_with_buffersize_serves_an_endless_iterator():
    with ThreadAsyncPoolExecutor(pool_size=2) as executor:
        results = executor.map(works.async_add, itertools.count(), buffersize=4)
        try:
            assert list(itertools.islice(results, 100)) == list(range(100))
        finally:
            results.close()


def test_closing_the_map_iterator_early_cancels_the_remaining_works():
    started = [None] + [threading.Event() for _ in range(3)]
    cleaned_up = [None] + [threading.Event() for _ in range(3)]
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        results = executor.map(works.async_first_or_wait, range(4), started, cleaned_up)
        assert next(results) == 0
        for event in started[1:]:
            assert event.wait(T)
        results.close()
        for event in cleaned_up[1:]:
            assert event.wait(T)
        wait_until(lambda: executor.statistics().cancelled == 3)


def test_map_rejects_bad_arguments_and_maps_empty_input_to_nothing():
    with ThreadAsyncPoolExecutor(pool_size=1) as executor:
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(works.identity, [1], chunksize=0)
        with pytest.raises(ValueError, match="buffersize"):
            executor.map(works.identity, [1], buffersize=0)
        with pytest.raises(TypeError, match="callable"):
            executor.map(None, [1])
        assert list(executor.map(works.identity, [])) == []
        assert list(executor.map(works.identity, [], buffersize=2)) == []


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
            assert inspect.isasyncgen(results)
            assert [value async for value in results] == [2 * i for i in range(7)]
            empty = executor.map(works.identity, [])
            assert inspect.isasyncgen(empty)
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


# -- a broken executor --------------------------------------------------------


@pytest.mark.parametrize(
    ("breaker", "escaping"),
    [
        pytest.param(works.raise_when_set, KeyboardInterrupt(), id="plain-KeyboardInterrupt"),
        pytest.param(works.async_raise_when_set, SystemExit(3), id="coroutine-SystemExit"),
        pytest.param(works.raise_when_set, works.Crash("custom"), id="plain-custom-BaseException"),
    ],
)
def test_a_base_exception_escaping_a_work_breaks_the_executor(breaker, escaping):
    started, cleaned_up, gate = threading.Event(), threading.Event(), threading.Event()
    executor = ThreadAsyncPoolExecutor(pool_size=2, max_works_per_worker=1)
    try:
        running = executor.submit(works.async_wait_then_mark, started, cleaned_up)
        breaking = executor.submit(breaker, gate, escaping)
        waiting = executor.submit(works.add, 1, 2)
        assert started.wait(T)
        gate.set()

        errors = []
        for future in [breaking, running, waiting]:
            with pytest.raises(CancelledError) as info:
                future.result(T)
            errors.append(info.value.__cause__)
        broken = errors[0]
        assert isinstance(broken, AplexWorkerError)
        assert all(error is broken for error in errors)
        assert broken.__cause__ is escaping
        # The coroutine work on the other worker was cancelled there.
        assert cleaned_up.wait(T)

        with pytest.raises(AplexWorkerError):
            executor.submit(works.add, 1)
        with pytest.raises(AplexWorkerError):
            executor.map(works.add, [1])
    finally:
        begun = time.monotonic()
        executor.shutdown(wait=True)
    assert time.monotonic() - begun < T


def test_a_broken_awaitable_executor_fails_awaits_and_set_future_loop():
    async def main():
        executor = ThreadAsyncPoolExecutor(pool_size=1, awaitable=True)
        try:
            future = executor.submit(works.raise_keyboard_interrupt)
            with pytest.raises(CancelledError) as info:
                await asyncio.wait_for(future, T)
            assert isinstance(info.value.__cause__, AplexWorkerError)
            with pytest.raises(AplexWorkerError):
                executor.set_future_loop(asyncio.get_running_loop())
            with pytest.raises(AplexWorkerError):
                executor.submit(works.add, 1)
        finally:
            await asyncio.to_thread(executor.shutdown)

    asyncio.run(main())


# -- initializers -------------------------------------------------------------


def test_a_plain_initializer_runs_once_per_worker_before_its_works():
    log = []
    with ThreadAsyncPoolExecutor(
        pool_size=2, initializer=works.record_initializer, initargs=(log, "ready")
    ) as executor:
        tags = [executor.submit(works.initialized_tag) for _ in range(6)]
        assert [future.result(T) for future in tags] == ["ready"] * 6
        names = {executor.submit(works.thread_name).result(T) for _ in range(4)}
    assert sorted(log) == sorted((name, "ready") for name in names)
    assert len(log) == 2


def test_a_coroutine_initializer_is_awaited_on_each_workers_loop_before_its_works():
    log = []
    with ThreadAsyncPoolExecutor(
        pool_size=2, initializer=works.async_record_initializer, initargs=(log, "ready")
    ) as executor:
        tags = [executor.submit(works.initialized_tag) for _ in range(6)]
        assert [future.result(T) for future in tags] == ["ready"] * 6
    assert len(log) == 2
    assert len({name for name, _, _ in log}) == 2
    assert all(entry[1:] == ("asyncio", "ready") for entry in log)


def test_a_failing_initializer_breaks_the_executor_with_its_exception_as_the_cause():
    gate = threading.Event()
    executor = ThreadAsyncPoolExecutor(
        pool_size=1, initializer=works.failing_initializer, initargs=(gate, "no database")
    )
    try:
        future = executor.submit(works.add, 1, 2)
        gate.set()
        with pytest.raises(CancelledError) as info:
            future.result(T)
        broken = info.value.__cause__
        assert isinstance(broken, AplexWorkerError)
        assert isinstance(broken.__cause__, ValueError)
        assert broken.__cause__.args == ("no database",)
        with pytest.raises(AplexWorkerError):
            executor.submit(works.add, 1)
    finally:
        executor.shutdown(wait=True)


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

    assert set(vars(concurrent.futures.Future())) <= set(vars(ConcurrentFuture()))


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
