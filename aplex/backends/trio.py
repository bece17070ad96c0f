"""The trio backend, and the executors for trio programs.

Workers run trio through AnyIO (``worker_backend="trio"``, the default
here), so works may be trio-native coroutine functions. The executors of
this module hand out :class:`~aplex.futures.TrioFuture` objects, awaitable
inside trio, and their ``map`` returns an async iterator.

**Cancellation.** Cancelling the trio scope that awaits a future, a ``map``
iteration or ``run()`` cancels the work in its worker (see
:meth:`aplex.futures.ConcurrentFuture.cancel`) and unwinds at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from ..executor import AsyncPoolExecutor, _ProcessKind, _ThreadKind
from ..futures import ConcurrentFuture, TrioFuture
from ._trio import TrioBackend

__all__ = ["ProcessAsyncPoolExecutor", "ThreadAsyncPoolExecutor", "TrioBackend"]


class _TrioFrontEnd(AsyncPoolExecutor):
    """The trio-facing front end: futures are always awaitable in trio."""

    _default_worker_backend = "trio"
    _map_is_async = True
    _rejected_arguments = ("awaitable", "future_loop")

    def __init__(self, *, awaitable: Any = None, future_loop: Any = None, **kwargs: Any):
        for name, value in (("awaitable", awaitable), ("future_loop", future_loop)):
            if value is not None:
                raise TypeError(
                    f"{name} does not apply to aplex.backends.trio executors: "
                    "their futures are always awaitable in trio"
                )
        super().__init__(**kwargs)

    def _future_view(self) -> Callable[[ConcurrentFuture[Any]], Any]:
        return TrioFuture

    def set_future_loop(self, loop: Any) -> NoReturn:
        """Not for trio executors: their futures need no loop."""
        raise TypeError(
            "set_future_loop() does not apply to aplex.backends.trio executors: "
            "their futures are always awaitable in trio"
        )


class ThreadAsyncPoolExecutor(_ThreadKind, _TrioFrontEnd):
    """A pool of worker threads for trio programs; workers run trio by default.

    See :class:`aplex.executor.AsyncPoolExecutor` for the arguments and methods.
    """


class ProcessAsyncPoolExecutor(_ProcessKind, _TrioFrontEnd):
    """A pool of worker processes for trio programs; workers run trio by default.

    Works, arguments and results are pickled: with the standard pickle when it
    can, with cloudpickle otherwise (lambdas, closures, functions of
    ``__main__``). A program that makes one must guard its entry point with
    ``if __name__ == "__main__":``, as worker processes import the main module.

    Args:
        mp_context: A :mod:`multiprocessing` start method name or context.
            The default is ``"forkserver"`` where there is one, else
            ``"spawn"``: neither forks a parent that runs threads.

    See :class:`aplex.executor.AsyncPoolExecutor` for the other arguments and
    the methods.
    """
