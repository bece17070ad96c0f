"""Fork: what a forked process inherits of aplex, and what it does with it.

SPEC: a forked process (a worker started with ``mp_context="fork"``, the
program's own ``os.fork()``, a multiprocessing fork child) never touches its
parent's pools; workers die with their parent, even while a work holds the
GIL. Each test plays its program in a subprocess with a timeout, so that a
hang or a dead parent is the subprocess's, never the test runner's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import aplex
from tests import works
from tests.test_process_failures import (
    PROMPTLY,
    TIMEOUT,
    alive,
    read_line,
    start_script,
    stop_script,
    wait_until_gone,
)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the platform cannot fork")
linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="reads /proc and relies on Linux's parent-death signal"
)


def run_script(source: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``source`` to its end; a hang fails the test at ``timeout``."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    # Nothing of a forked child's exit may complain either: multiprocessing's
    # exit handler joining children that are not its own, a lock, a STOP...
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr


# -- forked processes leave the parent's pools alone -------------------------


def test_a_fork_start_pool_leaves_the_other_pools_of_its_parent_alone():
    """Guards against fork-start workers running the exit hook on their
    copies of the parent's other pools: a STOP to an idle worker, a SIGKILL
    to a busy one (the pool then broke)."""
    done = run_script(
        """
        import os, sys, tempfile
        import aplex
        from tests import works

        release = os.path.join(tempfile.mkdtemp(), "release")
        with aplex.ProcessAsyncPoolExecutor(pool_size=2, max_works_per_worker=1) as other:
            pids = {other.submit(works.pid).result(30) for _ in range(4)}
            busy = other.submit(works.async_wait_for_file, release, "busy done")
            for _ in range(3):
                with aplex.ProcessAsyncPoolExecutor(pool_size=2, mp_context="fork") as forked:
                    assert forked.submit(works.add, 1, y=2).result(30) == 3
            # The idle worker serves; then the busy one, once released.
            assert other.submit(works.add, 2, y=2).result(30) == 4
            open(release, "w").close()
            assert busy.result(30) == "busy done"
            assert {other.submit(works.pid).result(30) for _ in range(4)} == pids
        print("ok")
        """
    )
    assert_clean(done)
    assert done.stdout == "ok\n"


@pytest.mark.timeout(120)
def test_fork_pools_made_while_a_thread_pool_churns_do_not_hang():
    """CPython's test_hang_global_shutdown_lock, on aplex: a thread pool
    whose works keep taking its dispatcher's lock, and fork-start process
    pools made meanwhile. A worker forked while a thread held that lock
    used to deadlock on it when it exited."""
    done = run_script(
        """
        import aplex
        from tests import works

        with aplex.ThreadAsyncPoolExecutor(pool_size=1) as churning:
            churning.submit(works.resubmit_forever, churning)
            for _ in range(30):
                with aplex.ProcessAsyncPoolExecutor(pool_size=1, mp_context="fork") as forked:
                    forked.submit(tuple).result(30)
            churning.shutdown(cancel_futures=True)
        print("ok")
        """,
        timeout=90,
    )
    assert_clean(done)


@pytest.mark.timeout(150)
def test_forked_children_exit_at_once_while_the_pools_are_busy():
    """Guards against a child made with os.fork() while the pools' threads
    are busy (one held the dispatcher's lock, or was writing to a worker):
    its exit used to hang on that lock, about one child in five to ten, or
    to stop the parent's workers. Each child exits normally (its atexit
    handlers run) while its parent's works go on."""
    done = run_script(
        """
        import os, sys, threading, time
        import aplex
        from tests import works

        CHILDREN = 30

        def churn(executor, stop):
            # Bounded, so that the pools' exits need not wait for a backlog.
            while not stop.is_set():
                for future in [executor.submit(works.add, i, y=1) for i in range(50)]:
                    future.result(30)

        with aplex.ThreadAsyncPoolExecutor(pool_size=2) as threads, \\
                aplex.ProcessAsyncPoolExecutor(pool_size=2) as processes:
            stop = threading.Event()
            churners = [
                threading.Thread(target=churn, args=(executor, stop))
                for executor in (threads, processes)
            ]
            for churner in churners:
                churner.start()
            hung = 0
            for _ in range(CHILDREN):
                pid = os.fork()
                if pid == 0:
                    sys.exit(0)  # a normal exit: the exit handlers run
                deadline = time.monotonic() + 10
                while os.waitpid(pid, os.WNOHANG) == (0, 0):
                    if time.monotonic() > deadline:
                        hung += 1
                        os.kill(pid, 9)
                        os.waitpid(pid, 0)
                        break
                    time.sleep(0.005)
            stop.set()
            for churner in churners:
                churner.join()
            # The parent's pools were never touched by their children.
            assert threads.submit(works.add, 2, y=3).result(30) == 5
            assert processes.submit(works.add, 2, y=3).result(30) == 5
        print("hung", hung)
        """,
        timeout=120,
    )
    assert_clean(done)
    assert done.stdout == "hung 0\n"


