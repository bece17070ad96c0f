"""One adapter per system, each driving the system through its own public API.

Two families. A *sync* system hands out ``concurrent.futures``-style futures
(``submit`` / ``map`` / ``shutdown``); the workloads drive it from plain code.
An *async* system is awaited from an event loop (asyncio or trio); the
workloads drive it from a task group on that loop. A system that has no way
to run a workload raises :class:`NotApplicable`, shown as "n/a".

Every pool has 2 workers. Imports are lazy: a child process imports only
the system it measures.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from . import works

POOL_SIZE = 2


class NotApplicable(Exception):
    """The system has no public API for this workload."""


class System:
    """What both families share: the modules a system is loaded from."""

    #: The modules its API lives in (see load()).
    modules: tuple[str, ...] = ()

    def load(self) -> None:
        """Import the system's modules. A program imports its libraries once,
        at its start: each workload times the pool in a process that has
        loaded them first (the ``import`` workload times the loading)."""
        for name in self.modules:
            importlib.import_module(name)


class SyncSystem(System):
    """A pool with ``concurrent.futures``-style futures."""

    family = "sync"
    #: "process" or "thread": which peers it is compared with.
    kind = "process"
    #: The coroutine function it runs for the sleep workloads, or None.
    sleep_work: Callable[[float], Any] | None = None

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        raise NotImplementedError

    def submit(self, pool: Any, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        return pool.submit(fn, *args)

    def map(self, pool: Any, fn: Callable[..., Any], items: Iterable[Any], chunksize: int) -> Any:
        return pool.map(fn, items, chunksize=chunksize)

    def close(self, pool: Any) -> None:
        pool.shutdown(wait=True)


class AsyncSystem(System):
    """A pool awaited from an event loop."""

    family = "async"
    kind = "process"
    backend = "asyncio"
    #: Whether it runs coroutine works (the sleep workloads).
    runs_coroutines = False

    def load(self) -> None:
        """Import the system's modules, and run an empty event loop once:
        what a loop's first run imports is not the pool's either."""
        import anyio

        super().load()
        anyio.run(_nothing, backend=self.backend)

    @asynccontextmanager
    async def open(self, *, concurrency: int | None = None) -> AsyncIterator[Any]:
        raise NotImplementedError
        yield

    async def call(self, handle: Any, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def amap(
        self, handle: Any, fn: Callable[..., Any], items: list[Any], chunksize: int
    ) -> AsyncIterator[Any]:
        raise NotApplicable("no map")

    async def sleeps(self, handle: Any, count: int, seconds: float) -> None:
        raise NotApplicable("runs no coroutines")


# -- aplex --------------------------------------------------------------------


class AplexProcess(SyncSystem):
    label = "aplex process"
    sleep_work = staticmethod(works.asyncio_sleep)
    # What the lazy package loads for its executors, on first use.
    modules = ("aplex.backends.asyncio",)

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        import aplex

        # The sleep workloads run every coroutine at once: no cap per worker
        # (the default cap, 300, is a safety limit, not a speed setting).
        options = {} if concurrency is None else {"max_works_per_worker": None}
        return aplex.ProcessAsyncPoolExecutor(pool_size=POOL_SIZE, **options)


class AplexThread(AplexProcess):
    label = "aplex thread"
    kind = "thread"

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        import aplex

        options = {} if concurrency is None else {"max_works_per_worker": None}
        return aplex.ThreadAsyncPoolExecutor(pool_size=POOL_SIZE, **options)


class AplexRay(AplexProcess):
    """aplex's Ray executor: a local Ray instance, one actor per worker."""

    label = "aplex ray"
    modules = ("aplex.backends.asyncio", "ray")

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        import aplex

        options = {} if concurrency is None else {"max_works_per_worker": None}
        # A new local instance (not one a stale cluster file names), started
        # by the pool and shut down with it: start-up includes ray.init.
        return aplex.RayAsyncPoolExecutor(address="local", pool_size=POOL_SIZE, **options)


class AplexTrio(AsyncSystem):
    """aplex's trio front end (process workers running trio), through run()."""

    label = "aplex trio"
    backend = "trio"
    runs_coroutines = True
    modules = ("aplex.backends.trio", "trio")

    @asynccontextmanager
    async def open(self, *, concurrency: int | None = None) -> AsyncIterator[Any]:
        from aplex.backends.trio import ProcessAsyncPoolExecutor

        options = {} if concurrency is None else {"max_works_per_worker": None}
        async with ProcessAsyncPoolExecutor(pool_size=POOL_SIZE, **options) as pool:
            yield pool

    async def call(self, handle: Any, fn: Callable[..., Any], *args: Any) -> Any:
        return await handle.run(fn, *args)

    def amap(
        self, handle: Any, fn: Callable[..., Any], items: list[Any], chunksize: int
    ) -> AsyncIterator[Any]:
        return handle.map(fn, items, chunksize=chunksize)

    async def sleeps(self, handle: Any, count: int, seconds: float) -> None:
        import trio

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(handle.run, works.trio_sleep, seconds)


# -- the standard library --------------------------------------------------------


class StdlibProcess(SyncSystem):
    modules = ("concurrent.futures.process",)

    def __init__(self, method: str):
        self.method = method
        self.label = f"ProcessPool {method}"

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        return concurrent.futures.ProcessPoolExecutor(
            POOL_SIZE, mp_context=multiprocessing.get_context(self.method)
        )


