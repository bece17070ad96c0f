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
work runs to its end; unless its process executor was made with
``kill_on_cancel=True``, which kills and replaces its worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from ._interrupts import deferred, interruptible, keep
from .backends import current_backend

T = TypeVar("T")
F = TypeVar("F")

__all__ = ["ConcurrentFuture", "AsyncioFuture", "TrioFuture", "as_completed"]


_ENDED = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_CANCELLED = (CANCELLED, CANCELLED_AND_NOTIFIED)

# Orders the changes of state of every ConcurrentFuture that has no
# condition yet; held for a few lines at a time, always in a ``with``.
#
# Most futures of a busy pool are never waited on: they end before anyone
# asks, and a condition each (a lock, one more object for the garbage
# collector to walk while the future is pending) costs them more than their
# work. A future's condition is made when something waits on it, or the
# standard library's own code asks for it, and it is made under this lock:
# a change of state made under it has ended before anyone can wait, and one
# made after finds the condition and takes it instead, as the standard
# library's methods do.
_TRANSITIONS = threading.Lock()


class ConcurrentFuture(concurrent.futures.Future[T]):
    """A :class:`concurrent.futures.Future` that cancels like :class:`asyncio.Task`.

    Args:
        cancel_interface: Called with the future by :meth:`cancel`; returns
            whether the work could be cancelled. The executor passes its own.
    """

    def __init__(self, cancel_interface: Callable[[ConcurrentFuture[Any]], bool] | None = None):
        # concurrent.futures.Future.__init__, made by hand: its condition and
        # its list of waiters are made on demand (see __getattr__); a test
        # checks that no field of Future's own is missing, should a Python
        # version add one.
        self._state = PENDING
        self._result = None
        self._exception = None
        # _done_callbacks: the class's empty tuple until a callback comes
        # (see add_done_callback).
        self._cancel_interface = cancel_interface

    # Most futures of a busy pool never get a callback nor a waiter: made
    # on demand, their list and deque are two objects fewer per work for
    # the garbage collector to walk while the futures are pending.
    _done_callbacks: list[Callable[[concurrent.futures.Future[T]], object]] = ()  # type: ignore[assignment]

    if not TYPE_CHECKING:  # to the type checker, the fields Future declares

        def __getattr__(self, name: str) -> Any:
            # Only for a field not made yet (see _TRANSITIONS): the standard
            # library's code asks for them.
            if name == "_condition":
                return self._make_condition()
            if name == "_waiters":  # only ever used under the condition
                return self.__dict__.setdefault(name, [])
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
            )

    def _make_condition(self) -> _FutureCondition:
        with _TRANSITIONS:
            condition: _FutureCondition = self.__dict__.setdefault("_condition", _FutureCondition())
        return condition

    def done(self) -> bool:
        """As :meth:`concurrent.futures.Future.done`."""
        return self._state in _ENDED

    def cancelled(self) -> bool:
        """As :meth:`concurrent.futures.Future.cancelled`."""
        return self._state in _CANCELLED

    def running(self) -> bool:
        """As :meth:`concurrent.futures.Future.running`."""
        return self._state == RUNNING

    def result(self, timeout: float | None = None) -> T:
        """As :meth:`concurrent.futures.Future.result`."""
        if self._state == FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]  # set before the state
        if "_condition" not in self.__dict__:
            self._make_condition()  # here, not through a failed attribute lookup
        return super().result(timeout)  # waits on the condition, or raises

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As :meth:`concurrent.futures.Future.exception`."""
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def set_running_or_notify_cancel(self) -> bool:
        """As :meth:`concurrent.futures.Future.set_running_or_notify_cancel`."""
        with _TRANSITIONS:
            condition = self.__dict__.get("_condition")
            if condition is None:
                state = self._state
                if state == PENDING:
                    self._state = RUNNING
                elif state == CANCELLED:
                    self._state = CANCELLED_AND_NOTIFIED  # no waiter to tell
        if condition is not None:
            return super().set_running_or_notify_cancel()
        if state == PENDING:
            return True
        if state == CANCELLED:
            return False
        LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
        raise RuntimeError("Future in unexpected state")

    def set_result(self, result: T) -> None:
        """As :meth:`concurrent.futures.Future.set_result`."""
        self._finish(result, None, failed=False)

    def set_exception(self, exception: BaseException | None) -> None:
        """As :meth:`concurrent.futures.Future.set_exception`."""
        self._finish(None, exception, failed=True)

    def _finish(self, result: Any, exception: BaseException | None, *, failed: bool) -> None:
        with _TRANSITIONS:
            condition = self.__dict__.get("_condition")
            if condition is None:
                ended = not self._end(FINISHED, result, exception)
        if condition is not None:
            with condition:
                ended = not self._end(FINISHED, result, exception)
                if not ended:
                    for waiter in self.__dict__.get("_waiters", ()):
                        if failed:
                            waiter.add_exception(self)
                        else:
                            waiter.add_result(self)
                    condition.notify_all()
        if ended:
            # Made here, not under the lock as the standard library does:
            # the repr takes the condition, which is no RLock here.
            raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
        self._invoke_callbacks()

    def _end(self, state: str, result: Any, exception: BaseException | None) -> bool:
        """End the future in ``state`` with this outcome, under the lock
        that orders its changes; False, and nothing changed, if it had
        ended already."""
        if self._state in _ENDED:
            return False
        self._result = result
        self._exception = exception
        self._state = state
        return True

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> None:
        """As :meth:`concurrent.futures.Future.add_done_callback`."""
        with _TRANSITIONS:
            condition = self.__dict__.get("_condition")
            if condition is None:
                added = self._add_callback(fn)
        if condition is not None:
            with condition:
                added = self._add_callback(fn)
        if added:
            return
        try:  # ended: fn is called now, as the standard library does
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def _add_callback(self, fn: Callable[[concurrent.futures.Future[T]], object]) -> bool:
        if self._state in _ENDED:
            return False
        if self._done_callbacks:
            self._done_callbacks.append(fn)
        else:
            self._done_callbacks = [fn]
        return True

    def cancel(self) -> bool:
        """Try to cancel the work.

        Returns:
            True if the work was waiting or is a coroutine work (the future
            ends cancelled), False if it is a running plain function or has
            already ended.
        """
        interface = self._cancel_interface
        if interface is None:  # none given, or the future has ended
            return self.cancelled() if self.done() else self.set_cancelled()
        return interface(self)

    def set_cancelled(self) -> bool:
        """Mark the future cancelled, running or not.

        For executors, like :meth:`set_result`: called once the executor has
        made sure that the work's result will not be set on the future.

        Returns:
            False if the future had already ended.
        """
        # Straight to the state that concurrent.futures.wait() and
        # as_completed() are told of, as cancel() and then
        # set_running_or_notify_cancel() would leave it.
        with _TRANSITIONS:
            condition = self.__dict__.get("_condition")
            if condition is None:
                ended = not self._end(CANCELLED_AND_NOTIFIED, None, None)
        if condition is not None:
            with condition:
                ended = not self._end(CANCELLED_AND_NOTIFIED, None, None)
                if not ended:
                    for waiter in self.__dict__.get("_waiters", ()):
                        waiter.add_cancelled(self)
                    condition.notify_all()
        if ended:
            return False
        self._invoke_callbacks()
        return True

    def _invoke_callbacks(self) -> None:
        # The future has ended (every way to end calls this): cancel() has
        # nothing more to ask the executor, which lets go of the work.
        self._cancel_interface = None
        # The executor ends futures on its own threads and, for cancel() and
        # shutdown(), on the caller's, inside a section Ctrl-C does not cut
        # short (see aplex._interrupts): a user's callback may still be
        # interrupted there, aplex's own (which wake awaiting loops) never.
        # Whatever one callback raises, the next ones run: the standard
        # library stops at a BaseException, which on a thread of the pool
        # would lose the other callbacks, and the thread.
        for callback in self._done_callbacks:
            try:
                if type(callback) is _Internal:
                    callback(self)
                else:
                    interruptible(callback, self)
            except Exception:
                LOGGER.exception("exception calling callback for %r", self)
            except BaseException as exc:
                if keep(exc):  # raised once the caller's section ends
                    continue
                if threading.current_thread() is threading.main_thread():
                    raise  # the program's own set_result(): as the standard library does
                LOGGER.exception("exception calling callback for %r", self)


class _FutureCondition(threading.Condition):
    """A condition that binds no methods when made.

    ``threading.Condition()`` binds its lock's methods onto itself: more
    objects per future for the garbage collector to walk, which, at tens of
    thousands of tiny works, is where a pool's submitting thread spends a
    third of its time. Same behaviour, methods on the class.

    The lock is a plain Lock, not the RLock ``Future`` uses by default:
    ``Future`` takes its condition twice in one thread only to describe
    itself in the error of a second ``set_result()``, which
    :class:`ConcurrentFuture` makes outside it (callbacks run outside it
    too), and with a plain lock Condition's own ``_release_save``,
    ``_acquire_restore`` and ``_is_owned`` serve as they are.
    """

    # Made by the first wait() (under the lock, as every use of it is):
    # until then an empty tuple, which notify() finds empty as a deque.
    _waiters: deque[Any] = ()  # type: ignore[assignment]

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def wait(self, timeout: float | None = None) -> bool:
        if not isinstance(self._waiters, deque):
            self._waiters = deque()
        return super().wait(timeout)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


class AsyncioFuture(asyncio.Future[T]):
    """An :class:`asyncio.Future` view of a :class:`ConcurrentFuture`.

    Awaiting it awaits the work. Its state follows the concurrent future's,
    copied onto ``loop`` from whatever thread the result arrives on.

    **Cancellation.** :meth:`cancel`, or cancelling the task awaiting it,
    cancels the work as :meth:`ConcurrentFuture.cancel` does, and this view
    ends cancelled at once, as :func:`asyncio.wrap_future`'s does: so
    ``asyncio.wait_for`` and ``asyncio.timeout`` return on time. A running
    plain function, which cannot be interrupted, runs on to its end in its
    worker (its result is dropped); a coroutine work is cancelled there.

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
        concurrent_future.add_done_callback(_Internal(self._copy_state_threadsafe))

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel the work where it can be, and end this view cancelled.

        Returns:
            False if the view had already ended, else True.
        """
        if self.done():
            return False
        # Whether the work itself could be stopped does not matter to the
        # caller, who has stopped waiting for it (asyncio.wrap_future's rule).
        self._concurrent_future.cancel()
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
            self.set_exception(awaitable_exception(exception))


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
        return _checkpoint_and_wait(self._future).__await__()

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
        future.add_done_callback(_Internal(_wake, _waker(call_soon), call_soon, ended.set))
        try:
            await ended.wait()
        except BaseException:
            future.cancel()
            raise
    exception = future.exception()
    if exception is not None:
        raise awaitable_exception(exception)
    return future.result()


def _wake(
    waker: _Waker,
    call_soon: Callable[[Callable[[], object]], object],
    set_event: Callable[[], object],
    _: object,
) -> None:
    waker.wake(call_soon, set_event)


def awaitable_exception(exception: BaseException) -> BaseException:
    """What awaiting a work that raised ``exception`` raises.

    ``StopIteration`` and ``StopAsyncIteration`` cannot travel through an
    ``await`` as they are: asyncio refuses the first in a future, and either
    would silently end the iteration of a generator or async iterator
    around the ``await``. They become a RuntimeError caused by them, as
    PEP 479 makes of a coroutine that raises StopIteration.
    """
    if isinstance(exception, (StopIteration, StopAsyncIteration)):
        error = RuntimeError(f"the work raised {type(exception).__name__}")
        error.__cause__ = exception
        return error
    return exception


class _Internal(partial[None]):
    """A done callback of aplex's own (it wakes an awaiting loop or
    iterator): never left to Ctrl-C, unlike a user's (see
    ConcurrentFuture._invoke_callbacks)."""


def as_completed(futures: Iterable[F]) -> AsyncIterator[F]:
    """Yield the given futures as they complete, from asyncio or trio alike.

    The asynchronous :func:`concurrent.futures.as_completed`: each future is
    yielded once, when it has ended (result, exception or cancelled), so that
    ``await future`` (or ``future.result()``) no longer waits. Those already
    ended come first. Duplicates are yielded once.

    Example::

        futures = [pool.submit(fetch, url) for url in urls]
        async for future in aplex.as_completed(futures):
            print(await future)

    Args:
        futures: :class:`AsyncioFuture` (or any asyncio future of the running
            loop), :class:`TrioFuture` or :class:`concurrent.futures.Future`
            objects, mixed as you like.

    **Cancellation.** Cancelling the iterating task stops the iteration and
    leaves the futures as they are: cancel them yourself if you are done
    with them. Leaving the loop early needs no ``aclosing``: the iterator
    holds nothing to clean up.

    Raises:
        TypeError: Something given is not a future.
    """
    return _AsCompleted(futures)


class _AsCompleted(AsyncIterator[F]):
    # A class, not an async generator: one abandoned half-way would be
    # finalized by the event loop, and trio warns of each.

    def __init__(self, futures: Iterable[F]):
        self._completions: Completions[F] = Completions()
        pending = dict.fromkeys(futures)  # in order, without duplicates
        for future in pending:
            self._completions.watch(_concurrent_view(future), future)
        self._left = len(pending)

    async def __anext__(self) -> F:
        if not self._left:
            raise StopAsyncIteration
        future = await self._completions.next_async()
        self._left -= 1
        return future


def _concurrent_view(future: Any) -> Any:
    """What to watch for ``future``'s end: anything with add_done_callback."""
    if isinstance(future, TrioFuture):
        return future._future
    if not hasattr(future, "add_done_callback"):
        raise TypeError(f"as_completed() takes futures, got {future!r}")
    return future


