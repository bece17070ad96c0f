"""A broken executor, and initializers (whose failure breaks it).

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import pytest

from aplex import AplexWorkerError, ThreadAsyncPoolExecutor
from tests import works
from tests.support import T

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
