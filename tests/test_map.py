"""map(): order, chunks, errors, timeouts, buffering and early closing.

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time

import pytest

from aplex import ThreadAsyncPoolExecutor
from tests import works
from tests.support import T, wait_until, worker_index

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
        gauge.wait_running(4)
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
        # What concurrent.futures' map raises: the built-in TimeoutError from
        # Python 3.11 on, a class of its own on 3.10.
        with pytest.raises(concurrent.futures.TimeoutError):
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
