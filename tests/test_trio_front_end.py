"""The executors for trio programs, ``aplex.backends.trio``.

These tests run under pytest-trio (``@pytest.mark.trio``): they are about the
trio front end itself, TrioFuture, the async map iterator and trio
cancellation scopes. The same API awaited from asyncio is covered by
test_backend_matrix.py. Works signal the test through files in ``tmp_path``,
so that the process executor is checked the same way as the thread one.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading

import pytest
import trio
import trio.testing

from aplex.backends.trio import ProcessAsyncPoolExecutor, ThreadAsyncPoolExecutor
from aplex.futures import TrioFuture
from tests import works

# Generous: two cores, shared with other test runs.
TIMEOUT = 20


@pytest.fixture(
    params=[ThreadAsyncPoolExecutor, ProcessAsyncPoolExecutor], ids=["thread", "process"]
)
def executor_class(request):
    return request.param


@pytest.fixture
def pool(executor_class):
    executor = executor_class(pool_size=1)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


async def wait_for_path(path):
    """Wait until a work has written ``path``."""
    with trio.fail_after(TIMEOUT):
        while not await trio.Path(path).exists():
            await trio.sleep(0.005)


@pytest.mark.trio
async def test_worker_backend_defaults_to_trio(pool):
    with trio.fail_after(TIMEOUT):
        library, _, _ = await pool.run(works.async_where)
        # A trio-native work needs a trio worker: none was asked for.
        slept = await pool.run(works.trio_native_sleep, 0.01)
    assert library == "trio"
    assert slept >= 0.01


@pytest.mark.trio
async def test_asyncio_workers_on_request(executor_class):
    async with executor_class(pool_size=1, worker_backend="asyncio") as executor:
        with trio.fail_after(TIMEOUT):
            library, _, _ = await executor.run(works.async_where)
    assert library == "asyncio"


@pytest.mark.trio
async def test_submit_returns_a_trio_future(pool):
    future = pool.submit(works.async_add, 2, y=3)
    assert isinstance(future, TrioFuture)
    with trio.fail_after(TIMEOUT):
        assert await future == 5
    assert future.done()
    assert not future.cancelled()
    assert future.result() == 5
    assert future.exception() is None


@pytest.mark.trio
async def test_trio_future_before_it_is_done(pool, tmp_path):
    release = tmp_path / "release"
    future = pool.submit(works.async_until_file, str(release), "done")
    assert not future.done()
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.result()
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.exception()
    release.touch()
    with trio.fail_after(TIMEOUT):
        assert await future == "done"


@pytest.mark.trio
async def test_trio_future_carries_the_exception(pool):
    future = pool.submit(works.raise_work_error, "bad", 1)
    with trio.fail_after(TIMEOUT), pytest.raises(works.WorkError) as info:
        await future
    assert info.value.args == ("bad", 1)
    assert type(future.exception()) is works.WorkError


@pytest.mark.trio
async def test_map_returns_an_async_iterator(pool):
    results = pool.map(works.async_add, range(6), range(6), chunksize=4)
    assert hasattr(results, "__anext__")
    assert not hasattr(results, "__next__")
    with trio.fail_after(TIMEOUT):
        assert [value async for value in results] == [0, 2, 4, 6, 8, 10]
        assert [value async for value in pool.map(works.add, [])] == []


@pytest.mark.trio
async def test_async_with_shuts_down(executor_class, tmp_path):
    """Leaving ``async with`` waits for the works already submitted, without
    blocking the trio loop meanwhile; then the executor takes no more."""
    release = tmp_path / "release"
    order = []

    async def release_once_exit_waits():
        # Every other task is blocked only once the exit waits for shutdown.
        await trio.testing.wait_all_tasks_blocked()
        order.append("released")
        await trio.Path(release).touch()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with executor_class(pool_size=1) as executor:
                future = executor.submit(works.async_until_file, str(release), "ended")
                nursery.start_soon(release_once_exit_waits)
            order.append("exited")
    assert order == ["released", "exited"]
    assert future.done()
    assert future.result() == "ended"
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(works.add, 1)


async def _cancel_once_started(scope, started, cleanup=None):
    """Cancel ``scope`` once the work has started; wait for its cleanup."""
    await wait_for_path(started)
    scope.cancel()
    if cleanup is not None:
        await wait_for_path(cleanup)


@pytest.mark.trio
async def test_cancelling_the_scope_awaiting_a_future_cancels_the_work(pool, tmp_path):
    started, cleanup = tmp_path / "started", tmp_path / "cleanup"
    future = pool.submit(works.async_record_cancellation, str(started), str(cleanup))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_once_started, scope, started, cleanup)
                await future
    assert scope.cancelled_caught
    assert future.cancelled()
    # The work's own cleanup ran, ended by the trio worker's cancellation.
    assert cleanup.read_text() == "Cancelled"


@pytest.mark.trio
async def test_cancelling_the_scope_awaiting_run_cancels_the_work(pool, tmp_path):
    started, cleanup = tmp_path / "started", tmp_path / "cleanup"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_once_started, scope, started, cleanup)
                await pool.run(works.async_record_cancellation, str(started), str(cleanup))
    assert scope.cancelled_caught
    assert cleanup.read_text() == "Cancelled"
    assert pool.statistics().cancelled == 1


@pytest.mark.trio
async def test_cancelling_a_map_iteration_cancels_its_works(pool, tmp_path):
    """Cancelling the scope around ``async for`` cancels the work being
    awaited and the ones not yet reached."""
    paths = [(tmp_path / f"started{i}", tmp_path / f"cleanup{i}") for i in range(2)]
    starts, cleanups = ([str(p) for p in column] for column in zip(*paths, strict=True))
    received = []

    async def cancel_once_both_started(scope):
        for started, _ in paths:
            await wait_for_path(started)
        scope.cancel()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(cancel_once_both_started, scope)
                results = pool.map(works.async_record_cancellation, starts, cleanups)
                received.extend([value async for value in results])
        for _, cleanup in paths:
            await wait_for_path(cleanup)
    assert scope.cancelled_caught
    assert received == []
    assert [cleanup.read_text() for _, cleanup in paths] == ["Cancelled", "Cancelled"]


@pytest.mark.trio
async def test_a_result_after_the_caller_was_cancelled_is_dropped(pool, tmp_path):
    """A work that ends after its caller's scope was cancelled (here, one
    shielded from the cancellation) must not raise anywhere, and the future
    ends cancelled; the executor goes on serving."""
    started, release = tmp_path / "started", tmp_path / "release"
    future = pool.submit(works.async_shielded_until_file, str(started), str(release), "late")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_once_started, scope, started)
                await future
        assert scope.cancelled_caught
        assert future.cancelled()
        # Only now does the work return, into a future already cancelled.
        await trio.Path(release).touch()
        # Its worker slot is freed when the late result arrives.
        while pool.statistics().running:
            await trio.sleep(0.005)
        assert await pool.run(works.async_add, 1, y=1) == 2
    statistics = pool.statistics()
    assert (statistics.cancelled, statistics.completed, statistics.failed) == (1, 1, 0)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()


@pytest.mark.trio
async def test_a_caller_still_waiting_learns_of_the_cancellation(tmp_path):
    """When one of two tasks awaiting a future is cancelled, the future is
    cancelled, and the other task is told so rather than left waiting."""
    started, cleanup = tmp_path / "started", tmp_path / "cleanup"
    outcome = []

    async def still_waiting(future):
        try:
            await future
        except concurrent.futures.CancelledError:
            outcome.append("told")

    with trio.fail_after(TIMEOUT):
        async with ThreadAsyncPoolExecutor(pool_size=1) as executor:
            future = executor.submit(works.async_record_cancellation, str(started), str(cleanup))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(still_waiting, future)
                with trio.CancelScope() as scope:
                    nursery.start_soon(_cancel_once_started, scope, started, cleanup)
                    await future
    assert scope.cancelled_caught
    assert outcome == ["told"]


def test_a_result_after_the_trio_run_ended_is_dropped(caplog):
    """A plain work cannot be interrupted: its result arrives after the trio
    run that awaited it has ended, and must be dropped without an error
    (no exception logged by a done-callback, none in a thread)."""
    release = threading.Event()
    started = threading.Event()

    def plain_work():
        started.set()
        return works.wait_event(release, TIMEOUT)

    async def main(executor):
        future = executor.submit(plain_work)
        with trio.move_on_after(TIMEOUT) as outer:
            with trio.CancelScope() as scope:
                await trio.to_thread.run_sync(started.wait, TIMEOUT)
                scope.cancel()
                await future
        assert not outer.cancelled_caught
        assert scope.cancelled_caught
        return future

    with caplog.at_level(logging.DEBUG), ThreadAsyncPoolExecutor(pool_size=1) as executor:
        future = trio.run(main, executor)
        # A running plain function is not cancelled: it ends with its result,
        # which the executor's exit waits for.
        assert not future.cancelled()
        release.set()
    assert future.done()
    assert future.result() == "released"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.trio
@pytest.mark.parametrize(
    ("option", "value"), [("awaitable", True), ("awaitable", False), ("future_loop", object())]
)
async def test_asyncio_options_are_rejected(executor_class, option, value):
    """The trio executors' constructors do not take the asyncio front end's
    options (a type checker says so too): the error names the option."""
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{option}'"):
        executor_class(pool_size=1, **{option: value})


@pytest.mark.trio
async def test_set_future_loop_is_rejected(pool):
    with pytest.raises(TypeError, match="set_future_loop\\(\\) does not apply"):
        pool.set_future_loop(object())
    # Still usable afterwards.
    with trio.fail_after(TIMEOUT):
        assert await pool.run(works.add, 2, y=2) == 4
