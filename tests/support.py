"""Helpers the tests share (the works that run inside workers are in works.py)."""

from __future__ import annotations

import threading
import time

from aplex.load_balancers import LoadBalancer, RoundRobin

T = 10  # seconds to wait for what should take milliseconds: the machine is small and shared


def wait_until(predicate, timeout=T):
    """Wait for a state the test cannot be notified of (checked every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(0.005)


def worker_index(thread_name):
    """'aplex-pool3-ThreadWorker-1' -> 1."""
    return int(thread_name.rsplit("-", 1)[1])


T = 10


def new_threads(before):
    """The threads alive now that were not in ``before``."""
    return [thread for thread in threading.enumerate() if thread not in before]


def recording_balancer(base=RoundRobin):
    """A balancer class of the user's own that records every meta it is given."""
    seen = []

    class Recording(base):
        def get_proper_worker(self, load_balancing_meta):
            seen.append(load_balancing_meta)
            return super().get_proper_worker(load_balancing_meta)

    return Recording, seen


class Sticky(LoadBalancer):
    """Routes a work to the worker whose index is its load_balancing_meta."""

    def get_proper_worker(self, load_balancing_meta):
        return self.workers[load_balancing_meta]
