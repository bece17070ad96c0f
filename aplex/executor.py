"""The front end: submit, map, run, shutdown.

Data flow, parent to worker and back::

    caller ── submit/map/run ──> AsyncPoolExecutor
                                     │ work, args, load_balancing_meta
                                     v
                                 Dispatcher ── LoadBalancer picks a worker
                                 (FIFO of waiting works, workloads)
                                     │ WorkItem / CancelItem / StopItem, in batches
                                     v
                                 channel (thread: list + the loop's
                                          thread-safe call;
                                          process: pipe, pickle or cloudpickle)
                                     │
                                     v
    worker thread or process:    backend.run(serve): one event loop,
                                 many works at once, each in its own
                                 cancel scope
                                     │ ResultItem / WorkerFailure, in batches
                                     v
                                 Dispatcher ── completes the ConcurrentFuture
                                     │
    caller <── ConcurrentFuture, or its AsyncioFuture / TrioFuture view

Every executor is one front end (asyncio-facing or trio-facing, in
:mod:`aplex.backends`) over one worker kind (threads or processes) and one
worker backend (the event loop inside each worker).
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from types import TracebackType
from typing import Any, ClassVar

import anyio
import anyio.to_thread

from ._dispatch import Dispatcher, PoolStatistics, WorkerPool, WorkerStatistics
from ._exceptions import AplexWorkerError, RemoteError
from ._lifecycle import next_pool_id, track
from ._map import MapFeed, iterate, iterate_async
from ._processes import ProcessWorkers
from ._threads import ThreadWorkers
from .backends import get_backend
from .futures import ConcurrentFuture, wait_future
from .load_balancers import LoadBalancer, RoundRobin

__all__ = [
    "AplexWorkerError",
    "AsyncPoolExecutor",
    "PoolStatistics",
    "RemoteError",
    "WorkerStatistics",
]

# The seed reference's order, then the arguments aplex added.
_ARGUMENT_ORDER = (
    "pool_size",
    "max_works_per_worker",
    "load_balancer",
    "awaitable",
    "future_loop",
    "worker_loop_factory",
    "worker_backend",
    "initializer",
    "initargs",
    "mp_context",
)


def _constructor_signature(cls: type[Any]) -> inspect.Signature:
    """The whole constructor signature of ``cls``, gathered along its MRO.

    Each front end and worker kind takes its own arguments and passes the
    rest on as ``**kwargs``, which would hide them from help(), IDEs and the
    docs; this shows them all, with the class's own worker backend default.
    """
    parameters: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind is parameter.KEYWORD_ONLY:
                parameters.setdefault(parameter.name, parameter)
    for name in cls._rejected_arguments:
        del parameters[name]
    if "worker_backend" in parameters:
        parameters["worker_backend"] = parameters["worker_backend"].replace(
            default=cls._default_worker_backend
        )
    order = {name: place for place, name in enumerate(_ARGUMENT_ORDER)}
    ordered = sorted(parameters.values(), key=lambda p: order.get(p.name, len(order)))
    return inspect.Signature(ordered)


class AsyncPoolExecutor:
    """The base of every aplex executor.

    **Shutdown.** Use ``with``, ``async with`` or :meth:`shutdown`. An
    executor garbage-collected while running is shut down without waiting,
    with a ResourceWarning; executors alive at interpreter exit are shut down
    after their submitted works end, or at once (works cancelled, worker
    processes killed) when the program exits on KeyboardInterrupt.

    Args:
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

    Raises:
        ValueError: A size below 1, ``worker_loop_factory`` with a worker
            backend that takes none, or an unknown backend name.
        TypeError: A load balancer that is not a ``LoadBalancer`` subclass, or
            a factory or initializer that is not callable.
    """

    #: What the worker handles are called: "ThreadWorker-0", ...
    _worker_kind: ClassVar[str]
    _default_worker_backend: ClassVar[str] = "asyncio"
    #: Arguments a front end takes only to reject them with a clear error.
    _rejected_arguments: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _constructor_signature(cls)  # type: ignore[attr-defined]

    def __init__(
        self,
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        worker_loop_factory: Callable[[], Any] | None = None,
        worker_backend: str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
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
        backend = get_backend(worker_backend or self._default_worker_backend)
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
        self._prepare_workers()
        pool_id = next_pool_id()
        names = [f"{self._worker_kind}Worker-{index}" for index in range(pool_size)]
        self._dispatcher = Dispatcher(
            worker_names=names,
            load_balancer=load_balancer,
            max_works_per_worker=max_works_per_worker,
            start_workers=partial(
                self._start_workers,
                [f"pool{pool_id}-{name}" for name in names],
                backend=backend,
                loop_factory=worker_loop_factory,
                initializer=initializer,
                initargs=tuple(initargs),
            ),
        )
        track(self._dispatcher)

    # -- the worker kind's hooks (see _ThreadKind, ProcessWorkersMixin)

    def _prepare_workers(self) -> None:
        """Check the worker kind's own arguments, before any worker starts."""

    def _start_workers(
        self, names: list[str], on_results: Any, on_exit: Any, **options: Any
    ) -> WorkerPool:
        raise NotImplementedError

    # -- the front end's hooks (see aplex.backends.asyncio and .trio) ------

    def _future_view(self) -> Callable[[ConcurrentFuture[Any]], Any] | None:
        """Return how submit() presents a future to its caller, or None for
        the ConcurrentFuture itself; raise here what must stop a submit."""
        return None

    _map_is_async: ClassVar[bool] = False

    # -- the API -----------------------------------------------------------

    def submit(
        self,
        work: Callable[..., Any],
        /,
        *args: Any,
        load_balancing_meta: Any | None = None,
        **kwargs: Any,
    ) -> Any:
        """Submit a work, like :meth:`concurrent.futures.Executor.submit`.

        The load balancer picks its worker; if every worker is full, the
        work waits in the executor.

        **Cancellation.** ``future.cancel()`` cancels a waiting work at once
        and returns True. A running coroutine work is cancelled in its worker
        and True is returned: the future ends cancelled at once, even if the
        work finished before the request reached the worker. A plain
        function already sent to a worker (running, or queued on its loop
        behind another) cannot be cancelled: ``cancel()`` returns False.

        Args:
            work: A callable: a coroutine function runs as a task on the
                worker's loop, a plain function is called on the loop thread.
            *args: Positional arguments for ``work``.
            load_balancing_meta: Passed to the load balancer.
            **kwargs: Keyword arguments for ``work``.

        Returns:
            The work's future.

        Raises:
            TypeError: ``work`` is not callable (a coroutine object is not:
                pass the coroutine function and its arguments).
            RuntimeError: The executor has been shut down.
            AplexWorkerError: The executor is broken.
        """
        _check_work(work)
        view = self._future_view()
        future = self._dispatcher.submit(work, args, kwargs, load_balancing_meta)
        return future if view is None else view(future)

    def map(
        self,
        work: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        load_balancing_meta: Any | None = None,
        buffersize: int | None = None,
    ) -> Any:
        """Map ``work`` over the iterables, like :meth:`concurrent.futures.Executor.map`.

        Results come in input order. Argument tuples go to the workers in
        chunks of ``chunksize``; the coroutine works of a chunk run
        concurrently on its worker.

        **Cancellation.** When a work raises, its exception is re-raised by
        the iterator and every remaining work is cancelled; so they are when
        ``timeout`` passes (TimeoutError) or the iterator is closed early.

        Args:
            work: The callable, as for :meth:`submit`.
            *iterables: One iterable per positional argument of ``work``.
            timeout: Seconds from this call within which every result must
                have come; None for no limit.
            chunksize: Argument tuples per chunk.
            load_balancing_meta: Passed to the load balancer for each chunk.
            buffersize: None submits every chunk now. N keeps at most N
                chunks in flight and reads the iterables lazily, so they may
                be endless.

        Returns:
            An iterator of the results; an async one when the executor's
            futures are awaitable.

        Raises:
            ValueError: ``chunksize`` or ``buffersize`` below 1.
            TypeError, RuntimeError, AplexWorkerError: as for :meth:`submit`.
        """
        _check_work(work)
        _check_size("chunksize", chunksize)
        if buffersize is not None:
            _check_size("buffersize", buffersize)
        self._dispatcher.check_open()
        end_time = None if timeout is None else time.monotonic() + timeout
        submit_chunk = partial(
            self._dispatcher.submit, work, kwargs={}, meta=load_balancing_meta, chunk=True
        )
        feed = MapFeed(submit_chunk, zip(*iterables, strict=False), chunksize, buffersize)
        if self._map_is_async:
            return iterate_async(feed, end_time)
        return iterate(feed, end_time)

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
        a running plain function (which then runs to its end in its worker).

        Raises:
            Whatever the work raised; and as for :meth:`submit`.
        """
        _check_work(work)
        return await wait_future(self._dispatcher.submit(work, args, kwargs, load_balancing_meta))

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

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown(wait=True)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Waits in a thread, so that the event loop keeps running meanwhile.
        await anyio.to_thread.run_sync(self.shutdown)

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
            dispatcher.shutdown(wait=False, cancel_futures=False)


class _ThreadKind(AsyncPoolExecutor):
    _worker_kind = "Thread"

    def _start_workers(
        self, names: list[str], on_results: Any, on_exit: Any, **options: Any
    ) -> WorkerPool:
        return ThreadWorkers(names, on_results=on_results, on_exit=on_exit, **options)


class _ProcessKind(AsyncPoolExecutor):
    """Process workers. Works, arguments and results are pickled (pickle, else cloudpickle).

    Args:
        mp_context: A :mod:`multiprocessing` start method name or context.
            The default is ``"forkserver"`` where there is one, else
            ``"spawn"``: neither forks a parent that runs threads.
        **kwargs: As for :class:`AsyncPoolExecutor`.
    """

    _worker_kind = "Process"

    def __init__(self, *, mp_context: Any = None, **kwargs: Any):
        self._mp_context = _multiprocessing_context(mp_context)
        super().__init__(**kwargs)

    def _start_workers(
        self, names: list[str], on_results: Any, on_exit: Any, **options: Any
    ) -> WorkerPool:
        if self._mp_context.get_start_method() == "forkserver":
            _preload_in_forkserver(options["backend"].name)
        return ProcessWorkers(
            names, context=self._mp_context, on_results=on_results, on_exit=on_exit, **options
        )


def _multiprocessing_context(mp_context: Any) -> Any:
    if mp_context is None:
        methods = multiprocessing.get_all_start_methods()
        return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if isinstance(mp_context, str):
        return multiprocessing.get_context(mp_context)  # ValueError names a bad method
    if not (hasattr(mp_context, "Process") and hasattr(mp_context, "Pipe")):
        raise TypeError(
            f"mp_context must be a start method name or a multiprocessing context, "
            f"got {mp_context!r}"
        )
    return mp_context


def _preload_in_forkserver(backend_name: str) -> None:
    """Add what a worker imports to what the fork server preloads, so that
    it forks workers ready to run instead of each importing them anew. Keeps
    what the program asked for; has no effect once the server runs."""
    import multiprocessing.forkserver as forkserver

    server = forkserver._forkserver
    preload = list(getattr(server, "_preload_modules", ["__main__"]))
    wanted = ["aplex._worker.process", f"anyio._backends._{backend_name}"]
    missing = [name for name in wanted if name not in preload]
    if missing:
        server.set_forkserver_preload(preload + missing)


class _AsyncioFrontEnd(AsyncPoolExecutor):
    """The asyncio-facing front end: ``awaitable`` and ``future_loop``.

    Args:
        awaitable: Futures are :class:`~aplex.futures.AsyncioFuture` and
            ``map`` returns an async generator.
        future_loop: The loop awaitable futures belong to; needs
            ``awaitable=True``. By default, the loop running at submit time.
        **kwargs: As for :class:`AsyncPoolExecutor`.
    """

    def __init__(self, *, awaitable: bool = False, future_loop: Any | None = None, **kwargs: Any):
        if future_loop is not None and not awaitable:
            raise ValueError(
                "future_loop is set while awaitable is False: "
                "pass awaitable=True to get awaitable futures"
            )
        self._awaitable = bool(awaitable)
        self._future_loop = future_loop
        super().__init__(**kwargs)

    @property
    def _map_is_async(self) -> bool:  # type: ignore[override]
        return self._awaitable

    def _future_view(self) -> Callable[[ConcurrentFuture[Any]], Any] | None:
        if not self._awaitable:
            return None
        import asyncio

        from .futures import AsyncioFuture

        loop = self._future_loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "awaitable futures need an event loop: submit from inside a "
                    "running loop, or give one with set_future_loop()"
                ) from None
        return partial(AsyncioFuture, loop=loop)

    def set_future_loop(self, loop: Any) -> None:
        """Set the loop that awaitable futures belong to.

        Raises:
            RuntimeError: The executor has been shut down, or is not awaitable.
            AplexWorkerError: The executor is broken.
        """
        self._dispatcher.check_open()
        if not self._awaitable:
            raise RuntimeError("set_future_loop() needs an executor made with awaitable=True")
        self._future_loop = loop


def _check_work(work: Any) -> None:
    if not callable(work):
        if inspect.iscoroutine(work):
            raise TypeError(
                f"work must be callable, got the coroutine object {work!r}: pass the "
                "coroutine function and its arguments, as submit(fetch, url), "
                "not submit(fetch(url))"
            )
        raise TypeError(f"work must be callable, got {work!r}")


def _check_size(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
