"""Nothing keeps a finished work alive, in the parent or in its worker.

SPEC ("State"): nothing keeps a finished work's callable, arguments, result
or traceback frames alive. These are CPython's own checks of
``concurrent.futures`` (``test_no_stale_references``,
``test_ressources_gced_in_workers``, ``test_free_reference``), on thread
workers and on process workers of all three start methods. Objects are
watched with weakrefs in the test's process; in a worker process, by the
file their ``__del__`` writes there. No test calls the garbage collector:
what is let go of must be freed at once, not after a collection.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from pathlib import Path

import pytest

import aplex
from tests import works
from tests.support import T, wait_until

# Fork-start workers in a test process that runs threads: what the fork
# method is, and what this module means to cover.
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")

METHODS = ["fork", "forkserver", "spawn"]


def make_pool(kind, **options):
    if kind == "thread":
        return aplex.ThreadAsyncPoolExecutor(pool_size=1, **options)
    return aplex.ProcessAsyncPoolExecutor(pool_size=1, mp_context=kind, **options)


@pytest.fixture(params=["thread", *METHODS])
def kind(request):
    return request.param


@pytest.fixture
def pool(kind):
    executor = make_pool(kind)
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture(params=METHODS)
def process_pool(request):
    executor = make_pool(request.param)
    yield executor
    executor.shutdown(wait=True)


def wait_for_path(path):
    deadline = time.monotonic() + T
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared: the object was kept"
        time.sleep(0.005)


def submit_each_way(pool, how, referent):
    """Submit a work that holds ``referent`` in one way; discard its future."""
    if how == "callable":
        pool.submit(referent.method)
    elif how == "coroutine callable":
        pool.submit(referent.async_method)
    elif how == "argument":
        pool.submit(works.ignore, referent)
    elif how == "argument of a failing work":
        pool.submit(works.raise_holding, referent)
    elif how == "argument of a failing coroutine":
        pool.submit(works.async_raise_holding, referent)
    else:
        assert list(pool.map(works.ignore, [referent, 1, 2], chunksize=3)) == [None] * 3


@pytest.mark.parametrize(
    "how",
    [
        "callable",
        "coroutine callable",
        "argument",
        "argument of a failing work",
        "argument of a failing coroutine",
        "map chunk",
    ],
)
def test_no_stale_references(pool, how):
    """Once a work has ended and its future is dropped, nothing of aplex's
    holds its callable or arguments (CPython's test_no_stale_references)."""
    referent = works.Referent()
    collected = threading.Event()
    watch = weakref.ref(referent, lambda _: collected.set())
    submit_each_way(pool, how, referent)
    del referent
    assert collected.wait(T), "a finished work's callable or arguments are still referenced"
    assert watch() is None


@pytest.mark.parametrize(
    "work",
    [works.ignore, works.async_ignore, works.raise_holding, works.async_raise_holding],
)
def test_a_worker_process_frees_a_works_arguments_once_it_has_ended(process_pool, work, tmp_path):
    """The worker's copy of the arguments is freed when the work ends, not
    when the next one comes; with a failing work, so are the frames of its
    traceback that hold them (CPython's test_ressources_gced_in_workers)."""
    worker_pid = process_pool.submit(works.pid).result(T)
    marker = tmp_path / "argument"
    future = process_pool.submit(work, works.Referent(str(marker)))
    future.exception(T)
    wait_for_path(Path(f"{marker}-{worker_pid}"))
    assert future.done()


def test_a_worker_process_frees_a_result_once_it_is_sent(process_pool, tmp_path):
    worker_pid = process_pool.submit(works.pid).result(T)
    marker = tmp_path / "result"
    future = process_pool.submit(works.make_referent, str(marker))
    assert isinstance(future.result(T), works.Referent)
    wait_for_path(Path(f"{marker}-{worker_pid}"))


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_keeps_no_result_it_has_yielded(pool, chunksize):
    """Each result is the caller's alone once yielded (CPython's
    test_free_reference): dropping it frees it, chunk or not."""
    for referent in pool.map(works.make_referent, [None] * 6, chunksize=chunksize):
        watch = weakref.ref(referent)
        del referent
        wait_until(lambda: watch() is None)  # noqa: B023 (checked before the loop moves on)


@pytest.mark.parametrize("kind", ["thread", "forkserver"])
def test_async_map_keeps_no_result_it_has_yielded(kind):
    async def main():
        with make_pool(kind, awaitable=True) as pool:
            async for referent in pool.map(works.make_referent, [None] * 6, chunksize=3):
                watch = weakref.ref(referent)
                del referent
                wait_until(lambda: watch() is None)  # noqa: B023

    asyncio.run(main())


def test_a_cancelled_waiting_work_is_let_go_of_at_once(kind, tmp_path):
    """A work cancelled while it waits stays in the executor's queue until
    its turn comes: its callable and arguments must not stay with it."""
    release = tmp_path / "release"
    with make_pool(kind, max_works_per_worker=1) as pool:
        blocker = pool.submit(works.async_until_file, str(release), "released")
        referent = works.Referent()
        collected = threading.Event()
        watch = weakref.ref(referent, lambda _: collected.set())
        waiting = pool.submit(works.ignore, referent)
        assert waiting.cancel() is True
        del referent
        assert collected.wait(T), "a cancelled waiting work still holds its arguments"
        assert not blocker.done()
        release.touch()
        assert blocker.result(T) == "released"
    assert watch() is None


def test_a_thread_workers_exception_keeps_only_the_works_own_frames():
    """On thread workers an exception keeps its traceback, as with
    ThreadPoolExecutor; once the future is dropped it is freed, with the
    arguments its frames hold, without waiting for the garbage collector
    (aplex's own frames in it make no cycle)."""
    with aplex.ThreadAsyncPoolExecutor(pool_size=1) as pool:
        for work in (works.raise_holding, works.async_raise_holding):
            referent = works.Referent()
            collected = threading.Event()
            watch = weakref.ref(referent, lambda _: collected.set())  # noqa: B023
            future = pool.submit(work, referent)
            del referent
            error = future.exception(T)
            assert error.__traceback__ is not None
            assert watch() is not None  # the work's frame, in the traceback, holds it
            del future, error
            assert collected.wait(T)
