"""The futures an executor returns.

Every work has one :class:`ConcurrentFuture`, owned by the executor. Callers
that await see it through a thin view bound to their event loop:
:class:`AsyncioFuture` for asyncio, :class:`TrioFuture` for trio.

**Cancellation.** Unlike :mod:`concurrent.futures`, a *running* work can be
cancelled when it is a coroutine work: ``cancel()`` asks its worker to cancel
the task and returns True, and the future ends cancelled even if the work
finished before the request reached the worker (its result is dropped). A
work still waiting in the executor is cancelled at once. A plain function
that is running cannot be interrupted: ``cancel()`` returns False and the
work runs to its end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures._base import PENDING, RUNNING
from functools import partial
from typing import Any, Generic, TypeVar

import anyio

from .backends import current_backend

T = TypeVar("T")

__all__ = ["ConcurrentFuture", "AsyncioFuture", "TrioFuture"]


class ConcurrentFuture(concurrent.futures.Future[T]):
    """A :class:`concurrent.futures.Future` that cancels like :class:`asyncio.Task`.

    Args:
        cancel_interface: Called with the future by :meth:`cancel`; returns
            whether the work could be cancelled. The executor passes its own.
    """

    def __init__(self, cancel_interface: Callable[[ConcurrentFuture[Any]], bool] | None = None):
        # concurrent.futures.Future.__init__, made by hand with a lighter
        # condition (see _FutureCondition); a test checks that no field of
        # Future's own is missing, should a Python version add one.
        self._condition = _FutureCondition()
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[concurrent.futures.Future[T]], object]] = []
        self._cancel_interface = cancel_interface

    def cancel(self) -> bool:
        """Try to cancel the work.

        Returns:
            True if the work was waiting or is a coroutine work (the future
            ends cancelled), False if it is a running plain function or has
            already ended.
        """
        if self._cancel_interface is None:
            return self.set_cancelled()
        return self._cancel_interface(self)

    def set_cancelled(self) -> bool:
        """Mark the future cancelled, running or not.

        For executors, like :meth:`set_result`: called once the executor has
        made sure that the work's result will not be set on the future.

        Returns:
            False if the future had already ended.
        """
        with self._condition:
            if self._state == RUNNING:
                self._state = PENDING
        if not super().cancel():
            return False
        # Moves the state on to CANCELLED_AND_NOTIFIED, which is what wakes
        # concurrent.futures.wait() and as_completed().
        self.set_running_or_notify_cancel()
        return True


class _FutureCondition(threading.Condition):
    """A condition that binds no methods when made.

    ``threading.Condition()`` binds its lock's methods onto itself: more
    objects per future for the garbage collector to walk, which, at tens of
    thousands of tiny works, is where a pool's submitting thread spends a
    third of its time. Same behaviour, methods on the class.

    The lock is a plain Lock, not the RLock ``Future`` uses by default:
    ``Future`` never takes its condition twice in one thread (callbacks run
    outside it), and with a plain lock Condition's own ``_release_save``,
    ``_acquire_restore`` and ``_is_owned`` serve as they are.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[Any] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


