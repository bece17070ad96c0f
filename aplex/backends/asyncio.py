"""The asyncio backend, and the asyncio-facing executors.

Workers run asyncio through AnyIO, on the loop ``worker_loop_factory``
makes (``uvloop.new_event_loop``, say) or on a default one. These executors
are the ones :mod:`aplex` exports: with ``awaitable=True`` their futures are
:class:`~aplex.futures.AsyncioFuture` and ``map`` returns an async generator.
"""

from __future__ import annotations

from ..executor import _AsyncioFrontEnd, _ProcessKind, _ThreadKind
from ._asyncio import AsyncioBackend

__all__ = ["ProcessAsyncPoolExecutor", "ThreadAsyncPoolExecutor", "AsyncioBackend"]


class ThreadAsyncPoolExecutor(_ThreadKind, _AsyncioFrontEnd):
    """A pool of worker threads, each running an event loop with many works at once.

    Args:
        awaitable: Futures are :class:`~aplex.futures.AsyncioFuture` and
            ``map`` returns an async generator.
        future_loop: The loop awaitable futures belong to; needs
            ``awaitable=True``. By default, the loop running when ``submit``
            is called (``submit`` raises RuntimeError outside a running loop).

    See :class:`aplex.executor.AsyncPoolExecutor` for the other arguments and
    the methods.
    """


class ProcessAsyncPoolExecutor(_ProcessKind, _AsyncioFrontEnd):
    """A pool of worker processes, each running an event loop with many works at once.

    Works, arguments and results are pickled: with the standard pickle when it
    can, with cloudpickle otherwise (lambdas, closures, functions of
    ``__main__``). A program that makes one must guard its entry point with
    ``if __name__ == "__main__":``, as worker processes import the main module.

    Args:
        awaitable: Futures are :class:`~aplex.futures.AsyncioFuture` and
            ``map`` returns an async generator.
        future_loop: The loop awaitable futures belong to; needs
            ``awaitable=True``. By default, the loop running when ``submit``
            is called (``submit`` raises RuntimeError outside a running loop).
        mp_context: A :mod:`multiprocessing` start method name or context.
            The default is ``"forkserver"`` where there is one, else
            ``"spawn"``: neither forks a parent that runs threads.

    See :class:`aplex.executor.AsyncPoolExecutor` for the other arguments and
    the methods.
    """