@pytest.mark.timeout(150)
def test_a_forked_child_makes_its_own_pools_and_refuses_its_parents():
    """Guards against the fork server state a child inherits: after the
    parent had made a process pool, a child's own pool failed at once
    (ChildProcessError: the parent's server is not the child's child)."""
    done = run_script(
        """
        import multiprocessing, os, sys
        import aplex
        from tests import works

        def child(parents):
            try:
                parents.submit(works.add, 1)
            except RuntimeError as exc:
                assert f"belongs to process {os.getppid()}" in str(exc), exc
            else:
                raise AssertionError("the parent's pool took a work in a child")
            for method in ("forkserver", "spawn", "fork"):
                with aplex.ProcessAsyncPoolExecutor(pool_size=1, mp_context=method) as own:
                    assert own.submit(works.add, 20, y=1).result(30) == 21
            with aplex.ThreadAsyncPoolExecutor(pool_size=1) as own:
                assert own.submit(works.add, 20, y=2).result(30) == 22
            parents.shutdown()  # the parent's pool: harmless here

        if __name__ == "__main__":
            with aplex.ProcessAsyncPoolExecutor(pool_size=1) as parents:
                assert parents.submit(works.add, 1, y=1).result(30) == 2
                pid = os.fork()
                if pid == 0:
                    child(parents)
                    sys.exit(0)
                assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
                process = multiprocessing.get_context("fork").Process(
                    target=child, args=(parents,)
                )
                process.start()
                process.join(60)
                assert process.exitcode == 0, process.exitcode
                assert parents.submit(works.add, 1, y=2).result(30) == 3
            print("ok")
        """,
        timeout=120,
    )
    assert_clean(done)
    assert done.stdout == "ok\n"


# -- workers die with their parent --------------------------------------------

# A parent whose pool's only worker holds the GIL in a C call; it prints the
# worker's pid once the work has started, then waits to be killed.
GIL_HOLDING_PARENT = """
    import os, sys, tempfile, time
    import aplex
    from tests import works

    if __name__ == "__main__":
        started = os.path.join(tempfile.mkdtemp(), "started")
        executor = aplex.ProcessAsyncPoolExecutor(pool_size=1, mp_context=sys.argv[1])
        pid = executor.submit(works.pid).result(30)
        executor.submit(works.hold_gil, started)
        while not os.path.exists(started):
            time.sleep(0.005)
        print(pid, flush=True)
        time.sleep(120)
"""


