"""A load balancer of your own: sticky routing by key.

Run it with ``python examples/sticky_balancer.py``. Each work loads a user's
profile through a cache that belongs to the worker it runs on (a
thread-local here; a module global in a process worker). With the default
``RoundRobin`` balancer every user's works visit every worker, so each worker
loads each profile once. ``StickyByKey`` sends all the works of one user to
the same worker, picked from the ``load_balancing_meta`` given to ``submit``,
so each profile is loaded once in all.

A balancer must return a worker that has room: when the preferred one is
full (``max_works_per_worker``), ``StickyByKey`` falls back to the least
loaded one, and that work loses its stickiness.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any

import aplex
from aplex.load_balancers import RoundRobin, Worker

USERS = ["ada", "alan", "grace", "edsger", "barbara"]
WORKS = 60


class StickyByKey(aplex.LoadBalancer):
    """Send the works that share a key to the same worker while it has room."""

    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        if load_balancing_meta is not None:
            # crc32, not hash(): stable from one run to the next.
            key = zlib.crc32(str(load_balancing_meta).encode())
            preferred = self.workers[key % len(self.workers)]
            if self.is_available(preferred):
                return preferred
        # No key, or the preferred worker is full: the least loaded one.
        return min(self.get_available_workers(), key=self.workloads.__getitem__)


_cache = threading.local()  # one cache per worker thread


def load_profile(user: str) -> tuple[str, str, bool]:
    """Return (user, worker name, whether the profile had to be loaded)."""
    profiles = _cache.__dict__.setdefault("profiles", {})
    missed = user not in profiles
    if missed:
        time.sleep(0.01)  # stands in for a database query
        profiles[user] = {"name": user.title()}
    return user, threading.current_thread().name, missed


def run(balancer: type[aplex.LoadBalancer]) -> tuple[int, dict[str, set[str]]]:
    workers_of: dict[str, set[str]] = {user: set() for user in USERS}
    with aplex.ThreadAsyncPoolExecutor(pool_size=3, load_balancer=balancer) as pool:
        futures = [
            pool.submit(load_profile, user, load_balancing_meta=user)
            for user in (USERS[i % len(USERS)] for i in range(WORKS))
        ]
        misses = 0
        for future in futures:
            user, worker, missed = future.result()
            workers_of[user].add(worker.rsplit("-", 1)[-1])  # the worker's index
            misses += missed
    return misses, workers_of


def main() -> None:
    for balancer in (RoundRobin, StickyByKey):
        misses, workers_of = run(balancer)
        spread = " or ".join(str(n) for n in sorted({len(w) for w in workers_of.values()}))
        print(
            f"{balancer.__name__}: {misses} profile loads for {WORKS} works by "
            f"{len(USERS)} users; each user's works ran on {spread} worker(s)"
        )


if __name__ == "__main__":
    main()