class Completions(Generic[T]):
    """Items handed out in the order their futures end, to one consumer: a
    thread (:meth:`next`) or an event loop (:meth:`next_async`).

    Futures may end on any thread; the consumer is woken through a condition,
    or through its loop's thread-safe call, only while it waits.
    """

    def __init__(self) -> None:
        # Taken as the plain lock, never through the condition: Condition's
        # __enter__ is Python code, and a Ctrl-C landing in it once the lock
        # is held (next() waits on the main thread) would leave it held, and
        # the pool thread that puts the next item waiting for ever.
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._done: deque[T] = deque()
        self._wake: Callable[[], object] | None = None

    def watch(self, future: Any, item: T) -> None:
        """Hand out ``item`` once ``future`` has ended."""
        future.add_done_callback(_Internal(self._put, item))

    def _put(self, item: T, _: object = None) -> None:
        with deferred:
            with self._lock:
                self._done.append(item)
                self._ready.notify()
                wake, self._wake = self._wake, None
            if wake is not None:
                wake()

    def next(self, timeout: float | None = None) -> T:
        """Wait for the next item.

        Raises:
            TimeoutError: None came within ``timeout`` seconds.
        """
        with self._lock:
            if not self._ready.wait_for(lambda: self._done, timeout):
                # concurrent.futures' own, as Future.result() raises: on
                # Python 3.10 it is not yet the built-in TimeoutError.
                raise concurrent.futures.TimeoutError("no work ended within the timeout")
            return self._done.popleft()

    async def next_async(self) -> T:
        """Wait for the next item without blocking the running loop."""
        call_soon = current_backend().threadsafe_caller()
        while True:
            with self._lock:
                if self._done:
                    return self._done.popleft()
                ended = anyio.Event()
                # Set under the lock that _put() takes, so an item put after
                # the check above is sure to wake us.
                self._wake = partial(_call_soon_quietly, call_soon, ended.set)
            await ended.wait()


