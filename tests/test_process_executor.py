"""The executor's behaviours, on real worker processes.

One small executor per test (pool_size 1-2, the default ``mp_context``
unless the start method is the point): starting a pool is cheap, but the
whole suite shares 2 cores. Works talk to the test through files in
``tmp_path``, since a process shares no memory with it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

import aplex
from aplex.load_balancers import Average, RoundRobin
from tests import works

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30  # seconds for any one result: generous, the machine is shared


def wait_for_path(path: Path, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.005)


def test_submit_plain_and_coroutine_in_another_process():
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        assert executor.submit(works.add, 1, y=2).result(TIMEOUT) == 3
        assert executor.submit(works.async_add, 1, y=2).result(TIMEOUT) == 3
        worker_pid = executor.submit(works.pid).result(TIMEOUT)
    assert worker_pid != os.getpid()


def test_lambdas_and_closures_travel_by_cloudpickle():
    offset = 10

    def add_offset(x):  # a closure: the standard pickle refuses it
        return x + offset

    async def async_add_offset(x):
        return x + offset

    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        assert executor.submit(lambda x: x * 2, 21).result(TIMEOUT) == 42
        assert executor.submit(add_offset, 1).result(TIMEOUT) == 11
        assert executor.submit(async_add_offset, 2).result(TIMEOUT) == 12
        assert list(executor.map(lambda x: -x, range(3))) == [0, -1, -2]


MAIN_SCRIPT = """
import dataclasses

import aplex

@dataclasses.dataclass
class Point:
    x: int
    y: int

def square(x):
    return x * x

async def async_square(x):
    return x * x

def mirror(point):
    return Point(point.y, point.x)

if __name__ == "__main__":
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        print(executor.submit(square, 7).result(30))
        print(executor.submit(async_square, 8).result(30))
        print(list(executor.map(square, range(4), chunksize=2)))
        print(executor.submit(mirror, Point(1, 2)).result(30))