class AsyncioFuture(asyncio.Future[T]):
    """An :class:`asyncio.Future` view of a :class:`ConcurrentFuture`.

    Awaiting it awaits the work. Its state follows the concurrent future's,
    copied onto ``loop`` from whatever thread the result arrives on.

    **Cancellation.** :meth:`cancel`, or cancelling the task awaiting it,
    cancels the work as :meth:`ConcurrentFuture.cancel` does. When the work is
    a running plain function, cancel() returns False and asyncio waits for
    the function to return: a task cancelled meanwhile is cancelled only
    then, and ``asyncio.wait_for`` (Python 3.11) returns the function's
    result instead of timing out. To give up at once, await
    ``executor.run(...)`` instead.

    Args:
        concurrent_future: The future it follows.
        loop: The loop it belongs to; the running loop when omitted.
    """

    def __init__(
        self,
        concurrent_future: concurrent.futures.Future[T],
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        super().__init__(loop=loop)
        self._concurrent_future = concurrent_future
        concurrent_future.add_done_callback(self._copy_state_threadsafe)

    def cancel(self, msg: Any | None = None) -> bool:
        """Try to cancel the work; see :meth:`ConcurrentFuture.cancel`."""
        if self.done() or not self._concurrent_future.cancel():
            return False
        return super().cancel(msg=msg)

    def _copy_state_threadsafe(self, concurrent_future: concurrent.futures.Future[T]) -> None:
        call_soon = self.get_loop().call_soon_threadsafe
        _waker(call_soon).wake(call_soon, partial(self._copy_state, concurrent_future))

    def _copy_state(self, concurrent_future: concurrent.futures.Future[T]) -> None:
        # The two futures refer to each other (the callback holds this one):
        # the cycle ends here, so that neither waits for the garbage collector.
        self._concurrent_future = None  # type: ignore[assignment]
        if self.done():
            return
        if concurrent_future.cancelled():
            super().cancel()
            return
        exception = concurrent_future.exception()
        if exception is None:
            self.set_result(concurrent_future.result())
        else:
            self.set_exception(exception)


class TrioFuture(Generic[T]):
    """A view of a :class:`ConcurrentFuture` that trio code awaits.

    **Cancellation.** Cancelling the scope that awaits it cancels the work as
    :meth:`ConcurrentFuture.cancel` does, and the awaiting task is cancelled
    at once even if the work cannot be (a running plain function).
    """

    __slots__ = ("_future",)

    def __init__(self, concurrent_future: concurrent.futures.Future[T]):
        self._future = concurrent_future

    def __await__(self) -> Generator[Any, None, T]:
        return wait_future(self._future).__await__()

    def done(self) -> bool:
        """Return True if the work has ended: result, exception or cancelled."""
        return self._future.done()

    def cancelled(self) -> bool:
        """Return True if the work was cancelled."""
        return self._future.cancelled()

    def cancel(self) -> bool:
        """Try to cancel the work; see :meth:`ConcurrentFuture.cancel`."""
        return self._future.cancel()

    def result(self) -> T:
        """Return the work's result, or raise its exception.

        Raises:
            concurrent.futures.InvalidStateError: The work has not ended yet.
            concurrent.futures.CancelledError: The work was cancelled.
        """
        self._check_done()
        return self._future.result()

    def exception(self) -> BaseException | None:
        """Return the work's exception, or None if it returned.

        Raises:
            concurrent.futures.InvalidStateError: The work has not ended yet.
            concurrent.futures.CancelledError: The work was cancelled.
        """
        self._check_done()
        return self._future.exception()

    def _check_done(self) -> None:
        if not self._future.done():
            raise concurrent.futures.InvalidStateError(
                "the work has not ended yet: await the future"
            )

    def __repr__(self) -> str:
        return f"<TrioFuture of {self._future!r}>"


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Await a concurrent future from any event loop AnyIO supports.

    **Cancellation.** Cancelling the awaiting task cancels the future (and so
    its work) and unwinds at once.
    """
    if not future.done():
        ended = anyio.Event()
        call_soon = current_backend().threadsafe_caller()
        waker = _waker(call_soon)
        future.add_done_callback(lambda _: waker.wake(call_soon, ended.set))
        try:
            await ended.wait()
        except BaseException:
            future.cancel()
            raise
    return future.result()


class _Waker:
    """Wakes one event loop's waiters from other threads: once per batch of
    results, not once per result, as each thread-safe call costs the loop a
    wake-up (a write to its wake-up socket, a turn of the loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Callable[[], object]] = []

    def wake(
        self,
        call_soon: Callable[[Callable[[], object]], object],
        set_event: Callable[[], object],
    ) -> None:
        """Have ``set_event`` called on the loop that ``call_soon`` calls
        into (from any thread)."""
        with self._lock:
            self._pending.append(set_event)
            if len(self._pending) > 1:
                return  # a drain is already on its way
        try:
            call_soon(self._drain)
        except Exception:
            # The loop has ended: nobody is waiting any more.
            with self._lock:
                self._pending.clear()

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for set_event in pending:
            set_event()


# One waker per event loop, keyed by what its thread-safe call is bound to
# (asyncio's loop, trio's token). The waker does not hold the loop, so that
# the entry goes with the loop.
_wakers: weakref.WeakKeyDictionary[object, _Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _waker(call_soon: Callable[[Callable[[], object]], object]) -> _Waker:
    loop = getattr(call_soon, "__self__", None)
    if loop is None:  # a backend's own callable: nothing to share a waker by
        return _Waker()
    with _wakers_lock:
        waker = _wakers.get(loop)
        if waker is None:
            waker = _wakers[loop] = _Waker()
        return waker
