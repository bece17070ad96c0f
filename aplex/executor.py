"""What every executor shares: one dispatcher over one kind of worker.

Data flow, parent to worker and back::

    caller ── submit/map/run ──> executor (a front end: aplex.backends.asyncio
                                     │      or aplex.backends.trio)
                                     │ work, args, load_balancing_meta
                                     v
                                 Dispatcher ── LoadBalancer picks a worker
                                 (FIFO of waiting works, workloads)
                                     │ WorkItem / CancelItem / StopItem, in batches
                                     v
                                 worker kind (_threads: a list + the loop's
                                              thread-safe call;
                                              _processes: a pipe, pickled)
                                     │
                                     v
    worker thread or process:    _worker.serve on one event loop (asyncio
                                 or trio, through AnyIO): plain functions
                                 called on the loop thread, coroutine works
                                 as tasks, many at once
                                     │ results and failures, in batches
                                     v
                                 Dispatcher ── completes the ConcurrentFuture
                                     │
    caller <── ConcurrentFuture, or its AsyncioFuture / TrioFuture view

An executor is composed, not inherited: :class:`AsyncPoolExecutor` takes a
*worker kind* (:class:`~aplex._threads.ThreadKind` or
:class:`~aplex._processes.ProcessKind`) and a worker backend, and the front
ends in :mod:`aplex.backends` add how callers see futures. Each public
executor class spells out its own typed constructor.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from functools import partial
from types import TracebackType
from typing import Any, TypeAlias, TypedDict, TypeVar, overload

import anyio
import anyio.lowlevel
from typing_extensions import ParamSpec, Self, Unpack

from ._dispatch import (
    Dispatcher,
    PoolStatistics,
    WorkerKind,
    WorkerStatistics,
    is_coroutine_work,
    reject_async_generator_function,
)
from ._exceptions import AplexWorkerError, RemoteError, describe
from ._lifecycle import leave, leave_async, next_pool_id, shut_down_later
from ._map import AsyncResults, MapFeed, iterate
from .backends import get_backend
from .futures import ConcurrentFuture, wait_future
from .load_balancers import LoadBalancer

__all__ = [
    "AplexWorkerError",
    "AsyncPoolExecutor",
    "ProcessWorkersControl",
    "PoolStatistics",
    "RemoteError",
    "WorkerStatistics",
]

P = ParamSpec("P")
R = TypeVar("R")
T1 = TypeVar("T1")


#: A ``map`` call's arguments, in ``_map_feed``'s order.
MapArguments: TypeAlias = tuple[
    Callable[..., Any], tuple[Iterable[Any], ...], "float | None", int, Any, "int | None", bool
]


class MapOptions(TypedDict, total=False):
    """The keyword arguments of ``map``, for its typed overloads."""

    timeout: float | None
    chunksize: int
    load_balancing_meta: Any
    buffersize: int | None
    ordered: bool


class AsyncPoolExecutor:
    """The base of every aplex executor: a pool of one kind of worker.

    Not made directly: use the executors of :mod:`aplex` (asyncio-facing)
    or :mod:`aplex.backends.trio`. What they share is documented here.

    **Shutdown.** Use ``with``, ``async with`` or :meth:`shutdown`. An
    executor garbage-collected while running is shut down without waiting,
    with a ResourceWarning; executors alive at interpreter exit are shut down
    after their submitted works end, or at once (works cancelled, worker
    processes killed) when the program exits on KeyboardInterrupt.

    Args:
        kind: The kind of worker, with its own options (threads, processes).
        pool_size: How many workers (threads or processes); None means
            ``os.cpu_count()``.
        max_works_per_worker: How many works one worker runs at once; works
            beyond that wait in the executor, first in first out. None means
            no limit. A ``map`` chunk counts as one work.
        load_balancer: The :class:`~aplex.load_balancers.LoadBalancer`
            subclass (the class, not an instance) that picks each work's
            worker.
        worker_loop_factory: For asyncio workers, a callable returning a new
            event loop, e.g. ``uvloop.new_event_loop``.
        worker_backend: The event loop inside each worker, by backend name.
        initializer: Called once in each worker before its first work; a
            coroutine function is awaited on the worker's loop. If it raises,
            the executor is broken.
        initargs: The initializer's arguments.
        on_worker_death: What a worker's death does (a killed process, a
            BaseException escaping a work): ``"break"`` breaks the executor;
            ``"replace"`` fails only the works that were on that worker,
            with :class:`~aplex.WorkerDiedError`, and starts another worker
            in its place. Either way an initializer that raises breaks it.
        max_works_per_child: Process workers only: a worker that has been
            sent this many works takes no more, exits once they have ended,
            and a new worker takes its place (a ``map`` chunk counts as one
            work); None, the default, keeps workers for the pool's life. Not
            a death, whatever ``on_worker_death`` says.
        kill_on_cancel: Process workers only: cancelling a plain function
            sent to a worker (``future.cancel()``, cancelling the task that
            awaits it or ``run()``, a timeout around them) kills that worker
            (SIGKILL) and starts another in its place, whatever
            ``on_worker_death`` says; ``cancel()`` returns True and the future
            ends cancelled. The other works sent to that worker fail with
            :class:`~aplex.WorkerDiedError`; works waiting in the executor
            go on. Coroutine works are cancelled as ever, without killing.

    Raises:
        ValueError: A size below 1, ``worker_loop_factory`` with a worker
            backend that takes none, an unknown backend name, or
            ``max_works_per_child`` or ``kill_on_cancel`` for thread workers.
        TypeError: A size that is not an int, a ``kill_on_cancel`` that is not
            a bool, a load balancer that is not a
            ``LoadBalancer`` subclass, or a factory or initializer that is not
            callable.
    """

    def __init__(
        self,
        *,
        kind: WorkerKind,
        pool_size: int | None,
        max_works_per_worker: int | None,
        load_balancer: type[LoadBalancer],
        worker_loop_factory: Callable[[], Any] | None,
        worker_backend: str,
        initializer: Callable[..., object] | None,
        initargs: Iterable[object],
        on_worker_death: str = "break",
        max_works_per_child: int | None = None,
        kill_on_cancel: bool = False,
    ):
        if pool_size is None:
            pool_size = os.cpu_count() or 1
        _check_size("pool_size", pool_size)
        if max_works_per_worker is not None:
            _check_size("max_works_per_worker", max_works_per_worker)
        if not (isinstance(load_balancer, type) and issubclass(load_balancer, LoadBalancer)):
            raise TypeError(
                "load_balancer must be a LoadBalancer subclass (the class, not an "
                f"instance), got {load_balancer!r}"
            )
        backend = get_backend(worker_backend)
        if worker_loop_factory is not None:
            if not callable(worker_loop_factory):
                raise TypeError(
                    f"worker_loop_factory must be callable, got {worker_loop_factory!r}"
                )
            if not backend.supports_loop_factory:
                raise ValueError(
                    f"worker_loop_factory does not apply to the {backend.name!r} "
                    "worker backend (only to asyncio workers)"
                )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        if on_worker_death not in ("break", "replace"):
            raise ValueError(
                f'on_worker_death must be "break" or "replace", got {on_worker_death!r}'
            )
        if max_works_per_child is not None:
            _check_size("max_works_per_child", max_works_per_child)
            if kind.in_process:
                raise ValueError(
                    "max_works_per_child applies to process workers only: a thread "
                    "worker has no memory of its own to give back by exiting"
                )
        if not isinstance(kill_on_cancel, bool):
            raise TypeError(f"kill_on_cancel must be True or False, got {kill_on_cancel!r}")
        if kill_on_cancel and kind.in_process:
            raise ValueError(
                "kill_on_cancel applies to process workers only: a thread cannot be killed"
            )
        pool_id = next_pool_id()
        names = [f"{kind.name}Worker-{index}" for index in range(pool_size)]
        self._dispatcher = Dispatcher(
            worker_names=names,
            load_balancer=load_balancer,
            max_works_per_worker=max_works_per_worker,
            on_worker_death=on_worker_death,
            max_works_per_child=max_works_per_child,
            kill_on_cancel=kill_on_cancel,
            start_workers=partial(
                kind.start,
                [f"pool{pool_id}-{name}" for name in names],
                backend=backend,
                loop_factory=worker_loop_factory,
                initializer=initializer,
                initargs=tuple(initargs),
            ),
        )
        self._in_process = kind.in_process

    # -- for the front ends -------------------------------------------------

    def _submit(
        self, work: Callable[..., Any], args: Any, kwargs: dict[str, Any], meta: Any
    ) -> ConcurrentFuture[Any]:
        _check_work(work)
        return self._dispatcher.submit(work, args, kwargs, meta)

    def _map_feed(
        self,
        work: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int,
        load_balancing_meta: Any,
        buffersize: int | None,
        ordered: bool,
    ) -> tuple[MapFeed, float | None]:
        """Check a ``map`` call and start its feed; return it with its end time."""
        _check_work(work)
        _check_size("chunksize", chunksize)
        if buffersize is not None:
            _check_size("buffersize", buffersize)
        self._dispatcher.check_open()
        end_time = None if timeout is None else time.monotonic() + timeout
        submit_chunk = partial(
            self._dispatcher.submit, work, kwargs={}, meta=load_balancing_meta, chunk=True
        )
        feed = MapFeed(submit_chunk, zip(*iterables, strict=False), chunksize, buffersize, ordered)
        return feed, end_time

    def _map_sync(self, *arguments: Unpack[MapArguments]) -> Iterator[Any]:
        return iterate(*self._map_feed(*arguments))

    def _map_async(self, *arguments: Unpack[MapArguments]) -> AsyncIterator[Any]:
        return AsyncResults(*self._map_feed(*arguments))

    # -- the API shared by every front end --------------------------------

    @overload
    async def run(
        self, work: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    async def run(self, work: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    # load_balancing_meta cannot stand beside a ParamSpec's **kwargs: a call
    # that gives it is typed by the result alone. mypy finds these two
    # unreachable, as a ParamSpec could take any keyword; a call with
    # load_balancing_meta that the work does not take does reach them.
    @overload
    async def run(  # type: ignore[overload-cannot-match]
        self,
        work: Callable[..., Awaitable[R]],
        /,
        *args: Any,
        load_balancing_meta: Any,
        **kwargs: Any,
    ) -> R: ...

    @overload
    async def run(  # type: ignore[overload-cannot-match]
        self, work: Callable[..., R], /, *args: Any, load_balancing_meta: Any, **kwargs: Any
    ) -> R: ...

    async def run(
        self,
        work: Callable[..., Any],
        /,
        *args: Any,
        load_balancing_meta: Any | None = None,
        **kwargs: Any,
    ) -> Any:
        """Submit a work and await its result, from asyncio or trio alike.

        This is what a library uses to offload a work without knowing its
        caller's event loop.

        **Cancellation.** Cancelling the awaiting task cancels the work as
        ``future.cancel()`` does, and unwinds at once, even when the work is
        a running plain function (which then runs to its end in its worker,
        or, with ``kill_on_cancel=True``, is killed with it).

        **Context.** On thread workers a plain function runs in a copy of the
        caller's :mod:`contextvars` context, as with
        :func:`asyncio.to_thread`; a coroutine work runs in its worker's own
        context, and so does every work of a process worker (a context
        cannot be pickled).

        Args:
            work: A callable: a coroutine function runs as a task on the
                worker's loop, a plain function is called on the loop thread.
            *args: Positional arguments for ``work``.
            load_balancing_meta: Passed to the load balancer.
            **kwargs: Keyword arguments for ``work``.

        Returns:
            What the work returned.

        Raises:
            Whatever the work raised; and as for ``submit``.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller starts nothing
        _check_work(work)
        if self._in_process and not is_coroutine_work(work):
            work = partial(contextvars.copy_context().run, work)
        future = self._dispatcher.submit(work, args, kwargs, load_balancing_meta)
        return await wait_future(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking works and free the workers.

        **Shutdown.** No new works are taken: ``submit`` and ``map`` raise
        RuntimeError from now on. Works already submitted run to their end
        (unless ``cancel_futures``; running plain functions always do), and
        then the workers exit. On a broken executor it returns promptly
        (for thread workers, once the plain functions still running there
        have returned). Calling it again is harmless. ``with`` calls
        ``shutdown()`` on exit; ``async with`` calls it in a worker thread,
        so that the event loop keeps running.

        Args:
            wait: Return only when every worker has stopped and every future
                this executor returned is done.
            cancel_futures: Cancel the waiting works and the running
                coroutine works instead of letting them end.
        """
        self._dispatcher.shutdown(wait=wait, cancel_futures=cancel_futures)

    def statistics(self) -> PoolStatistics:
        """Return a frozen record of the pool as it is now; cheap to poll."""
        return self._dispatcher.statistics()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        leave(self._dispatcher, exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await leave_async(self._dispatcher, exc)

    def __del__(self) -> None:
        dispatcher = getattr(self, "_dispatcher", None)
        if dispatcher is not None and not dispatcher.is_shut_down:
            warnings.warn(
                f"{type(self).__name__} was garbage-collected without shutdown(); "
                "shutting it down now",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )
            shut_down_later(dispatcher)


class ProcessWorkersControl:
    """What only process executors offer: signalling their workers.

    Thread executors do not offer it (a thread can be neither terminated nor
    killed), nor do Ray executors.
    """

    _dispatcher: Dispatcher

    def terminate_workers(self) -> None:
        """Terminate every worker process at once (SIGTERM), as Python 3.14's
        :meth:`concurrent.futures.ProcessPoolExecutor.terminate_workers`.

        The executor ends shut down, as by ``shutdown(wait=False,
        cancel_futures=True)``: ``submit`` raises RuntimeError from now on.
        The works waiting in the executor end cancelled; every work sent to
        a worker (running or not, coroutine or plain function) fails with
        :class:`~aplex.AplexWorkerError` saying so, at once; no worker is
        replaced, whatever ``on_worker_death`` says. A work that handles
        SIGTERM may go on running: :meth:`kill_workers` then. It does not
        wait: ``shutdown()`` (or leaving ``with``) waits for the processes
        to end. On an executor already shut down it raises nothing, as in
        3.14, and signals the workers still running (3.14 forgets its
        workers at shutdown, and signals none).
        """
        self._dispatcher.signal_workers(kill=False)

    def kill_workers(self) -> None:
        """Kill every worker process at once (SIGKILL), as Python 3.14's
        :meth:`concurrent.futures.ProcessPoolExecutor.kill_workers`; the
        works end as for :meth:`terminate_workers`, and it may follow it."""
        self._dispatcher.signal_workers(kill=True)


def _check_work(work: Any) -> None:
    reject_async_generator_function(work)
    if not callable(work):
        if inspect.iscoroutine(work):
            raise TypeError(
                f"work must be callable, got the coroutine object {describe(work)}: pass the "
                "coroutine function and its arguments, as submit(fetch, url), "
                "not submit(fetch(url))"
            )
        raise TypeError(f"work must be callable, got {describe(work)}")


def _check_size(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
