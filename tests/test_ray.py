"""Ray executors: each worker a Ray actor running aplex's own worker loop.

The tests marked ``ray`` run on one local Ray instance for the session (see
the ``ray_instance`` fixture), in CI's Ray step: ``python -m pytest -m ray``.
The main suite deselects them, and runs the two unmarked tests here, which
need no Ray: ``import aplex`` never imports it, and a Ray executor made
without it says how to install it. The contract every worker kind keeps is
checked for Ray's in test_worker_kinds.py.

Works signal the test through files in ``tmp_path``: the actors run on this
machine, in processes of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import aplex
import aplex.backends.trio
from aplex import AplexWorkerError
from aplex._exceptions import RemoteTraceback
from tests import works

from .support import T, wait_until

ROOT = Path(__file__).resolve().parents[1]
PROMPTLY = 10  # seconds within which a broken pool must let every caller go

ray_test = pytest.mark.ray


def live_actors(ray):
    """The names of aplex's actors alive in the session's Ray instance."""
    return sorted(name for name in ray.util.list_named_actors() if name.startswith("aplex-"))


@pytest.fixture
def ray(ray_instance):
    """The session's Ray; each test must leave no actor of aplex's behind."""
    assert live_actors(ray_instance) == []
    yield ray_instance
    wait_until(lambda: live_actors(ray_instance) == [])


# -- without Ray --------------------------------------------------------------


def test_import_aplex_never_imports_ray():
    code = textwrap.dedent(
        """
        import sys
        import aplex, aplex.backends.trio
        assert aplex.RayAsyncPoolExecutor and aplex.backends.trio.RayAsyncPoolExecutor
        print("ray" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    "executor_class",
    [aplex.RayAsyncPoolExecutor, aplex.backends.trio.RayAsyncPoolExecutor],
    ids=["asyncio", "trio"],
)
def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, executor_class):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` finds without Ray
    with pytest.raises(ImportError, match=r'pip install "aplex\[ray\]"'):
        executor_class(pool_size=1)


# -- submit, map and run ------------------------------------------------------


@ray_test
def test_submit_and_map_from_plain_code(ray):
    with aplex.RayAsyncPoolExecutor(pool_size=2) as pool:
        assert pool.submit(works.add, 1, y=2).result(T) == 3
        assert pool.submit(works.async_add, 2, y=3).result(T) == 5
        assert list(pool.map(works.add, range(10), range(10), chunksize=3)) == list(range(0, 20, 2))
        assert list(pool.map(works.async_add, range(5), chunksize=2)) == list(range(5))
        library, pid, _ = pool.submit(works.async_where).result(T)
        with pytest.raises(works.WorkError) as raised:
            pool.submit(works.raise_work_error, "from an actor").result(T)
        # Live while the pool runs, and in this session's Ray instance.
        assert len(live_actors(ray)) == 2
    assert library == "asyncio"
    assert pid != os.getpid()
    assert raised.value.args == ("from an actor",)
    assert "raise_work_error" in str(raised.value.__cause__)  # the worker's traceback
    statistics = pool.statistics()
    assert (statistics.completed, statistics.failed) == (3 + 4 + 3, 1)  # a map chunk is one work
    # Shut down, the pool leaves the Ray instance it did not start running.
    assert ray.is_initialized()


@ray_test
def test_awaitable_futures_map_and_run_from_asyncio(ray):
    async def main():
        async with aplex.RayAsyncPoolExecutor(pool_size=2, awaitable=True) as pool:
            added = await asyncio.wait_for(pool.submit(works.async_add, 1, y=1), T)
            mapped = [value async for value in pool.map(works.add, range(6), chunksize=4)]
            ran = await asyncio.wait_for(pool.run(works.async_add, 40, y=2), T)
            return added, mapped, ran

    assert asyncio.run(main()) == (2, list(range(6)), 42)


@ray_test
def test_trio_executor_runs_trio_works_from_trio(ray):
    import trio

    async def main():
        async with aplex.backends.trio.RayAsyncPoolExecutor(pool_size=1) as pool:
            with trio.fail_after(T):
                slept = await pool.submit(works.trio_native_sleep, 0.01)
                mapped = [value async for value in pool.map(works.async_add, range(4))]
                library, _, _ = await pool.run(works.async_where)
            return slept, mapped, library

    slept, mapped, library = trio.run(main)
    assert slept >= 0.01
    assert mapped == list(range(4))
    assert library == "trio"


@ray_test
def test_worker_loop_factory_runs_the_actor_on_uvloop(ray):
    uvloop = pytest.importorskip("uvloop")  # not on Windows, as in the test extra
    with aplex.RayAsyncPoolExecutor(pool_size=1, worker_loop_factory=uvloop.new_event_loop) as pool:
        assert pool.submit(works.running_loop_module).result(T).startswith("uvloop")


@ray_test
def test_a_work_that_cannot_be_pickled_fails_alone(ray):
    with aplex.RayAsyncPoolExecutor(pool_size=1) as pool:
        with pytest.raises(pickle.PicklingError, match="argument 0"):
            pool.submit(works.identity, threading.Lock()).result(T)
        assert pool.submit(works.identity, "still serving").result(T) == "still serving"


# -- cancellation -------------------------------------------------------------


@ray_test
def test_cancelling_a_running_coroutine_work_spares_the_others_on_its_actor(ray, tmp_path):
    started, cleaned, release = tmp_path / "started", tmp_path / "cleaned", tmp_path / "release"
    with aplex.RayAsyncPoolExecutor(pool_size=1) as pool:
        doomed = pool.submit(works.async_mark_files_until_cancelled, str(started), str(cleaned))
        spared = pool.submit(works.async_wait_for_file, str(release), "spared")
        wait_until(started.exists)
        assert doomed.cancel()
        assert doomed.cancelled()
        # Cancelled in the actor: the work's own cleanup ran there.
        wait_until(lambda: cleaned.exists() and cleaned.read_text() == "cleaned up")
        release.write_text("")
        assert spared.result(T) == "spared"
        assert pool.submit(works.identity, 1).result(T) == 1
    assert pool.statistics().cancelled == 1


# -- an actor's death ---------------------------------------------------------


def assert_lost_with_the_pool(futures, cause_type):
    """Every future ends promptly, as a broken pool ends them."""
    done, not_done = concurrent.futures.wait(futures, timeout=PROMPTLY)
    assert not not_done, f"{len(not_done)} futures still pending"
    for future in futures:
        error = future.exception()
        assert isinstance(error, concurrent.futures.CancelledError), error
        assert isinstance(error.__cause__, AplexWorkerError)
        assert isinstance(error.__cause__.__cause__, cause_type)


@ray_test
def test_ray_kill_of_an_actor_with_100_works_in_flight_breaks_the_pool(ray, tmp_path):
    never = tmp_path / "never"
    pool = aplex.RayAsyncPoolExecutor(pool_size=2)
    try:
        in_flight = [pool.submit(works.async_wait_for_file, str(never)) for _ in range(100)]
        # Round robin: these two reach each actor behind its 50 works, so
        # once they answer, every work is running in an actor.
        assert [pool.submit(works.identity, i).result(T) for i in range(2)] == [0, 1]
        assert pool.statistics().running == 100
        ray.kill(ray.get_actor(live_actors(ray)[0]), no_restart=True)
        assert_lost_with_the_pool(in_flight, ray.exceptions.RayActorError)
        with pytest.raises(AplexWorkerError):
            pool.submit(works.identity, 1)
        start = time.monotonic()
    finally:
        pool.shutdown(wait=True)
    assert time.monotonic() - start < PROMPTLY


@ray_test
def test_os_exit_in_a_work_breaks_the_pool(ray, tmp_path):
    gate = tmp_path / "gate"
    with aplex.RayAsyncPoolExecutor(pool_size=2) as pool:
        waiting = pool.submit(works.async_wait_for_file, str(tmp_path / "never"))
        dying = pool.submit(works.die_when_file_exists, str(gate), "os_exit")
        assert pool.statistics().running == 2
        gate.write_text("")
        assert_lost_with_the_pool([waiting, dying], ray.exceptions.RayActorError)


# -- options ------------------------------------------------------------------


@ray_test
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrency": 10}, ValueError, "may not set 'max_concurrency'"),
        ({"lifetime": "detached"}, ValueError, "lifetime='detached'"),
        ({"max_restarts": 1}, ValueError, "must leave 'max_restarts' at 0"),
        ({"max_task_retries": -1}, ValueError, "must leave 'max_task_retries' at 0"),
        ({"name": "mine"}, ValueError, "may not set 'name'"),
        ({"num_cpus": -1}, ValueError, "num_cpus"),  # Ray's own check, run at construction
        ({"no_such_option": 1}, ValueError, "no_such_option"),
        (["num_cpus"], TypeError, "must be a mapping"),
    ],
)
def test_options_aplex_cannot_run_with_are_rejected_at_construction(ray, options, error, message):
    with pytest.raises(error, match=message):
        aplex.RayAsyncPoolExecutor(pool_size=1, ray_actor_options=options)
    assert live_actors(ray) == []


@ray_test
def test_the_options_aplex_depends_on_are_accepted_when_already_right(ray):
    options = {"max_restarts": 0, "max_task_retries": 0, "num_cpus": 0}
    with aplex.RayAsyncPoolExecutor(pool_size=1, ray_actor_options=options) as pool:
        assert pool.submit(works.identity, 1).result(T) == 1


@ray_test
def test_an_address_while_ray_is_initialised_otherwise_is_rejected(ray):
    with pytest.raises(RuntimeError, match="already initialised"):
        aplex.RayAsyncPoolExecutor(pool_size=1, address="local")


# -- the Ray instance ---------------------------------------------------------


@ray_test
def test_a_ray_instance_aplex_started_is_shut_down_with_its_last_pool(tmp_path):
    """In a script of its own: it starts a second local Ray instance. Its
    works are the script's own functions: an actor has not the script's
    main module, so they go by value (a worker process would import it)."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import ray
            import aplex

            def add(x, y):
                return x + y

            class Doubler:
                def __call__(self, x):
                    return 2 * x

            if __name__ == "__main__":
                first = aplex.RayAsyncPoolExecutor(address="local", pool_size=1)
                second = aplex.RayAsyncPoolExecutor(pool_size=1)  # the same instance
                assert first.submit(add, 1, 2).result(60) == 3
                first.shutdown()
                assert ray.is_initialized(), "shut down while a pool still used it"
                assert second.submit(Doubler(), 2).result(60) == 4
                second.shutdown()
                print("initialised after:", ray.is_initialized())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "initialised after: False"


@ray_test
def test_a_module_the_actors_cannot_import_breaks_the_pool(ray, tmp_path, monkeypatch):
    (tmp_path / "unshipped_works.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable here, not in the actors
    import unshipped_works

    with aplex.RayAsyncPoolExecutor(pool_size=1) as pool:
        lost = pool.submit(unshipped_works.triple, 2)
        assert_lost_with_the_pool([lost], RemoteTraceback)
    # The actor's traceback says what it could not import.
    assert "No module named 'unshipped_works'" in str(lost.exception().__cause__.__cause__)


@ray_test
def test_a_runtime_env_given_to_ray_init_ships_the_users_modules(tmp_path):
    """What docs/ray.md shows; in a process of its own, as it starts a
    second Ray instance with a job-wide runtime_env."""
    package = tmp_path / "shipped_works"
    package.mkdir()
    (package / "__init__.py").write_text("def triple(x):\n    return 3 * x\n")
    code = textwrap.dedent(
        f"""
        import sys
        import ray
        import aplex

        sys.path.insert(0, {str(tmp_path)!r})
        import shipped_works

        # The actors start elsewhere than the package's directory.
        ray.init(address="local", runtime_env={{"py_modules": [shipped_works]}})
        with aplex.RayAsyncPoolExecutor(pool_size=1) as pool:
            assert pool.submit(shipped_works.triple, 2).result(60) == 6
        print("left running:", ray.is_initialized())
        ray.shutdown()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "left running: True"