def start_parent(source: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@linux_only
@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_a_worker_holding_the_gil_dies_with_its_killed_parent(method):
    """The watch thread cannot run while a work holds the GIL: the worker
    used to outlive a parent killed outright for as long as the work ran."""
    pids: list[int] = []
    with start_parent(GIL_HOLDING_PARENT, method) as parent:
        try:
            pids = [int(read_line(parent))]
            assert alive(pids[0])
            parent.kill()
            parent.wait(timeout=PROMPTLY)
            assert wait_until_gone(pids) == []
        finally:
            stop_script(parent, pids)


# Two fork-start pools, the second made by a thread that then ends: its
# workers inherited the first pool's pipe ends and their own.
FORKED_FROM_A_THREAD_PARENT = """
    import threading, time
    import aplex
    from tests import works

    if __name__ == "__main__":
        first = aplex.ProcessAsyncPoolExecutor(pool_size=2, mp_context="fork")
        made = []
        maker = threading.Thread(
            target=lambda: made.append(
                aplex.ProcessAsyncPoolExecutor(pool_size=2, mp_context="fork")
            )
        )
        maker.start()
        maker.join()
        pids = {
            executor.submit(works.pid).result(30) for executor in (first, *made) for _ in range(4)
        }
        print(*pids, flush=True)
        time.sleep(120)
"""


@linux_only
def test_fork_workers_close_the_pipe_ends_they_inherit_and_die_with_a_killed_parent():
    """Guards against fork-start workers keeping copies of their parent's
    ends of the pipes (their own and other pools'): the end of their pipe
    never came, and they outlived a parent killed outright. The second
    pool's workers were forked by a thread that has ended, so no
    parent-death signal stands in for their watch thread."""
    pids: list[int] = []
    with start_script(FORKED_FROM_A_THREAD_PARENT) as parent:
        try:
            pids = [int(pid) for pid in read_line(parent).split()]
            assert len(pids) == 4 and all(alive(pid) for pid in pids)
            parent.kill()
            parent.wait(timeout=PROMPTLY)
            assert wait_until_gone(pids) == []
        finally:
            stop_script(parent, pids)


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_a_pool_made_by_a_thread_that_ends_keeps_its_workers(method):
    """The parent-death signal comes when the thread that forked a worker
    ends, not its process: a pool made by a short-lived thread (one of
    anyio.to_thread's, a thread worker's) must not lose its workers then."""
    made: list[aplex.ProcessAsyncPoolExecutor] = []
    maker = threading.Thread(
        target=lambda: made.append(aplex.ProcessAsyncPoolExecutor(pool_size=2, mp_context=method))
    )
    maker.start()
    maker.join()
    with made[0] as executor:
        first = {executor.submit(works.pid).result(TIMEOUT) for _ in range(4)}
        assert len(first) == 2
        assert executor.submit(works.sleep_sync, 0.3, "slept").result(TIMEOUT) == "slept"
        assert {executor.submit(works.pid).result(TIMEOUT) for _ in range(4)} == first
        assert executor.statistics().failed == 0


# -- a fork pool made inside a running event loop ------------------------------


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("caller_loop", ["asyncio", "trio", "uvloop"])
def test_a_fork_pool_made_inside_a_running_loop_serves(caller_loop, worker_backend):
    """Guards against workers forked by a thread running trio: they
    inherited trio's record of that run, and each died at start with
    "Attempted to call run() from inside a run()"."""
    if caller_loop == "uvloop":
        pytest.importorskip("uvloop")
    done = run_script(
        """
        import sys
        import aplex
        from tests import works

        async def main(worker_backend):
            with aplex.ProcessAsyncPoolExecutor(
                pool_size=2, mp_context="fork", worker_backend=worker_backend
            ) as executor:
                plain = [executor.submit(works.add, i, y=1).result(30) for i in range(4)]
                coroutines = await executor.run(works.async_add, 5, 5)
                return plain, coroutines, executor.statistics().failed

        caller_loop, worker_backend = sys.argv[1:]
        if caller_loop == "trio":
            import trio
            print(trio.run(main, worker_backend))
        elif caller_loop == "uvloop":
            import uvloop
            print(uvloop.run(main(worker_backend)))
        else:
            import asyncio
            print(asyncio.run(main(worker_backend)))
        """,
        caller_loop,
        worker_backend,
    )
    assert_clean(done)
    assert done.stdout == "([1, 2, 3, 4], 10, 0)\n"
