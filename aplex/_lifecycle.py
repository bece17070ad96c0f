"""The life of every pool at once: leaving a ``with`` block, Ctrl-C, exit.

Each pool's :class:`~aplex._dispatch.Dispatcher` is tracked here (weakly) from
its start, so that the pools still running when a process exits are shut
down: after their works end on a normal exit, at once on Ctrl-C.

**Ctrl-C is a request to stop.** What tells it, without guessing:

* leaving a ``with`` or ``async with`` block, the exception that leaves it:
  a ``KeyboardInterrupt`` (or an error raised while one unwound, which has
  it as its context), or a cancellation of the code around the block, which
  is how ``asyncio.run`` and ``trio.run`` hand Ctrl-C to a task that is not
  the one interrupted. Any other exit of the block waits, as
  ``concurrent.futures`` does;
* Ctrl-C while a wait for the works is under way (``shutdown()``, the end of
  a ``with`` block, the exit hook): the ``KeyboardInterrupt`` raised there;
* at interpreter exit, the exception the program ended with. The
  interpreter stores it in ``sys.last_exc`` (``sys.last_value`` before 3.12)
  and prints it, then calls ``threading._shutdown()``, which runs the hooks
  registered with ``threading._register_atexit`` before it joins the
  non-daemon threads, and only then the ``atexit`` functions, among them
  ``multiprocessing``'s, which joins every child process still running. So
  the hook below runs with the program's fate known, and before anything
  waits for our threads or processes. An interactive session keeps
  ``sys.last_exc`` from a line that failed earlier: there it is not read;
* a Ctrl-C that comes as the interpreter begins to exit raises in
  ``threading._shutdown()`` itself, which then runs no hook (nor joins any
  thread): the ``atexit`` function below finds the threading hook never
  ran to its end, and takes it as Ctrl-C;
* in a ``multiprocessing`` child, the interpreter does not end: the child's
  bootstrap calls ``multiprocessing.util._exit_function()`` in a ``finally``
  block around the target (the exception still being handled there, so
  ``sys.exc_info()`` shows it), which runs the finalizers registered with
  ``multiprocessing.util.Finalize`` and then joins every child process, and
  calls ``os._exit()`` after ``threading._shutdown()``. The ``atexit``
  function is also registered as such a finalizer, so a child's pools stop
  before their workers would be joined.

Whatever runs first does the work; the others find the pools shut down.

A forked process forgets them all at the fork (see
:func:`_forget_pools_after_fork`): they are its parent's, and so is what
its exit would do to them.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import itertools
import os
import sys
import threading
import time
import weakref
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from ._dispatch import Dispatcher

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

# Seconds a pool stopped at once gives its workers to end their cancelled
# coroutine works and exit, before it kills (processes) or leaves behind
# (threads) those still running: enough for a work's cleanup, short enough
# that Ctrl-C ends a program within about twice this.
STOP_GRACE = 1.0

_pool_ids = itertools.count()


def next_pool_id() -> int:
    """A number for a new pool, which names its workers."""
    return next(_pool_ids)


# Dispatchers whose workers may still run; each is shut down at exit. Weak:
# a dispatcher lives as long as its workers reference it.
_live_dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()

# The process whose multiprocessing finalizers hold our exit hook: a forked
# multiprocessing child starts with none, and registers it anew.
_finalizer_pid: int | None = None


def track(dispatcher: Dispatcher) -> None:
    """Shut ``dispatcher`` down when the process exits, if it is still alive then."""
    global _finalizer_pid
    _live_dispatchers.add(dispatcher)
    # A multiprocessing child joins its children before threading's hooks
    # run (see the module doc). Only where multiprocessing is loaded: every
    # child of it has it, and a program without it needs no import of it.
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _finalizer_pid != os.getpid():
        _finalizer_pid = os.getpid()
        util.Finalize(None, _shutdown_late, exitpriority=_FINALIZER_PRIORITY)


# Above multiprocessing's own finalizers (a Pool's is 15, a Queue's 10): a
# work may still use them while it is being stopped.
_FINALIZER_PRIORITY = 100


def leave(dispatcher: Dispatcher, error: BaseException | None) -> None:
    """Leave a ``with`` block that ``error`` (or nothing) ends."""
    if error is not None and requests_stop(error):
        dispatcher.stop_now()
    else:
        dispatcher.shutdown(wait=True, cancel_futures=False)


async def leave_async(dispatcher: Dispatcher, error: BaseException | None) -> None:
    """Leave an ``async with`` block that ``error`` (or nothing) ends; the
    waiting happens in a thread, so that the event loop keeps running."""
    if error is not None and requests_stop(error):
        await _stop_now(dispatcher)
        return
    try:
        # Abandoned if cancelled (Ctrl-C, in asyncio.run) or interrupted
        # (trio.run), then the pool is stopped: that thread soon returns.
        await anyio.to_thread.run_sync(
            partial(dispatcher.shutdown, wait=True, cancel_futures=False),
            abandon_on_cancel=True,
        )
    except BaseException as exc:
        if requests_stop(exc):
            await _stop_now(dispatcher)
        raise


async def _stop_now(dispatcher: Dispatcher) -> None:
    # The stop itself here, at once (it does not block): no waiting work
    # starts on a worker freed meanwhile. The wait in a thread, not
    # cancellable, so awaited even by a cancelled caller: it ends within
    # about twice STOP_GRACE.
    dispatcher.stop_now(wait=False)
    await anyio.to_thread.run_sync(dispatcher.wait_stopped, time.monotonic() + STOP_GRACE)


def requests_stop(error: BaseException) -> bool:
    """Whether ``error`` leaving a ``with`` block asks its pool to stop at
    once: Ctrl-C, or a cancellation of the code around the block."""
    if isinstance(error, BaseExceptionGroup):
        return any(requests_stop(member) for member in error.exceptions)
    return interrupted_by(error) or _is_cancellation(error)


def interrupted_by(error: BaseException) -> bool:
    """Whether ``error`` is a KeyboardInterrupt, or was raised while one was
    being handled (a cleanup that failed, ``sys.exit()`` in an ``except
    KeyboardInterrupt``): the program is unwinding from Ctrl-C either way."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return True
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend((current.__context__, current.__cause__))
    return False


