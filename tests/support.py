"""Helpers the tests share (the works that run inside workers are in works.py)."""

from __future__ import annotations

import time

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
