"""The executors for trio programs.

Workers run trio through AnyIO (``worker_backend="trio"``, the default
here), so works may be trio-native coroutine functions. The executors of
this module hand out :class:`~aplex.futures.TrioFuture` objects, awaitable
inside trio, and their ``map`` returns an async iterator.

**Cancellation.** Cancelling the trio scope that awaits a future, a ``map``
iteration or ``run()`` cancels the work in its worker (see
:meth:`aplex.futures.ConcurrentFuture.cancel`) and unwinds at once.
"""

from __future__ import annotations

import multiprocessing.context
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, NoReturn, overload

from typing_extensions import ParamSpec, TypeVar, Unpack

from .._processes import ProcessKind
from .._threads import ThreadKind
from ..executor import AsyncPoolExecutor, MapOptions, ProcessWorkersControl
from ..futures import TrioFuture
from ..load_balancers import LoadBalancer, RoundRobin
from ._trio import TrioBackend

__all__ = [
    "ProcessAsyncPoolExecutor",
    "RayAsyncPoolExecutor",
    "ThreadAsyncPoolExecutor",
    "TrioBackend",
]

P = ParamSpec("P")
R = TypeVar("R")
T1 = TypeVar("T1")
T2 = TypeVar("T2")


class _TrioExecutor(AsyncPoolExecutor):
    """The trio-facing front end over any worker kind: futures are always
    awaitable in trio."""

    # -- submit -------------------------------------------------------------

    @overload
    def submit(
        self,
        work: Callable[P, Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> TrioFuture[R]: ...

    @overload
    def submit(
        self,
        work: Callable[P, R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> TrioFuture[R]: ...

    # load_balancing_meta cannot stand beside a ParamSpec's **kwargs: a call
    # that gives it is typed by the result alone. mypy finds these two
    # unreachable, as a ParamSpec could take any keyword; a call with
    # load_balancing_meta that the work does not take does reach them.
    @overload
    def submit(  # type: ignore[overload-cannot-match]
        self,
        work: Callable[..., Awaitable[R]],
        /,
        *args: Any,
        load_balancing_meta: Any,
        **kwargs: Any,
    ) -> TrioFuture[R]: ...

    @overload
    def submit(  # type: ignore[overload-cannot-match]
        self,
        work: Callable[..., R],
        /,
        *args: Any,
        load_balancing_meta: Any,
        **kwargs: Any,
    ) -> TrioFuture[R]: ...

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
            The work's :class:`~aplex.futures.TrioFuture`.

        Raises:
            TypeError: ``work`` is not callable (a coroutine object is not:
                pass the coroutine function and its arguments).
            RuntimeError: The executor has been shut down.
            AplexWorkerError: The executor is broken.
        """
        return TrioFuture(self._submit(work, args, kwargs, load_balancing_meta))

    # -- map ----------------------------------------------------------------

    # One overload per number of iterables up to two, so that each
    # iterable's items are checked against the work's parameters; from three
    # on they go unchecked.
    @overload
    def map(
        self,
        work: Callable[[T1], Awaitable[R]],
        iterable: Iterable[T1],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self,
        work: Callable[[T1], R],
        iterable: Iterable[T1],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self,
        work: Callable[[T1, T2], Awaitable[R]],
        iterable1: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self,
        work: Callable[[T1, T2], R],
        iterable1: Iterable[T1],
        iterable2: Iterable[T2],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def map(
        self,
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
        self,
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
            An async iterator of the results.

        Raises:
            ValueError: ``chunksize`` or ``buffersize`` below 1.
            TypeError, RuntimeError, AplexWorkerError: as for :meth:`submit`.
        """
        return self._map_async(
            work, iterables, timeout, chunksize, load_balancing_meta, buffersize, ordered
        )

    def set_future_loop(self, loop: object) -> NoReturn:
        """Not for trio executors: their futures need no loop.

        Raises:
            TypeError: Always.
        """
        raise TypeError(
            "set_future_loop() does not apply to aplex.backends.trio executors: "
            "their futures are always awaitable in trio"
        )


class ThreadAsyncPoolExecutor(_TrioExecutor):
    """A pool of worker threads for trio programs; workers run trio by default.

    Args:
        pool_size: How many worker threads; None means ``os.cpu_count()``.
        max_works_per_worker: How many works one worker runs at once; works
            beyond that wait in the executor, first in first out. None means
            no limit. A ``map`` chunk counts as one work.
        load_balancer: The :class:`~aplex.load_balancers.LoadBalancer`
            subclass (the class, not an instance) that picks each work's
            worker.
        worker_loop_factory: For asyncio workers, a callable returning a new
            event loop, e.g. ``uvloop.new_event_loop``.
        worker_backend: The event loop inside each worker: ``"trio"``,
            ``"asyncio"`` or another registered backend's name.
        initializer: Called once in each worker before its first work; a
            coroutine function is awaited on the worker's loop. If it raises,
            the executor is broken.
        initargs: The initializer's arguments.
        on_worker_death: As for :class:`aplex.ThreadAsyncPoolExecutor`:
            ``"break"`` (the default) or ``"replace"``.
        max_works_per_child: Process executors only: anything but None
            raises ValueError.
        kill_on_cancel: Process executors only: True raises ValueError.

    Raises:
        ValueError: A size below 1, ``max_works_per_child`` or
            ``kill_on_cancel`` given,
            ``worker_loop_factory`` with a worker backend that takes none, or
            an unknown backend name.
        TypeError: A load balancer that is not a ``LoadBalancer`` subclass,
            or a factory or initializer that is not callable.

    See :class:`aplex.executor.AsyncPoolExecutor` for shutdown and ``run``.
    """

    def __init__(
        self,
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        worker_loop_factory: Callable[[], Any] | None = None,
        worker_backend: str = "trio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: None = None,
        kill_on_cancel: Literal[False] = False,
    ) -> None:
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


class ProcessAsyncPoolExecutor(ProcessWorkersControl, _TrioExecutor):
    """A pool of worker processes for trio programs; workers run trio by default.

    Works, arguments and results are pickled: with the standard pickle when it
    can, with cloudpickle otherwise (lambdas, closures, functions of
    ``__main__``). A program that makes one must guard its entry point with
    ``if __name__ == "__main__":``, as worker processes import the main module.

    Args:
        pool_size: How many worker processes; None means ``os.cpu_count()``.
        max_works_per_worker: As for :class:`ThreadAsyncPoolExecutor`.
        load_balancer: As for :class:`ThreadAsyncPoolExecutor`.
        worker_loop_factory: As for :class:`ThreadAsyncPoolExecutor`.
        worker_backend: As for :class:`ThreadAsyncPoolExecutor`.
        initializer: As for :class:`ThreadAsyncPoolExecutor`; pickled once.
        initargs: The initializer's arguments.
        on_worker_death: As for :class:`ThreadAsyncPoolExecutor`; a process
            also dies when it is killed or exits.
        max_works_per_child: As for :class:`aplex.ProcessAsyncPoolExecutor`:
            a worker sent this many works is replaced once they have ended.
        kill_on_cancel: As for :class:`aplex.ProcessAsyncPoolExecutor`:
            cancelling a plain function sent to a worker (a cancelled scope
            around ``run()``, e.g. ``trio.move_on_after``) kills and
            replaces that worker.
        mp_context: A :mod:`multiprocessing` start method name or context.
            The default is ``"forkserver"`` where there is one, else
            ``"spawn"``: neither forks a parent that runs threads.

    Raises:
        ValueError, TypeError: As for :class:`ThreadAsyncPoolExecutor`, and
            for an unknown start method.

    See :class:`aplex.executor.AsyncPoolExecutor` for shutdown and ``run``.
    """

    def __init__(
        self,
        *,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        worker_loop_factory: Callable[[], Any] | None = None,
        worker_backend: str = "trio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
        on_worker_death: Literal["break", "replace"] = "break",
        max_works_per_child: int | None = None,
        kill_on_cancel: bool = False,
        mp_context: str | multiprocessing.context.BaseContext | None = None,
    ) -> None:
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


class RayAsyncPoolExecutor(_TrioExecutor):
    """A pool of Ray actors for trio programs; workers run trio by default.

    As :class:`aplex.RayAsyncPoolExecutor`, with trio's futures: each worker
    is one Ray async actor running aplex's own worker loop. Needs Ray:
    ``pip install "aplex[ray]"``; see :doc:`/ray`.

    Args:
        address: As for :class:`aplex.RayAsyncPoolExecutor`.
        ray_actor_options: As for :class:`aplex.RayAsyncPoolExecutor`.
        pool_size: How many actors; None means ``os.cpu_count()`` of this
            machine.
        max_works_per_worker: As for :class:`ThreadAsyncPoolExecutor`.
        load_balancer: As for :class:`ThreadAsyncPoolExecutor`.
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

    def __init__(
        self,
        *,
        address: str | None = None,
        ray_actor_options: Mapping[str, Any] | None = None,
        pool_size: int | None = 4,
        max_works_per_worker: int | None = 300,
        load_balancer: type[LoadBalancer] = RoundRobin,
        worker_loop_factory: Callable[[], Any] | None = None,
        worker_backend: str = "trio",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[object] = (),
    ) -> None:
        from .._ray import RayKind  # Ray's kind, loaded by Ray executors only

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
