"""What a coroutine work is, and when a caller's cancellation reaches it.

SPEC ("A coroutine work"): a work whose call returns an awaitable runs as a
task and is cancellable, whatever made it (a coroutine function, a partial,
a lambda, an object with an async ``__call__``, a plain function returning a
coroutine); an async generator function is refused at submit. ``run()`` and
awaiting a TrioFuture are checkpoints: a caller already cancelled starts
nothing.
"""

from __future__ import annotations

import functools
import threading
import time

import anyio
import pytest
import trio

import aplex
from aplex.backends.trio import ThreadAsyncPoolExecutor as TrioThreadExecutor
from tests import works
from tests.support import T, wait_until


def coroutine_work_made_by(how, started, cleaned_up):
    """A work, made ``how``, and its arguments: its call returns the
    coroutine of :func:`works.async_wait_then_mark`."""
    if how == "coroutine function":
        return works.async_wait_then_mark, (started, cleaned_up)
    if how == "partial":
        return functools.partial(works.async_wait_then_mark, started), (cleaned_up,)
    if how == "lambda":
        return lambda: works.async_wait_then_mark(started, cleaned_up), ()
    if how == "async __call__":
        return works.AsyncCallable(), (started, cleaned_up)
    return works.returns_coroutine, (started, cleaned_up)


@pytest.mark.parametrize(
    "how",
    ["coroutine function", "partial", "lambda", "async __call__", "plain function"],
)
def test_a_work_whose_call_returns_a_coroutine_runs_as_a_task_and_is_cancellable(how):
    started, cleaned_up, other_started = threading.Event(), threading.Event(), threading.Event()
    with aplex.ThreadAsyncPoolExecutor(pool_size=1) as pool:
        work, args = coroutine_work_made_by(how, started, cleaned_up)
        future = pool.submit(work, *args)
        assert started.wait(T)
        # A task: the worker's loop runs another work beside it.
        other = pool.submit(works.async_wait_then_mark, other_started, threading.Event())
        assert other_started.wait(T)
        # Its worker reported it as a task (if the parent could not tell)
        # with the batch that started it, before the other one's.
        assert future.cancel() is True
        assert cleaned_up.wait(T), "the task was not cancelled in its worker"
        assert future.cancelled()
        assert other.cancel() is True


@pytest.mark.parametrize("how", ["lambda", "plain function"])
def test_the_worker_reports_a_task_the_parent_could_not_know_across_processes(how, tmp_path):
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    if how == "lambda":
        work = lambda: works.async_mark_files_until_cancelled(str(started), str(cleaned))  # noqa: E731
    else:
        work = functools.partial(works.returns_coroutine_of_files, str(started), str(cleaned))
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as pool:
        future = pool.submit(work)
        deadline = time.monotonic() + T
        while not started.exists():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # A round trip through the same worker: its report is read by now.
        assert pool.submit(works.identity, 1).result(T) == 1
        assert future.cancel() is True
        wait_until(cleaned.exists)
        assert cleaned.read_text() == "cleaned up"
        assert future.cancelled()
        # The report ended no work: the pipe's accounting of works in
        # flight is right, and the next works are sent and answered.
        assert [pool.submit(works.add, i, 1).result(T) for i in range(3)] == [1, 2, 3]


def test_cancel_answers_at_once_and_is_never_contradicted():
    """Before its worker says the work runs as a task (here: while the call
    that will return a coroutine still runs), cancel() answers False, and
    the work runs to its end with its result."""
    started, release = threading.Event(), threading.Event()

    def blocks_then_returns_a_coroutine():
        started.set()
        release.wait(T)
        return works.async_add(20, 22)

    with aplex.ThreadAsyncPoolExecutor(pool_size=1) as pool:
        future = pool.submit(blocks_then_returns_a_coroutine)
        assert started.wait(T)
        assert future.cancel() is False
        release.set()
        assert future.result(T) == 42
        assert not future.cancelled()


def test_any_awaitable_a_call_returns_is_awaited():
    with aplex.ThreadAsyncPoolExecutor(pool_size=1) as pool:
        assert pool.submit(works.returns_asyncio_future, "awaited").result(T) == "awaited"
        assert list(pool.map(works.returns_asyncio_future, [1, 2, 3], chunksize=3)) == [1, 2, 3]


@pytest.mark.parametrize(
    "work",
    [
        works.async_generator_function,
        functools.partial(works.async_generator_function),
    ],
    ids=["function", "partial"],
)
def test_an_async_generator_function_is_refused_at_submit(work):
    with aplex.ThreadAsyncPoolExecutor(pool_size=1) as pool:
        for call in (lambda: pool.submit(work), lambda: pool.map(work, [1])):
            with pytest.raises(TypeError, match="async generator function"):
                call()

        async def run():
            with pytest.raises(TypeError, match="async generator function"):
                await pool.run(work)

        anyio.run(run)
        statistics = pool.statistics()
    assert (statistics.completed, statistics.failed, statistics.waiting) == (0, 0, 0)


def test_an_async_generator_method_is_refused_at_submit():
    class Source:
        async def items(self):
            yield 1

    with aplex.ThreadAsyncPoolExecutor(pool_size=1) as pool:
        with pytest.raises(TypeError, match="async generator function"):
            pool.submit(Source().items)


# -- a cancelled caller starts nothing ----------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["thread", "process"])
async def test_run_from_a_cancelled_scope_never_starts_the_work(kind, tmp_path):
    """trio-parallel's test_entry_cancellation: run() is a checkpoint."""
    ran = tmp_path / "ran"
    executor_class = (
        aplex.ThreadAsyncPoolExecutor if kind == "thread" else aplex.ProcessAsyncPoolExecutor
    )
    with executor_class(pool_size=1) as pool:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await pool.run(works.touch, str(ran))
        assert scope.cancelled_caught
        # One worker takes its works in order: had the first been sent, it
        # would have run before this one.
        assert await pool.run(works.identity, "next") == "next"
        statistics = pool.statistics()
    assert not ran.exists()  # noqa: ASYNC240 (a local stat, once)
    assert (statistics.completed, statistics.cancelled) == (1, 0)


@pytest.mark.trio
async def test_awaiting_a_trio_future_from_a_cancelled_scope_is_a_checkpoint():
    release, log = threading.Event(), []
    with TrioThreadExecutor(pool_size=1, max_works_per_worker=1) as pool:
        done = pool.submit(works.identity, "done")
        assert await done == "done"
        blocker = pool.submit(works.wait_event, release)
        waiting = pool.submit(works.append_to, log, "ran")
        with trio.CancelScope() as scope:
            scope.cancel()
            await done  # ended already, and still a cancel point
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await waiting
        assert scope.cancelled_caught
        # The work it awaited is cancelled with it, before it could start.
        assert waiting.cancelled()
        release.set()
        assert await blocker == "released"
    assert log == []
