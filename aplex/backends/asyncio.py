"""The asyncio-facing executors, the ones :mod:`aplex` exports.

Their futures are :class:`~aplex.futures.ConcurrentFuture` objects, or, with
``awaitable=True``, :class:`~aplex.futures.AsyncioFuture` objects awaitable
in asyncio, and then ``map`` returns an async generator. Workers run asyncio
by default (``worker_backend="asyncio"``, on the loop ``worker_loop_factory``
makes, e.g. uvloop's), or trio.

For type checkers, an executor is generic over its ``awaitable`` flag:
``ThreadAsyncPoolExecutor()`` is a ``ThreadAsyncPoolExecutor[Literal[False]]``
whose ``submit`` returns ``ConcurrentFuture[R]``, and
``ThreadAsyncPoolExecutor(awaitable=True)`` a
``ThreadAsyncPoolExecutor[Literal[True]]`` whose ``submit`` returns
``AsyncioFuture[R]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing.context
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Literal, overload

import sniffio
from typing_extensions import ParamSpec, TypeVar, Unpack

from .._processes import ProcessKind
from .._threads import ThreadKind
from ..executor import AsyncPoolExecutor, MapOptions, ProcessWorkersControl
from ..futures import AsyncioFuture, ConcurrentFuture
from ..load_balancers import LoadBalancer, RoundRobin
from ._asyncio import AsyncioBackend

__all__ = [
    "ProcessAsyncPoolExecutor",
    "RayAsyncPoolExecutor",
    "ThreadAsyncPoolExecutor",
    "AsyncioBackend",
]

P = ParamSpec("P")
R = TypeVar("R")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
#: Whether the executor's futures are awaitable: Literal[True] or Literal[False].
A = TypeVar("A", bound=bool, default=Literal[False])


class _AsyncioExecutor(AsyncPoolExecutor, concurrent.futures.Executor, Generic[A]):
    """The asyncio-facing front end over any worker kind."""

    def _start_front_end(
        self, awaitable: bool, future_loop: asyncio.AbstractEventLoop | None
    ) -> None:
        if future_loop is not None:
            if not awaitable:
                raise ValueError(
                    "future_loop is set while awaitable is False: "
                    "pass awaitable=True to get awaitable futures"
                )
            _check_loop(future_loop)
        self._awaitable = bool(awaitable)
        self._future_loop = future_loop

    # -- submit -------------------------------------------------------------

    @overload
    def submit(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[P, Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ConcurrentFuture[R]: ...

    @overload
    def submit(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[P, R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> ConcurrentFuture[R]: ...

    # load_balancing_meta cannot stand beside a ParamSpec's **kwargs: a call
    # that gives it is typed by the result alone. mypy finds these two
    # unreachable, as a ParamSpec could take any keyword; a call with
    # load_balancing_meta that the work does not take does reach them.
    @overload
    def submit(  # type: ignore[overload-cannot-match]
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[..., Awaitable[R]],
        /,
        *args: Any,
        load_balancing_meta: Any,
        **kwargs: Any,
    ) -> ConcurrentFuture[R]: ...

    @overload
    def submit(  # type: ignore[overload-cannot-match]
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[..., R],
        /,
        *args: Any,
        load_balancing_meta: Any,
        **kwargs: Any,
    ) -> ConcurrentFuture[R]: ...

    @overload
    def submit(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[P, Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> AsyncioFuture[R]: ...

    @overload
    def submit(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[P, R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> AsyncioFuture[R]: ...

    @overload
    def submit(  # type: ignore[overload-cannot-match]
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[..., Awaitable[R]],
        /,
        *args: Any,
        load_balancing_meta: Any,
        **kwargs: Any,
    ) -> AsyncioFuture[R]: ...

    @overload
    def submit(  # type: ignore[overload-cannot-match]
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[..., R],
        /,
        *args: Any,
        load_balancing_meta: Any,
        **kwargs: Any,
    ) -> AsyncioFuture[R]: ...

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
        behind another) cannot be cancelled: ``cancel()`` returns False;
        unless the executor kills on cancel (``kill_on_cancel=True``): its
        worker is killed and replaced, and ``cancel()`` returns True.

        Args:
            work: A callable: a coroutine function runs as a task on the
                worker's loop, a plain function is called on the loop thread.
            *args: Positional arguments for ``work``.
            load_balancing_meta: Passed to the load balancer.
            **kwargs: Keyword arguments for ``work``.

        Returns:
            The work's future: a :class:`~aplex.futures.ConcurrentFuture`,
            or with ``awaitable=True`` an :class:`~aplex.futures.AsyncioFuture`.

        Raises:
            TypeError: ``work`` is not callable (a coroutine object is not:
                pass the coroutine function and its arguments).
            RuntimeError: The executor has been shut down, or it is awaitable
                and no event loop is running nor was given.
            AplexWorkerError: The executor is broken.
        """
        if not self._awaitable:
            return self._submit(work, args, kwargs, load_balancing_meta)
        loop = self._loop_for_futures()
        return AsyncioFuture(self._submit(work, args, kwargs, load_balancing_meta), loop=loop)

    # -- map ----------------------------------------------------------------

    # One overload per number of iterables up to two, so that each
    # iterable's items are checked against the work's parameters; from three
    # on they go unchecked. Narrower than Executor.map, whose catch-all
    # would let a single iterable of the wrong items through: hence the
    # ignore (and with awaitable=True, map is async, on purpose).
    @overload  # type: ignore[override]
    def map(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[[T1], Awaitable[R]],
        iterable: Iterable[T1],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[[T1], R],
        iterable: Iterable[T1],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[[T1, T2], Awaitable[R]],
        iterable1: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[[T1, T2], R],
        iterable1: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[..., Awaitable[R]],
        iterable1: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[False]],
        work: Callable[..., R],
        iterable1: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[[T1], Awaitable[R]],
        iterable: Iterable[T1],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[[T1], R],
        iterable: Iterable[T1],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[[T1, T2], Awaitable[R]],
        iterable1: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[[T1, T2], R],
        iterable1: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[..., Awaitable[R]],
        iterable1: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self: _AsyncioExecutor[Literal[True]],
        work: Callable[..., R],
        iterable1: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    def map(
        self,
        work: Callable[..., Any],
        /,
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        load_balancing_meta: Any | None = None,
        buffersize: int | None = None,
        ordered: bool = True,
    ) -> Any:
        """Map ``work`` over the iterables, like :meth:`concurrent.futures.Executor.map`.

        Results come in input order, or as they complete with
        ``ordered=False``. Argument tuples go to the workers in chunks of
        ``chunksize``; the coroutine works of a chunk run concurrently on its
        worker, and its results come together.

        **Cancellation.** When a work raises, its exception is re-raised by
        the iterator and every remaining work is cancelled; so they are when
        ``timeout`` passes (TimeoutError), or the iterator is closed early or
        dropped (an async one needs no ``aclosing``).

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
            ordered: False yields each chunk's results as soon as the chunk
                completes, whatever its place in the input.

        Returns:
            An iterator of the results; with ``awaitable=True``, an async one.

        Raises:
            ValueError: ``chunksize`` or ``buffersize`` below 1.
            TypeError, RuntimeError, AplexWorkerError: as for :meth:`submit`.
        """
        arguments = (work, iterables, timeout, chunksize, load_balancing_meta, buffersize, ordered)
        if self._awaitable:
            return self._map_async(*arguments)
        return self._map_sync(*arguments)

    # -- the loop of awaitable futures --------------------------------------

    def set_future_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Set the loop that awaitable futures belong to.

        Raises:
            RuntimeError: The executor has been shut down, or is not awaitable.
            TypeError: ``loop`` is not an asyncio event loop.
            AplexWorkerError: The executor is broken.
        """
        self._dispatcher.check_open()
        if not self._awaitable:
            raise RuntimeError("set_future_loop() needs an executor made with awaitable=True")
        _check_loop(loop)
        self._future_loop = loop

    def _loop_for_futures(self) -> asyncio.AbstractEventLoop:
        if self._future_loop is not None:
            return self._future_loop
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            pass
        if _running_library() == "trio":
            raise RuntimeError(
                "this executor's awaitable futures are asyncio futures, and trio is "
                "running: in trio, use the executors of aplex.backends.trio (their "
                "futures are awaitable in trio), or await pool.run(...)"
            )
        raise RuntimeError(
            "awaitable futures need an event loop: submit from inside a "
            "running loop, or give one with set_future_loop()"
        )


def _running_library() -> str | None:
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


def _check_loop(loop: object) -> None:
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(f"future_loop must be an asyncio event loop, got {loop!r}")


class ThreadAsyncPoolExecutor(_AsyncioExecutor[A]):
    """A pool of worker threads, each running an event loop with many works at once.

    Args:
        pool_size: How many worker threads; None means ``os.cpu_count()``.
        max_works_per_worker: How many works one worker runs at once; works
            beyond that wait in the executor, first in first out. None means
            no limit. A ``map`` chunk counts as one work.
        load_balancer: The :class:`~aplex.load_balancers.LoadBalancer`
            subclass (the class, not an instance) that picks each work's
            worker.
        awaitable: Futures are :class:`~aplex.futures.AsyncioFuture` and
            ``map`` returns an async generator.
        future_loop: The loop awaitable futures belong to; needs
            ``awaitable=True``. By default, the loop running when ``submit``
            is called (``submit`` raises RuntimeError outside a running loop).
        worker_loop_factory: For asyncio workers, a callable returning a new
            event loop, e.g. ``uvloop.new_event_loop``.
        worker_backend: The event loop inside each worker: ``"asyncio"``,
            ``"trio"`` or another registered backend's name.
        initializer: Called once in each worker before its first work; a
            coroutine function is awaited on the worker's loop. If it raises,
            the executor is broken.
        initargs: The initializer's arguments.
        on_worker_death: ``"break"`` (the default): a worker's death (a
            BaseException escaping a work) breaks the executor.
            ``"replace"``: only the works on that worker fail, with
            :class:`~aplex.WorkerDiedError`, and a new worker takes its place.
        max_works_per_child: Process executors only (a thread has no memory
            of its own to give back by exiting): anything but None raises
            ValueError.
        kill_on_cancel: Process executors only (a thread cannot be
            killed): True raises ValueError.

    Raises:
        ValueError: A size below 1, ``max_works_per_child`` or
            ``kill_on_cancel`` given,
            ``future_loop`` without ``awaitable``, ``worker_loop_factory``
            with a worker backend that takes none, or an unknown backend
            name.
        TypeError: A load balancer that is not a ``LoadBalancer`` subclass, a
            factory or initializer that is not callable, or a ``future_loop``
            that is not an asyncio loop.

    See :class:`aplex.executor.AsyncPoolExecutor` for shutdown and ``run``.
    """

    @overload
    def __init__(
        self: ThreadAsyncPoolExecutor[Literal[False]],
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: Literal[False] = False,
        future_loop: None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: None = None,
        kill_on_cancel: Literal[False] = False,
    ) -> None: ...

    @overload
    def __init__(
        self: ThreadAsyncPoolExecutor[Literal[True]],
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: Literal[True],
        future_loop: asyncio.AbstractEventLoop | None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: None = None,
        kill_on_cancel: Literal[False] = False,
    ) -> None: ...

    def __init__(
        self,
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: bool = False,
        future_loop: asyncio.AbstractEventLoop | None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: None = None,
        kill_on_cancel: Literal[False] = False,
    ) -> None:
        self._start_front_end(awaitable, future_loop)
        super().__init__(
            kind=ThreadKind(),
            pool_size=pool_size,
            max_works_per_worker=max_works_per_worker,
            load_balancer=load_balancer,
            worker_loop_factory=worker_loop_factory,
            worker_backend=worker_backend,
            initializer=initializer,
            initargs=initargs,
            on_worker_death=on_worker_death,
            max_works_per_child=max_works_per_child,
            kill_on_cancel=kill_on_cancel,
        )


class ProcessAsyncPoolExecutor(ProcessWorkersControl, _AsyncioExecutor[A]):
    """A pool of worker processes, each running an event loop with many works at once.

    Works, arguments and results are pickled: with the standard pickle when it
    can, with cloudpickle otherwise (lambdas, closures, functions of
    ``__main__``). A program that makes one must guard its entry point with
    ``if __name__ == "__main__":``, as worker processes import the main module.

    Args:
        pool_size: How many worker processes; None means ``os.cpu_count()``.
        max_works_per_worker: As for :class:`ThreadAsyncPoolExecutor`.
        load_balancer: As for :class:`ThreadAsyncPoolExecutor`.
        awaitable: As for :class:`ThreadAsyncPoolExecutor`.
        future_loop: As for :class:`ThreadAsyncPoolExecutor`.
        worker_loop_factory: As for :class:`ThreadAsyncPoolExecutor`.
        worker_backend: As for :class:`ThreadAsyncPoolExecutor`.
        initializer: As for :class:`ThreadAsyncPoolExecutor`; pickled once.
        initargs: The initializer's arguments.
        on_worker_death: As for :class:`ThreadAsyncPoolExecutor`; a process
            also dies when it is killed or exits.
        max_works_per_child: A worker that has been sent this many works
            takes no more, exits once they have ended, and a new worker
            (new process, initializer run again) takes its place: memory a
            work leaked goes with it. A ``map`` chunk counts as one work.
            None, the default, keeps each worker for the pool's life. A
            recycled worker is no death: nothing fails, whatever
            ``on_worker_death`` says (see ``statistics().recycled``).
        kill_on_cancel: Cancelling a plain function sent to a worker
            (``future.cancel()``, cancelling the task that awaits it or
            ``run()``, ``asyncio.wait_for``, ``asyncio.timeout``, trio's
            ``move_on_after``) kills that worker (SIGKILL) and starts
            another in its place, whatever ``on_worker_death`` says:
            ``cancel()`` returns True and the future ends cancelled. The
            other works sent to that worker fail with
            :class:`~aplex.WorkerDiedError`; works waiting in the executor go
            on. Coroutine works are cancelled as ever, without killing.
        mp_context: A :mod:`multiprocessing` start method name or context.
            The default is ``"forkserver"`` where there is one, else
            ``"spawn"``: neither forks a parent that runs threads.

    Raises:
        ValueError, TypeError: As for :class:`ThreadAsyncPoolExecutor`, and
            for an unknown start method.

    See :class:`aplex.executor.AsyncPoolExecutor` for shutdown and ``run``.
    """

    @overload
    def __init__(
        self: ProcessAsyncPoolExecutor[Literal[False]],
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: Literal[False] = False,
        future_loop: None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: int | None = None,
        kill_on_cancel: bool = False,
        mp_context: str | multiprocessing.context.BaseContext | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: ProcessAsyncPoolExecutor[Literal[True]],
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: Literal[True],
        future_loop: asyncio.AbstractEventLoop | None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: int | None = None,
        kill_on_cancel: bool = False,
        mp_context: str | multiprocessing.context.BaseContext | None = None,
    ) -> None: ...

    def __init__(
        self,
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: bool = False,
        future_loop: asyncio.AbstractEventLoop | None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: int | None = None,
        kill_on_cancel: bool = False,
        mp_context: str | multiprocessing.context.BaseContext | None = None,
    ) -> None:
        self._start_front_end(awaitable, future_loop)
        super().__init__(
            kind=ProcessKind(mp_context),
            pool_size=pool_size,
            max_works_per_worker=max_works_per_worker,
            load_balancer=load_balancer,
            worker_loop_factory=worker_loop_factory,
            worker_backend=worker_backend,
            initializer=initializer,
            initargs=initargs,
            on_worker_death=on_worker_death,
            max_works_per_child=max_works_per_child,
            kill_on_cancel=kill_on_cancel,
        )


class RayAsyncPoolExecutor(_AsyncioExecutor[A]):
    """A pool of Ray actors, each running an event loop with many works at once.

    Each worker is one Ray async actor, anywhere on a Ray cluster, running
    aplex's own worker loop: the API, the balancing, the cap and the crash
    semantics are those of :class:`ProcessAsyncPoolExecutor`, and works,
    arguments and results are pickled the same way. An actor that dies
    (``ray.kill``, its node lost, ``os._exit`` in a work) is a worker that
    dies: the executor is broken. Needs Ray: ``pip install "aplex[ray]"``;
    see :doc:`/ray`.

    **Shutdown.** Stops and kills the pool's actors. A Ray instance that
    this executor started is shut down with the last pool using it; one
    that the program initialised is left running.

    Args:
        address: The Ray cluster, as for ``ray.init(address=...)``. None
            uses the Ray instance this process has initialised, else calls
            ``ray.init()``: the cluster ``RAY_ADDRESS`` names, or a new local
            instance.
        ray_actor_options: Options for each worker's actor, as Ray's
            ``.options()`` takes them: resources (``num_cpus``...), a
            ``runtime_env`` of the actors' own (local modules are shipped
            with a job-wide one, given to ``ray.init``: see :doc:`/ray`),
            ``scheduling_strategy`` (``"SPREAD"`` unless given). ``max_restarts`` and
            ``max_task_retries`` stay 0; ``max_concurrency``,
            ``concurrency_groups``, ``name``, ``get_if_exists`` and
            ``lifetime="detached"`` are rejected.
        pool_size: How many actors; None means ``os.cpu_count()`` of this
            machine.
        max_works_per_worker: As for :class:`ThreadAsyncPoolExecutor`.
        load_balancer: As for :class:`ThreadAsyncPoolExecutor`.
        awaitable: As for :class:`ThreadAsyncPoolExecutor`.
        future_loop: As for :class:`ThreadAsyncPoolExecutor`.
        worker_loop_factory: As for :class:`ThreadAsyncPoolExecutor`; pickled
            once.
        worker_backend: As for :class:`ThreadAsyncPoolExecutor`.
        initializer: As for :class:`ThreadAsyncPoolExecutor`; pickled once.
        initargs: The initializer's arguments.

    Raises:
        ImportError: Ray is not installed.
        ValueError, TypeError: As for :class:`ThreadAsyncPoolExecutor`, and
            for actor options aplex cannot run with or Ray rejects.
        RuntimeError: ``address`` is given while this process is already
            connected to Ray otherwise.

    See :class:`aplex.executor.AsyncPoolExecutor` for shutdown and ``run``.
    """

    @overload
    def __init__(
        self: RayAsyncPoolExecutor[Literal[False]],
        *,
        address: str | None = None,
        ray_actor_options: Mapping[str, Any] | None = None,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: Literal[False] = False,
        future_loop: None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
    ) -> None: ...

    @overload
    def __init__(
        self: RayAsyncPoolExecutor[Literal[True]],
        *,
        address: str | None = None,
        ray_actor_options: Mapping[str, Any] | None = None,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: Literal[True],
        future_loop: asyncio.AbstractEventLoop | None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
    ) -> None: ...

    def __init__(
        self,
        *,
        address: str | None = None,
        ray_actor_options: Mapping[str, Any] | None = None,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        awaitable: bool = False,
        future_loop: asyncio.AbstractEventLoop | None = None,
        worker_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        worker_backend: str = "asyncio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
    ) -> None:
        from .._ray import RayKind  # Ray's kind, loaded by Ray executors only

        self._start_front_end(awaitable, future_loop)
        super().__init__(
            kind=RayKind(address=address, ray_actor_options=ray_actor_options),
            pool_size=pool_size,
            max_works_per_worker=max_works_per_worker,
            load_balancer=load_balancer,
            worker_loop_factory=worker_loop_factory,
            worker_backend=worker_backend,
            initializer=initializer,
            initargs=initargs,
        )
