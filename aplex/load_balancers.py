"""Load balancers: which worker gets the next work.

The executor keeps, for every worker, its workload: how many works it runs
now. When a work is to be sent and at least one worker is below
``max_works_per_worker``, the executor asks its balancer's
:meth:`LoadBalancer.get_proper_worker`, from one thread at a time. Works
that find every worker full wait in the executor, first in first out.

A balancer that raises, or returns a worker that is not of its pool or is
full, fails that one work with a :class:`RuntimeError` naming the problem;
the executor goes on serving.

Writing your own::

    class Sticky(LoadBalancer):
        def get_proper_worker(self, load_balancing_meta):
            preferred = self.workers[hash(load_balancing_meta) % len(self.workers)]
            if self.is_available(preferred):
                return preferred
            return next(self.get_available_workers())
"""

from __future__ import annotations

import abc
import random
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = ["Worker", "LoadBalancer", "RoundRobin", "Random", "Average"]


class Worker(NamedTuple):
    """A worker as a balancer sees it: a small hashable handle.

    A named tuple, so that hashing it (several times per work, as the
    executor keeps workloads by worker) costs no Python call.
    """

    # Shadows tuple.index(): a worker is a handle, never searched as a tuple.
    index: int  # type: ignore[assignment]
    name: str


Worker.index.__doc__ = "Its place in the pool, from 0; stable for the pool's life."
Worker.name.__doc__ = 'A readable name, e.g. ``"ThreadWorker-0"``.'


class LoadBalancer(abc.ABC):
    """The base class of all load balancers.

    Subclass it and implement :meth:`get_proper_worker`. An ``__init__`` of
    your own must call ``super().__init__(*args, **kwargs)`` first.

    Args:
        workers: The pool's workers.
        workloads: How many works each worker runs now. The balancer keeps a
            live, read-only view of this very mapping (not a copy), which its
            owner keeps up to date: the executor, or a test.
        max_works_per_worker: The most works one worker may run at once;
            None for no limit.
        blocked: Whether each worker's loop is held by a plain function,
            running or sent to it (see :meth:`is_blocked`); a live view the
            executor keeps. None: no worker is ever seen blocked.
    """

    def __init__(
        self,
        workers: Sequence[Worker],
        workloads: Mapping[Worker, int],
        max_works_per_worker: int | None,
        *,
        blocked: Mapping[Worker, bool] | None = None,
    ):
        self._workers = tuple(workers)
        if not isinstance(workloads, MappingProxyType):
            # A view, not a copy: whoever gave the mapping keeps it up to
            # date (a test may well change the dict it passed).
            workloads = MappingProxyType(workloads)
        self._workloads: Mapping[Worker, int] = workloads
        self._max_works_per_worker = max_works_per_worker
        self._blocked: Mapping[Worker, bool] = (
            MappingProxyType(dict.fromkeys(self._workers, False)) if blocked is None else blocked
        )

    @property
    def workers(self) -> tuple[Worker, ...]:
        """The pool's workers, in index order (read-only)."""
        return self._workers

    @property
    def workloads(self) -> Mapping[Worker, int]:
        """How many works each worker runs now (a read-only, live view)."""
        return self._workloads

    @property
    def max_works_per_worker(self) -> int | None:
        """The most works one worker may run at once; None for no limit."""
        return self._max_works_per_worker

    def get_available_workers(self) -> Iterator[Worker]:
        """Return an iterator over the workers below ``max_works_per_worker``."""
        return (worker for worker in self._workers if self.is_available(worker))

    def is_available(self, worker: Worker) -> bool:
        """Return True if ``worker`` is below ``max_works_per_worker``."""
        limit = self._max_works_per_worker
        return limit is None or self._workloads[worker] < limit

    def is_blocked(self, worker: Worker) -> bool:
        """Return True while ``worker``'s loop is held by a plain function:
        one running on it now, or sent to it and not ended yet.

        A plain function runs on its worker's loop thread and holds the whole
        loop until it returns: a work sent to that worker now, even a
        coroutine work, waits for it. A worker counts as blocked from the
        moment a plain function is sent to it, so that the works placed
        right after it, before it has started, see it too (a burst of plain
        works is shared out, not piled on the worker whose first one has
        not started yet). A plain function whose call turns out to return an
        awaitable holds the loop no more once it runs as a task. The shipped
        balancers prefer a worker that is not blocked when one is available.
        """
        return self._blocked[worker]

    @abc.abstractmethod
    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        """Return the available worker that gets the next work.

        Called only when at least one worker is available.

        Args:
            load_balancing_meta: What the caller passed to ``submit`` or
                ``map`` as ``load_balancing_meta``, or None.
        """


class RoundRobin(LoadBalancer):
    """Each work to the next available worker after the last one chosen,
    passing over the blocked ones unless every available worker is."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._next = 0

    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        """Return the next available worker that is not blocked, in index
        order, cyclically; the next available one if all are blocked."""
        workers = self._workers
        workloads = self._workloads
        blocked = self._blocked
        limit = self._max_works_per_worker
        count = len(workers)
        fallback = -1
        for offset in range(count):
            position = (self._next + offset) % count
            worker = workers[position]
            # is_available() and is_blocked(), inlined: this runs once per work.
            if limit is None or workloads[worker] < limit:
                if not blocked[worker]:
                    self._next = (position + 1) % count
                    return worker
                if fallback < 0:
                    fallback = position
        if fallback < 0:
            raise RuntimeError("RoundRobin was asked for a worker while none is available")
        self._next = (fallback + 1) % count
        return workers[fallback]


class Random(LoadBalancer):
    """Each work to an available worker picked at random."""

    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        """Return a randomly picked available worker."""
        return random.choice(list(self.get_available_workers()))


class Average(LoadBalancer):
    """Each work to the available worker with the smallest workload (the
    lowest index among equals), so that workloads stay even; a worker that
    is not blocked first."""

    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        """Return an available worker with the minimum workload, among those
        not blocked if there are any."""
        workloads = self._workloads
        blocked = self._blocked
        return min(
            self.get_available_workers(), key=lambda worker: (blocked[worker], workloads[worker])
        )
