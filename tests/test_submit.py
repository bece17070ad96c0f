"""submit() and cancel(): what runs where, what comes back, what a cancel does.

All on ThreadAsyncPoolExecutor, against real thread workers (the process
kind has its own modules); every wait is bounded, nothing waits by sleeping.
"""

from __future__ import annotations

import threading
import traceback
from concurrent.futures import CancelledError

import pytest

from aplex import ThreadAsyncPoolExecutor
from tests import works
from tests.support import T, wait_until

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
