"""The backend contract: every caller loop x worker loop x worker kind.

Three independent axes (see STYLE.md): the caller's event loop (asyncio or
trio, the ``anyio_backend`` fixture), the loop inside each worker
(``worker_backend``) and the worker kind (thread or process). Each test runs
on the full cross product with one executor of its own, built with the front
end that fits the caller: ``aplex``'s executors with ``awaitable=True`` for
asyncio callers, ``aplex.backends.trio``'s for trio callers. ``run()`` is the
same on both.

Works written on AnyIO run on either worker loop; the trio-native one only
on trio workers. Process workers share no memory with the test, so works
signal it through files in ``tmp_path``.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import anyio
import pytest
import sniffio

import aplex
import aplex.backends.trio
from aplex.futures import AsyncioFuture, TrioFuture
from tests import works

pytestmark = pytest.mark.anyio

# The executor class a caller on each loop uses, per worker kind.
FRONT_ENDS = {
    "asyncio": {
        "thread": aplex.ThreadAsyncPoolExecutor,
        "process": aplex.ProcessAsyncPoolExecutor,
    },
    "trio": {
        "thread": aplex.backends.trio.ThreadAsyncPoolExecutor,
        "process": aplex.backends.trio.ProcessAsyncPoolExecutor,
    },
}
FUTURE_TYPES = {"asyncio": AsyncioFuture, "trio": TrioFuture}
# How each worker loop names the exception that cancels a work.
CANCELLED_EXC_NAMES = {"asyncio": "CancelledError", "trio": "Cancelled"}

# Generous: two cores, shared with other test runs.
TIMEOUT = 20


@pytest.fixture(params=["asyncio", "trio"], ids=["caller_asyncio", "caller_trio"])
def anyio_backend(request):
    """The caller's event loop, under an id that says which axis it is."""
    return request.param


@pytest.fixture(params=["asyncio", "trio"], ids=["worker_asyncio", "worker_trio"])
def worker_backend(request):
    """The event loop inside each worker."""
    return request.param


@pytest.fixture(params=["thread", "process"])
def kind(request):
    return request.param


@pytest.fixture
def pool(anyio_backend, worker_backend, kind):
    """A one-worker executor of ``kind`` running ``worker_backend``, with the
    front end of the caller's loop."""
    options = {"awaitable": True} if anyio_backend == "asyncio" else {}
    executor = FRONT_ENDS[anyio_backend][kind](
        pool_size=1, worker_backend=worker_backend, **options
    )
    yield executor
    # cancel_futures: a failed test must not leave its teardown waiting for
    # a work that was meant to be cancelled.
    executor.shutdown(wait=True, cancel_futures=True)


async def wait_for_path(path: Path) -> None:
    """Wait until a work has written ``path``."""
    with anyio.fail_after(TIMEOUT):
        while not await anyio.Path(path).exists():
            await anyio.sleep(0.005)


async def test_run_result(pool, anyio_backend, worker_backend, kind):
    assert sniffio.current_async_library() == anyio_backend
    with anyio.fail_after(TIMEOUT):
        assert await pool.run(works.async_add, 2, y=3) == 5
        assert await pool.run(works.add, 2, y=3) == 5
        library, pid, thread_name = await pool.run(works.async_where)
    # The work ran on the loop and in the kind of worker asked for.
    assert library == worker_backend
    if kind == "thread":
        assert pid == os.getpid()
        assert thread_name.startswith("aplex-pool")
    else:
        assert pid != os.getpid()


async def test_submit_then_await(pool, anyio_backend):
    with anyio.fail_after(TIMEOUT):
        coroutine_future = pool.submit(works.async_add, 2, y=3)
        plain_future = pool.submit(works.add, 4, y=5)
        assert isinstance(coroutine_future, FUTURE_TYPES[anyio_backend])
        assert isinstance(plain_future, FUTURE_TYPES[anyio_backend])
        assert await coroutine_future == 5
        assert await plain_future == 9
    assert coroutine_future.done() and coroutine_future.result() == 5


async def test_map_async_iteration(pool):
    with anyio.fail_after(TIMEOUT):
        results = pool.map(works.async_add, range(5), range(5), chunksize=2)
        assert hasattr(results, "__anext__")
        assert not hasattr(results, "__next__")
        assert [value async for value in results] == [0, 2, 4, 6, 8]
        plain = [value async for value in pool.map(works.add, range(3), [10] * 3)]
    assert plain == [10, 11, 12]