def _is_cancellation(error: BaseException) -> bool:
    if isinstance(error, asyncio.CancelledError):
        return True
    trio = sys.modules.get("trio")  # loaded if the program runs trio
    return trio is not None and isinstance(error, trio.Cancelled)


def _exiting_on_interrupt() -> bool:
    """Whether the process is ending because of Ctrl-C (see the module doc)."""
    # In a multiprocessing child's finally block: what its target raised.
    error = sys.exc_info()[1]
    if error is None and not hasattr(sys, "ps1"):  # not an interactive session
        error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return error is not None and interrupted_by(error)


# Whether threading's exit hook ran to its end in this process.
_threading_hook_done = False


def _shutdown_at_exit() -> None:
    """threading's exit hook: runs before the interpreter joins non-daemon
    threads, as concurrent.futures' does."""
    global _threading_hook_done
    _shut_down_all(interrupted=_exiting_on_interrupt())
    _threading_hook_done = True


def _shutdown_late() -> None:
    """The ``atexit`` hook, and the multiprocessing finalizer (see :func:`track`)."""
    process = sys.modules.get("multiprocessing.process")
    if process is not None and process.parent_process() is not None:
        # A multiprocessing child whose target has just ended: threading's
        # hook comes only after its children are joined.
        _shut_down_all(interrupted=_exiting_on_interrupt())
    else:
        # threading's hook has run, unless an exception cut
        # threading._shutdown() short: a Ctrl-C that came as the interpreter
        # began to exit, before the hook could see it.
        _shut_down_all(interrupted=not _threading_hook_done or _exiting_on_interrupt())


def _shut_down_all(*, interrupted: bool) -> None:
    dispatchers = list(_live_dispatchers)
    if interrupted:
        _stop_all_now(dispatchers)
        return
    # A normal exit: the works already submitted end first, as with
    # concurrent.futures.
    try:
        for dispatcher in dispatchers:
            dispatcher.shutdown(wait=True, cancel_futures=False)
    except KeyboardInterrupt:
        # Ctrl-C while they end: the user asked to stop waiting, which is
        # what this does; the interrupt goes no further, so that the rest
        # of the exit runs.
        _stop_all_now(dispatchers)


def _stop_all_now(dispatchers: list[Dispatcher]) -> None:
    """Stop every pool at once, their grace periods running together."""
    for dispatcher in dispatchers:
        dispatcher.stop_now(wait=False)
    deadline = time.monotonic() + STOP_GRACE
    for dispatcher in dispatchers:
        dispatcher.wait_stopped(deadline)


threading._register_atexit(_shutdown_at_exit)  # type: ignore[attr-defined]
atexit.register(_shutdown_late)


def _forget_pools_after_fork() -> None:
    # A forked process (a fork-start worker, os.fork(), a multiprocessing
    # fork child) has copies of the parent's pools, whose workers, threads
    # and locks are the parent's: its exit must not stop them, and a lock a
    # parent thread held at the fork would never be released here. (What
    # process workers leave in a child, _processes forgets on its own.)
    for dispatcher in list(_live_dispatchers):
        dispatcher.forget_after_fork()
    _live_dispatchers.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


def shut_down_later(dispatcher: Dispatcher) -> None:
    """Shut ``dispatcher`` down without waiting, from a thread of its own.

    For an executor's ``__del__``, which the garbage collector runs on
    whatever thread allocates when it collects: a worker delivering results
    inside the dispatcher's lock (not reentrant), a feeder inside its link's.
    Shutting down there would deadlock; this thread waits for those locks
    instead, and ends as soon as the workers are told to stop. A bare
    ``_thread`` thread: starting a ``threading.Thread`` takes threading's own
    locks, which the collecting thread may hold too.
    """
    try:
        _thread.start_new_thread(_shut_down, (dispatcher,))
    except RuntimeError:
        pass  # the interpreter is exiting: _shutdown_at_exit stops the pool


def _shut_down(dispatcher: Dispatcher) -> None:
    dispatcher.shutdown(wait=False, cancel_futures=False)