class StdlibThread(SyncSystem):
    label = "ThreadPool"
    kind = "thread"
    modules = ("concurrent.futures.thread",)

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        return concurrent.futures.ThreadPoolExecutor(POOL_SIZE)


# -- third-party peers -----------------------------------------------------------


class Loky(SyncSystem):
    label = "loky"
    modules = ("loky",)

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        import loky

        # A fresh executor, not the reusable one: start-up is measured.
        return loky.ProcessPoolExecutor(max_workers=POOL_SIZE)


class Pebble(SyncSystem):
    label = "pebble"
    modules = ("pebble",)

    def make_pool(self, *, concurrency: int | None = None) -> Any:
        import pebble

        return pebble.ProcessPool(max_workers=POOL_SIZE)

    def submit(self, pool: Any, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        return pool.schedule(fn, args=args)

    def map(self, pool: Any, fn: Callable[..., Any], items: Iterable[Any], chunksize: int) -> Any:
        return pool.map(fn, items, chunksize=chunksize).result()

    def close(self, pool: Any) -> None:
        pool.close()
        pool.join()


class AioMultiprocess(AsyncSystem):
    """aiomultiprocess runs coroutine functions only: it gets the async twins."""

    label = "aiomultiprocess"
    runs_coroutines = True
    modules = ("aiomultiprocess",)

    @asynccontextmanager
    async def open(self, *, concurrency: int | None = None) -> AsyncIterator[Any]:
        import aiomultiprocess

        # Its default runs 16 coroutines per child; the sleep workloads ask
        # for all of them at once, as for aplex.
        options = {} if concurrency is None else {"childconcurrency": concurrency}
        async with aiomultiprocess.Pool(processes=POOL_SIZE, **options) as pool:
            yield pool

    async def call(self, handle: Any, fn: Callable[..., Any], *args: Any) -> Any:
        return await handle.apply(works.ASYNC_TWINS[fn], args)

    def amap(
        self, handle: Any, fn: Callable[..., Any], items: list[Any], chunksize: int
    ) -> AsyncIterator[Any]:
        # Pool.map has no chunksize; it is the API's batch call.
        return _aiter_awaited(handle.map(works.ASYNC_TWINS[fn], items))

    async def sleeps(self, handle: Any, count: int, seconds: float) -> None:
        await handle.map(works.asyncio_sleep, [seconds] * count)


async def _nothing() -> None:
    pass


async def _aiter_awaited(awaitable: Any) -> AsyncIterator[Any]:
    for value in await awaitable:
        yield value


class TrioParallel(AsyncSystem):
    label = "trio-parallel"
    backend = "trio"
    modules = ("trio", "trio_parallel")

    @asynccontextmanager
    async def open(self, *, concurrency: int | None = None) -> AsyncIterator[Any]:
        import trio
        import trio_parallel

        async with trio_parallel.open_worker_context() as context:
            yield context, trio.CapacityLimiter(POOL_SIZE)

    async def call(self, handle: Any, fn: Callable[..., Any], *args: Any) -> Any:
        context, limiter = handle
        return await context.run_sync(fn, *args, limiter=limiter)


class AnyioProcess(AsyncSystem):
    """anyio.to_process: its worker processes live as long as the event loop."""

    label = "anyio.to_process"
    modules = ("anyio", "anyio.to_process")

    @asynccontextmanager
    async def open(self, *, concurrency: int | None = None) -> AsyncIterator[Any]:
        import anyio

        yield anyio.CapacityLimiter(POOL_SIZE)

    async def call(self, handle: Any, fn: Callable[..., Any], *args: Any) -> Any:
        import anyio.to_process

        return await anyio.to_process.run_sync(fn, *args, limiter=handle)


class AnyioThread(AnyioProcess):
    label = "anyio.to_thread"
    kind = "thread"
    modules = ("anyio", "anyio.to_thread")

    async def call(self, handle: Any, fn: Callable[..., Any], *args: Any) -> Any:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(fn, *args, limiter=handle)


#: Every system, by the name the command line takes, in table order.
SYSTEMS: dict[str, Callable[[], SyncSystem | AsyncSystem]] = {
    "aplex-process": AplexProcess,
    "aplex-thread": AplexThread,
    "aplex-trio": AplexTrio,
    "aplex-ray": AplexRay,
    "cf-spawn": lambda: StdlibProcess("spawn"),
    "cf-fork": lambda: StdlibProcess("fork"),
    "cf-thread": StdlibThread,
    "loky": Loky,
    "pebble": Pebble,
    "aiomultiprocess": AioMultiprocess,
    "trio-parallel": TrioParallel,
    "anyio-process": AnyioProcess,
    "anyio-thread": AnyioThread,
}

#: The peers each aplex kind is measured against.
PROCESS_PEERS = [
    "cf-spawn",
    "cf-fork",
    "loky",
    "pebble",
    "aiomultiprocess",
    "trio-parallel",
    "anyio-process",
]
THREAD_PEERS = ["cf-thread", "anyio-thread"]
#: Run only when named: they need an extra (aplex[ray]) and start a cluster per run.
OPT_IN = ["aplex-ray"]


def labels() -> dict[str, str]:
    return {name: factory().label for name, factory in SYSTEMS.items()}