def _call_soon_quietly(
    call_soon: Callable[[Callable[[], object]], object], callback: Callable[[], object]
) -> None:
    try:
        call_soon(callback)
    except RuntimeError:
        pass  # the loop has ended: nobody waits any more


async def _checkpoint_and_wait(future: concurrent.futures.Future[T]) -> T:
    """Await ``future`` as trio code awaits: a cancelled caller is
    cancelled at once, and so is the work (trio and AnyIO's convention)."""
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        future.cancel()
        raise
    return await wait_future(future)


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
        # Deferred: a Ctrl-C between the append and the call would leave
        # a drain expected that never comes, and this loop's waiters, all
        # of them from then on, waiting for ever.
        with deferred:
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
        # Each waiter is woken whatever another's wake-up raises: the
        # first error is raised at the end, for the loop to report.
        error: BaseException | None = None
        with deferred:
            with self._lock:
                pending, self._pending = self._pending, []
            for set_event in pending:
                try:
                    set_event()
                except BaseException as exc:
                    error = error or exc
        if error is not None:
            raise error


# One waker per event loop, keyed by what its thread-safe call is bound to
# (asyncio's loop, trio's token). The waker does not hold the loop, so that
# the entry goes with the loop.
_wakers: weakref.WeakKeyDictionary[object, _Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _forget_wakers_after_fork() -> None:
    # A forked child's copies belong to its parent's loops, and a thread of
    # the parent may have held a lock of theirs when it forked.
    global _wakers_lock
    _wakers_lock = threading.Lock()
    _wakers.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_forget_wakers_after_fork)


def _waker(call_soon: Callable[[Callable[[], object]], object]) -> _Waker:
    loop = getattr(call_soon, "__self__", None)
    if loop is None:  # a backend's own callable: nothing to share a waker by
        return _Waker()
    with _wakers_lock:
        waker = _wakers.get(loop)
        if waker is None:
            waker = _wakers[loop] = _Waker()
        return waker