"""


@pytest.mark.parametrize("run_as", ["file", "-c"])
def test_functions_and_classes_defined_in_main(run_as, tmp_path):
    """A script's own functions and classes live in ``__main__``, which a
    worker cannot import by name (not at all for ``python -c``); cloudpickle
    sends them by value."""
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    command = [str(script)] if run_as == "file" else ["-c", MAIN_SCRIPT]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["49", "64", "[0, 1, 4, 9]", "Point(x=2, y=1)"]


def test_map_with_chunksize_and_buffersize():
    consumed = 0

    def endless():
        nonlocal consumed
        for value in itertools.count():
            consumed += 1
            yield value

    with aplex.ProcessAsyncPoolExecutor(pool_size=2) as executor:
        # Plain and coroutine works, chunked, in input order.
        assert list(executor.map(works.add, range(10), range(10), chunksize=3)) == list(
            range(0, 20, 2)
        )
        assert list(executor.map(works.async_add, range(7), chunksize=4)) == list(range(7))
        # An endless iterable, read lazily: 5 results are 2 chunks read, and
        # at most buffersize=2 more chunks are in flight behind them.
        results = executor.map(works.identity, endless(), chunksize=3, buffersize=2)
        assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
        assert consumed <= 3 * (2 + 2)
        results.close()


def test_cancel_running_coroutine_work_in_another_process(tmp_path):
    """cancel() on a coroutine work running in a worker process cancels it
    there (its own ``finally`` runs) while another work on the same worker
    goes on running."""
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    release = tmp_path / "release"
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        other = executor.submit(works.async_wait_for_file, str(release), "other ran on")
        victim = executor.submit(works.async_mark_files_until_cancelled, str(started), str(cleaned))
        wait_for_path(started)
        assert victim.running()

        assert victim.cancel() is True
        wait_for_path(cleaned)
        assert cleaned.read_text() == "cleaned up"
        assert victim.cancelled()

        assert not other.done()
        release.touch()
        assert other.result(TIMEOUT) == "other ran on"
        assert executor.statistics().cancelled == 1


def test_awaitable_futures_under_asyncio():
    async def main():
        with aplex.ProcessAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
            future = executor.submit(works.async_add, 2, y=3)
            assert isinstance(future, aplex.AsyncioFuture)
            assert await future == 5
            assert await executor.submit(works.add, 4, 4) == 8
            return [value async for value in executor.map(works.add, range(4), chunksize=3)]

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_worker_loop_factory_uvloop():
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1, worker_loop_factory=uvloop.new_event_loop
    ) as executor:
        assert executor.submit(works.running_loop_module).result(TIMEOUT).startswith("uvloop")


@pytest.mark.parametrize("loop_factory", [None, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_worker_never_holds_its_loop_in_a_read(loop_factory):
    # The worker's loop watches its pipe with one reader for its life, which
    # may fire again for a batch already read: a worker that then read
    # anyway would block its loop in the read, and a coroutine that only
    # yields (no timer to wake the loop) would wait for the next message.
    with aplex.ProcessAsyncPoolExecutor(pool_size=1, worker_loop_factory=loop_factory) as executor:
        for round_ in range(20):
            assert executor.submit(works.add, round_, 1).result(TIMEOUT) == round_ + 1
            assert executor.submit(works.async_add, round_, y=2).result(TIMEOUT) == round_ + 2


@pytest.mark.parametrize(
    ("initializer", "kind"),
    [(works.initialize, "plain"), (works.async_initialize, "coroutine")],
)
def test_initializer_with_initargs(initializer, kind):
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=2, initializer=initializer, initargs=("ready",)
    ) as executor:
        # Round robin: one work per worker; each ran the initializer in its
        # own process before its first work.
        values = [executor.submit(works.initialized_value).result(TIMEOUT) for _ in range(2)]
    assert values == [(kind, "ready")] * 2


@pytest.mark.parametrize(
    ("mp_context", "spawned_by_us"),
    [
        ("spawn", True),
        ("forkserver", False),
        (multiprocessing.get_context("spawn"), True),
        (multiprocessing.get_context("forkserver"), False),
    ],
    ids=["spawn-name", "forkserver-name", "spawn-context", "forkserver-context"],
)
def test_mp_context_name_or_context(mp_context, spawned_by_us):
    # The start method shows in who the worker's parent is: with spawn it is
    # this process, with forkserver it is the fork server.
    with aplex.ProcessAsyncPoolExecutor(pool_size=1, mp_context=mp_context) as executor:
        worker_parent = executor.submit(works.parent_pid).result(TIMEOUT)
        assert executor.submit(works.async_add, 1, 1).result(TIMEOUT) == 2
    assert (worker_parent == os.getpid()) is spawned_by_us


def test_invalid_mp_context_fails_at_construction():
    with pytest.raises(ValueError, match="no-such-method"):
        aplex.ProcessAsyncPoolExecutor(pool_size=1, mp_context="no-such-method")
    with pytest.raises(TypeError, match="mp_context"):
        aplex.ProcessAsyncPoolExecutor(pool_size=1, mp_context=42)
    # No worker was started: the autouse leak check would see it.


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_a_worker_process_loads_only_the_worker_side(method, worker_backend):
    """Guards the worker side's isolation: a worker process (and the fork
    server) must not import the front end, whose import every worker's
    start-up would pay."""
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1, mp_context=method, worker_backend=worker_backend
    ) as executor:
        loaded = executor.submit(works.aplex_modules).result(TIMEOUT)
    assert f"aplex.backends._{worker_backend}" in loaded
    front_end = {
        "aplex.executor",
        "aplex.futures",
        "aplex.load_balancers",
        "aplex._dispatch",
        "aplex._processes",
        "aplex._threads",
        "aplex._lifecycle",
        "aplex._map",
        "aplex.backends.asyncio",
        "aplex.backends.trio",
    }
    assert front_end.isdisjoint(loaded), sorted(front_end & set(loaded))


def test_round_robin_passes_over_a_worker_process_blocked_by_a_plain_function(tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    with aplex.ProcessAsyncPoolExecutor(pool_size=2) as executor:
        blocked_pid = executor.submit(works.pid).result(TIMEOUT)  # worker 0, then on to 1
        free_pid = executor.submit(works.pid).result(TIMEOUT)
        blocking = executor.submit(works.plain_until_file, str(started), str(release), "done")
        wait_for_path(started)
        assert [worker.blocked for worker in executor.statistics().workers] == [True, False]
        assert {executor.submit(works.pid).result(TIMEOUT) for _ in range(4)} == {free_pid}
        release.touch()
        assert blocking.result(TIMEOUT) == "done"
    assert blocked_pid != free_pid


@pytest.mark.parametrize("balancer", [RoundRobin, Average])
def test_a_burst_of_plain_works_is_split_evenly_between_worker_processes(balancer):
    """Guards against uneven bursts: a balancer saw a worker blocked only
    once its plain function had started, so the rest of a burst went to the
    other worker, whose first one had not started yet (8 CPU-bound works
    split 2 and 6, or 1 and 7, in about half of the bursts measured)."""
    with aplex.ProcessAsyncPoolExecutor(pool_size=2, load_balancer=balancer) as executor:
        for _ in range(5):
            futures = [executor.submit(works.sleep_then_pid, 0.05) for _ in range(8)]
            pids = collections.Counter(future.result(TIMEOUT) for future in futures)
            assert sorted(pids.values()) == [4, 4], pids


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_initargs_may_hold_multiprocessing_primitives(method):
    """A Queue, an Event and a Lock reach each worker as the standard
    library passes them: at process start, not pickled into a message."""
    context = multiprocessing.get_context(method)
    queue, event, lock = context.Queue(), context.Event(), context.Lock()
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=2,
        mp_context=context,
        initializer=works.keep_primitives,
        # A lambda among them is still sent, by value.
        initargs=(queue, event, lock, lambda value: value * 2),
    ) as executor:
        assert executor.submit(works.use_primitives, 21).result(TIMEOUT) == "done"
        assert queue.get(timeout=TIMEOUT) == 42
        assert event.wait(TIMEOUT)
        # The lock is the parent's own: held here, the worker cannot take it.
        with lock:
            assert executor.submit(works.try_primitive_lock).result(TIMEOUT) is False
        assert executor.submit(works.try_primitive_lock).result(TIMEOUT) is True
    queue.close()
    queue.join_thread()


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Python 3.10's multiprocessing does not tell a fork-context lock sent to a spawned "
    "process (its SemLock has no is_fork_ctx check): nothing to turn into a clear error",
)
def test_initargs_that_cannot_reach_a_worker_fail_at_construction_with_the_reason():
    # A lock made for fork children, given to spawned ones.
    lock = multiprocessing.get_context("fork").Lock()
    with pytest.raises(TypeError, match="initargs cannot be passed.*spawn.*fork context"):
        aplex.ProcessAsyncPoolExecutor(
            pool_size=1, mp_context="spawn", initializer=works.keep_primitives, initargs=(lock,)
        )
    # No worker was started: the autouse leak check would see it.
