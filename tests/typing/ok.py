"""Correct uses of aplex, as a user's typed code writes them.

tests/test_typing.py runs ``mypy --strict`` on this file against aplex as
installed from its wheel: it must be clean, and every ``assert_type`` holds.
Type-checked only, never run (nothing here runs at import).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from collections.abc import AsyncIterator, Iterator

from typing_extensions import assert_type

import aplex
from aplex import (
    AsyncioFuture,
    ConcurrentFuture,
    LoadBalancer,
    ProcessAsyncPoolExecutor,
    ThreadAsyncPoolExecutor,
)
from aplex.backends import trio as aplex_trio
from aplex.futures import TrioFuture
from aplex.load_balancers import Average, Random, RoundRobin, Worker


def add(x: int, y: int) -> int:
    return x + y


async def async_add(x: int, y: int) -> int:
    return x + y


def square(x: int) -> int:
    return x * x


async def async_square(x: int) -> int:
    return x * x


def greet(name: str, *, punctuation: str = "!") -> str:
    return name + punctuation


def setup(level: int, label: str) -> None:
    pass


async def async_setup(level: int) -> None:
    pass


class Sticky(LoadBalancer):
    def get_proper_worker(self, load_balancing_meta: object) -> Worker:
        return next(self.get_available_workers())


def constructors(loop: asyncio.AbstractEventLoop) -> None:
    ThreadAsyncPoolExecutor().shutdown()
    ThreadAsyncPoolExecutor(
        pool_size=None,
        max_works_per_worker=None,
        load_balancer=Random,
        awaitable=False,
        worker_loop_factory=asyncio.new_event_loop,
        worker_backend="asyncio",
        initializer=setup,
        initargs=(1, "x"),
    ).shutdown()
    ThreadAsyncPoolExecutor(awaitable=True, future_loop=loop, load_balancer=Sticky).shutdown()
    ProcessAsyncPoolExecutor(pool_size=2, max_works_per_worker=10, mp_context="spawn").shutdown()
    ProcessAsyncPoolExecutor(
        load_balancer=Average,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=async_setup,
        initargs=[1],
    ).shutdown()
    ProcessAsyncPoolExecutor(mp_context=None, worker_backend="trio").shutdown()
    aplex_trio.ThreadAsyncPoolExecutor(pool_size=2, worker_backend="asyncio").shutdown()
    aplex_trio.ProcessAsyncPoolExecutor(
        pool_size=None, load_balancer=RoundRobin, mp_context="spawn"
    ).shutdown()
    crash_proof = ProcessAsyncPoolExecutor(
        on_worker_death="replace", max_works_per_child=1000, kill_on_cancel=True
    )
    crash_proof.terminate_workers()
    crash_proof.kill_workers()
    aplex_trio.ProcessAsyncPoolExecutor(
        max_works_per_child=None, kill_on_cancel=False
    ).kill_workers()
    assert_type(crash_proof.statistics().recycled, int)


def sync_executor() -> None:
    pool = ThreadAsyncPoolExecutor(pool_size=2)
    future = pool.submit(add, 1, 2)
    assert_type(future, ConcurrentFuture[int])
    assert_type(future.result(), int)
    assert_type(future.result(timeout=1.0), int)
    # A coroutine function's future is of the awaited type.
    assert_type(pool.submit(async_add, 1, 2), ConcurrentFuture[int])
    assert_type(pool.submit(greet, "x", punctuation="?"), ConcurrentFuture[str])
    assert_type(pool.submit(lambda: 42), ConcurrentFuture[int])
    assert_type(pool.map(square, [1, 2]), Iterator[int])
    assert_type(pool.map(async_square, range(3)), Iterator[int])
    assert_type(pool.map(add, [1], [2], timeout=1.0, chunksize=2), Iterator[int])
    assert_type(pool.map(square, [1, 2], ordered=False, buffersize=1), Iterator[int])
    assert_type(ThreadAsyncPoolExecutor(awaitable=False).submit(add, 1, 2), ConcurrentFuture[int])
    pool.shutdown(wait=True, cancel_futures=False)

    # What `with` gives is the executor itself (not Any): its types hold.
    with ProcessAsyncPoolExecutor(pool_size=2) as processes:
        assert_type(processes.submit(async_add, 1, 2), ConcurrentFuture[int])
        assert_type(processes.submit(add, 1, 2).result(), int)
        for value in processes.map(square, range(3)):
            assert_type(value, int)


def standard_library_interfaces() -> None:
    # The sync executors are concurrent.futures executors, their futures
    # concurrent.futures futures.
    executor: concurrent.futures.Executor = ThreadAsyncPoolExecutor()
    executor = ProcessAsyncPoolExecutor()
    future: concurrent.futures.Future[int] = executor.submit(add, 1, 2)
    done, _ = concurrent.futures.wait([future, ThreadAsyncPoolExecutor().submit(add, 3, 4)])
    for finished in concurrent.futures.as_completed(done):
        assert_type(finished.result(), int)
    executor.shutdown()

    # A broken pool's error is a BrokenExecutor, and still an Exception.
    try:
        future.result()
    except aplex.AplexWorkerError as error:
        assert_type(error, aplex.AplexWorkerError)
        broken: concurrent.futures.BrokenExecutor = error
        print(broken)
    failure: Exception = aplex.AplexWorkerError("a worker died")
    print(failure)


async def asyncio_executor() -> None:
    async with ThreadAsyncPoolExecutor(awaitable=True) as pool:
        future = pool.submit(add, 1, 2)
        assert_type(future, AsyncioFuture[int])
        assert_type(await future, int)
        same: asyncio.Future[int] = future
        assert_type(await same, int)
        assert_type(await pool.submit(async_add, 1, 2), int)
        assert_type(await asyncio.wait_for(pool.submit(async_add, 1, 2), timeout=1), int)
        assert_type(pool.map(square, [1, 2]), AsyncIterator[int])
        async for value in pool.map(async_square, [1, 2]):
            assert_type(value, int)
        assert_type(await pool.run(add, 1, 2), int)
        assert_type(await pool.run(async_add, 1, 2), int)
        assert_type(pool.map(add, [1], [2], ordered=False), AsyncIterator[int])
        futures = [pool.submit(add, 1, 2), pool.submit(async_add, 3, 4)]
        async for done in aplex.as_completed(futures):
            assert_type(done, AsyncioFuture[int])
            assert_type(await done, int)

    async with ProcessAsyncPoolExecutor(awaitable=True) as processes:
        assert_type(processes.submit(async_add, 1, 2), AsyncioFuture[int])
        assert_type(await processes.run(greet, "x", punctuation="?"), str)

    # run() awaits from any event loop, on any executor.
    async with ThreadAsyncPoolExecutor() as sync_pool:
        assert_type(await sync_pool.run(async_add, 1, 2), int)
        assert_type(sync_pool.submit(add, 1, 2), ConcurrentFuture[int])


async def trio_executor() -> None:
    async with aplex_trio.ThreadAsyncPoolExecutor(pool_size=2) as pool:
        future = pool.submit(add, 1, 2)
        assert_type(future, TrioFuture[int])
        assert_type(await future, int)
        assert_type(future.result(), int)
        assert_type(await pool.submit(async_add, 1, 2), int)
        assert_type(pool.map(square, range(3)), AsyncIterator[int])
        async for value in pool.map(async_square, range(3)):
            assert_type(value, int)
        assert_type(await pool.run(add, 1, 2), int)
        async for finished in aplex.as_completed([pool.submit(square, 2)]):
            assert_type(finished, TrioFuture[int])

    with aplex_trio.ProcessAsyncPoolExecutor() as processes:
        assert_type(processes.submit(async_add, 1, 2), TrioFuture[int])
        assert_type(await processes.run(square, 3), int)
