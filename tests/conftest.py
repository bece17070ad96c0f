"""Shared fixtures.

Every test is checked for leaks: no aplex worker thread and no child process
may outlive it. A test that leaves its executor running on purpose shuts it
down itself.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, settings

# "ci" keeps the state machines together well under a minute on 2 cores
# (about 10 s); "long" is for a deliberate hunt, some 10 minutes:
# APLEX_HYPOTHESIS_PROFILE=long python -m pytest
settings.register_profile(
    "ci",
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", parent=settings.get_profile("ci"), max_examples=1000, stateful_step_count=80
)
settings.load_profile(os.environ.get("APLEX_HYPOTHESIS_PROFILE", "ci"))


def _aplex_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("aplex-")]


@pytest.fixture(autouse=True)
def no_leaked_workers():
    before_threads = set(_aplex_threads())
    yield
    # Worker threads end right after shutdown(wait=False) lets them go, so
    # give them a generous moment before calling it a leak.
    deadline = time.monotonic() + 10
    while True:
        leaked = [t for t in _aplex_threads() if t not in before_threads and t.is_alive()]
        children = multiprocessing.active_children()
        if not leaked and not children:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    pytest.fail(f"leaked worker threads {leaked} or child processes {children}")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    """The caller's event loop for the tests marked ``anyio``."""
    return request.param


# User-side code that tests/test_typing.py type-checks: never collected, never run.
collect_ignore = ["typing"]


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for every test marked ``ray``.

    Started with ``address="local"``: a stale ``/tmp/ray`` cluster file or
    ``RAY_ADDRESS`` must not make the tests join a cluster that is gone or
    someone else's. Executors made with ``address=None`` use it, and leave
    it running: aplex shuts down only a Ray instance it started. ray.init
    takes seconds and some 400 MiB, hence once per session.
    """
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
