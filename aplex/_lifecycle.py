"""The life of every pool at once: what the interpreter's exit does to them.

Each pool's :class:`~aplex._dispatch.Dispatcher` is tracked here (weakly) from
its start, so that the pools still running when the interpreter exits are
shut down: after their works end on a normal exit, at once on Ctrl-C.

A forked process forgets them all at the fork (see
:func:`_forget_pools_after_fork`): they are its parent's, and so is what
its exit would do to them.
"""

from __future__ import annotations

import itertools
import os
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