@pytest.mark.parametrize("via", ["run", "submit"])
async def test_cancelling_the_caller_cancels_the_work_in_its_worker(
    pool, worker_backend, via, tmp_path
):
    """Cancelling the scope awaiting run() or a submitted future must run
    the work's own cleanup in the worker, and leave another work on the same
    worker running."""
    started, cleanup, release = (tmp_path / name for name in ("started", "cleanup", "release"))
    outcome = {}
    scope = anyio.CancelScope()
    futures = []

    async def await_work(*args):
        if via == "run":
            return await pool.run(*args)
        futures.append(pool.submit(*args))
        return await futures[0]

    async def run_bystander():
        outcome["bystander"] = await pool.run(works.async_until_file, str(release), "undisturbed")

    async def run_cancelled():
        with scope:
            await await_work(works.async_record_cancellation, str(started), str(cleanup))
        outcome["unwound"] = True

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(run_bystander)
            task_group.start_soon(run_cancelled)
            await wait_for_path(started)
            scope.cancel()
            await wait_for_path(cleanup)
            # The bystander is still waiting for its file: only now may it end.
            assert "bystander" not in outcome
            await anyio.Path(release).touch()

    assert scope.cancelled_caught
    assert outcome == {"bystander": "undisturbed", "unwound": True}
    # The cleanup ran because the worker's loop cancelled the work.
    assert cleanup.read_text() == CANCELLED_EXC_NAMES[worker_backend]
    if via == "submit":
        assert futures[0].cancelled()
    statistics = pool.statistics()
    assert (statistics.cancelled, statistics.completed, statistics.failed) == (1, 1, 0)


async def test_cancelling_run_of_a_running_plain_function(pool, tmp_path):
    """A running plain function cannot be interrupted: the caller of run()
    unwinds at once all the same, the work runs to its end with its result,
    and the worker goes on serving."""
    started, release = tmp_path / "started", tmp_path / "release"

    async def cancel_once_started(scope):
        await wait_for_path(started)
        scope.cancel()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as task_group:
            with anyio.CancelScope() as scope:
                task_group.start_soon(cancel_once_started, scope)
                await pool.run(works.plain_until_file, str(started), str(release), "ended")
        assert scope.cancelled_caught
        # The caller unwound while the work was still blocked on its file.
        assert not await anyio.Path(release).exists()
        await anyio.Path(release).touch()
        assert await pool.run(works.add, 1, y=1) == 2
    statistics = pool.statistics()
    assert (statistics.cancelled, statistics.completed, statistics.failed) == (0, 2, 0)


async def test_errors_round_trip(pool):
    args = ("bad input", 42, {"key": [1, 2]})
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(works.WorkError) as from_run:
            await pool.run(works.async_raise_work_error, *args)
        with pytest.raises(works.WorkError) as from_future:
            await pool.submit(works.raise_work_error, *args)
        with pytest.raises(works.WorkError) as from_map:
            async for _ in pool.map(works.async_raise_work_error, ["in map"]):
                pass
        # The worker goes on serving after its works raised.
        assert await pool.run(works.add, 1, y=1) == 2
    assert from_run.value.args == args
    assert from_future.value.args == args
    assert from_map.value.args == ("in map",)
    # The worker's traceback comes along (a cause for processes, the
    # exception's own traceback for threads).
    for info, work in ((from_run, "async_raise_work_error"), (from_future, "raise_work_error")):
        assert f"in {work}" in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize("worker_backend", ["trio"], ids=["worker_trio"])
async def test_trio_native_work_on_trio_workers(pool):
    with anyio.fail_after(TIMEOUT):
        slept = await pool.run(works.trio_native_sleep, 0.05)
    assert slept >= 0.05


@pytest.mark.parametrize("worker_backend", ["asyncio"], ids=["worker_asyncio"])
async def test_asyncio_native_work_on_asyncio_workers(pool):
    with anyio.fail_after(TIMEOUT):
        slept = await pool.run(works.asyncio_native_sleep, 0.05)
    assert slept >= 0.05


@pytest.mark.parametrize("worker_backend", ["trio"], ids=["worker_trio"])
async def test_asyncio_native_work_fails_alone_on_trio_workers(pool):
    """An asyncio-native work on a trio worker fails as that one work; the
    worker is not broken by it."""
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(RuntimeError, match="no running event loop"):
            await pool.run(works.asyncio_native_sleep, 0.01)
        assert await pool.run(works.async_add, 1, y=2) == 3


@pytest.mark.parametrize("worker_backend", ["asyncio"], ids=["worker_asyncio"])
async def test_trio_native_work_fails_alone_on_asyncio_workers(pool):
    """A trio-native work on an asyncio worker fails as that one work; the
    worker is not broken by it."""
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(RuntimeError, match="async context"):
            await pool.run(works.trio_native_sleep, 0.01)
        assert await pool.run(works.async_add, 1, y=2) == 3
