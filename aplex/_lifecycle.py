"""The life of every pool at once: what the interpreter's exit does to them.

Each pool's :class:`~aplex._dispatch.Dispatcher` is tracked here (weakly) from
its start, so that the pools still running when the interpreter exits are
shut down: after their works end on a normal exit, at once on Ctrl-C.
"""

from __future__ import annotations

import _thread
import itertools
import sys
import threading
import weakref

from ._dispatch import Dispatcher

_pool_ids = itertools.count()


def next_pool_id() -> int:
    """A number for a new pool, which names its workers."""
    return next(_pool_ids)


# Dispatchers whose workers may still run; each is shut down at interpreter
# exit. Weak: a dispatcher lives as long as its workers reference it.
_live_dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()


def _shutdown_at_exit() -> None:
    # Exiting on Ctrl-C must not wait for the works still running (the user
    # asked to stop): the pools are stopped at once. Otherwise the works
    # already submitted end first, as with concurrent.futures.
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    for dispatcher in list(_live_dispatchers):
        if interrupted:
            dispatcher.terminate()
        dispatcher.shutdown(wait=True, cancel_futures=interrupted)


# Runs before the interpreter joins non-daemon threads, as for
# concurrent.futures: the works already submitted end, then the workers.
threading._register_atexit(_shutdown_at_exit)  # type: ignore[attr-defined]


def track(dispatcher: Dispatcher) -> None:
    """Shut ``dispatcher`` down at interpreter exit if it is still alive then."""
    _live_dispatchers.add(dispatcher)


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
