"""on_worker_death="replace": a dead worker's works fail alone, with
WorkerDiedError, and a new worker takes its place (same index, new process
or thread, initializer run again); works waiting in the executor and works
on the other workers go on. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FuturesTimeoutError

import pytest

import aplex
from aplex.backends import trio as trio_front_end
from tests import works
from tests.support import Sticky, alive, descendants, wait_until
from tests.test_process_failures import _fd_count

TIMEOUT = 30  # seconds for any one result: generous, the machine is shared


def _count_endings(futures):
    """How many times each future has ended, as its done callbacks saw it."""
    endings = [0] * len(futures)
    lock = threading.Lock()

    def ended(index):
        with lock:
            endings[index] += 1

    for index, future in enumerate(futures):
        future.add_done_callback(lambda _, index=index: ended(index))
    return endings


@pytest.mark.slow
@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_twenty_sigkills_under_load_fail_only_the_dead_workers_works(tmp_path, worker_backend):
    """Twenty times: worker 0, running two coroutine works, is SIGKILLed
    while worker 1 runs two of its own. Only worker 0's works fail, with
    WorkerDiedError naming it and the signal; worker 1's complete; each
    future ends exactly once; a new process serves at index 0; and twenty
    deaths leak no process, zombie or fd."""
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=2,
        load_balancer=Sticky,
        worker_backend=worker_backend,
        on_worker_death="replace",
    ) as executor:
        before = None
        for round_ in range(20):
            release = tmp_path / f"release-{round_}"
            doomed = [
                executor.submit(works.async_wait_for_file, str(release), 0, load_balancing_meta=0)
                for _ in range(2)
            ]
            spared = [
                executor.submit(
                    works.async_wait_for_file, str(release), round_, load_balancing_meta=1
                )
                for _ in range(2)
            ]
            endings = _count_endings(doomed + spared)
            pid = executor.submit(works.pid, load_balancing_meta=0).result(TIMEOUT)
            if before is None:
                # Counted once the fork server and the resource tracker,
                # which live on for the session, and both workers run.
                before = _fd_count(), set(descendants())
            os.kill(pid, signal.SIGKILL)
            for future in doomed:
                error = future.exception(TIMEOUT)
                assert isinstance(error, aplex.WorkerDiedError)
                assert isinstance(error, aplex.AplexWorkerError)
                assert error.worker == "ProcessWorker-0"
                assert error.exitcode == -signal.SIGKILL
                assert "ProcessWorker-0" in str(error) and "SIGKILL" in str(error)
            new_pid = executor.submit(works.pid, load_balancing_meta=0).result(TIMEOUT)
            assert new_pid != pid
            release.touch()
            assert [future.result(TIMEOUT) for future in spared] == [round_, round_]
            assert endings == [1, 1, 1, 1]
        statistics = executor.statistics()
        assert statistics.replaced == 20
        assert statistics.failed == 40
        fds, processes = before
        # +-2: a transient fd (an import, /proc being read) at either count;
        # a leak of one pipe per death would show +20 or more.
        assert abs(_fd_count() - fds) <= 2
        left = descendants()
        assert "Z" not in left.values(), left
        assert len(left) == len(processes)


def test_works_waiting_in_the_executor_survive_a_death(tmp_path):
    """With one worker taking one work at a time, the works waiting behind
    the killed one run on its replacement, in order."""
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1, max_works_per_worker=1, on_worker_death="replace"
    ) as executor:
        pid = executor.submit(works.pid).result(TIMEOUT)
        running = executor.submit(works.sleep_sync, 60)
        waiting = [executor.submit(works.add, index, y=100) for index in range(3)]
        assert executor.statistics().waiting == 3
        os.kill(pid, signal.SIGKILL)
        assert isinstance(running.exception(TIMEOUT), aplex.WorkerDiedError)
        assert [future.result(TIMEOUT) for future in waiting] == [100, 101, 102]
        assert executor.submit(works.pid).result(TIMEOUT) != pid


@pytest.mark.parametrize("how", ["os_exit", "system_exit"])
def test_a_process_worker_that_exits_is_replaced(tmp_path, how):
    """A work that exits its process, or lets SystemExit escape, fails with
    WorkerDiedError saying how; the cause is the escaped exception."""
    go = tmp_path / "go"
    go.touch()
    with aplex.ProcessAsyncPoolExecutor(pool_size=1, on_worker_death="replace") as executor:
        error = executor.submit(works.die_when_file_exists, str(go), how).exception(TIMEOUT)
        assert isinstance(error, aplex.WorkerDiedError)
        if how == "os_exit":
            assert error.exitcode == 3
            assert "exited with code 3" in str(error)
        else:
            assert "SystemExit" in str(error)
            assert isinstance(error.__cause__, SystemExit)
        assert executor.submit(works.add, 1, y=1).result(TIMEOUT) == 2
        assert executor.statistics().replaced == 1


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_a_thread_worker_hit_by_a_base_exception_is_replaced(tmp_path, worker_backend):
    """A BaseException escaping a work ends a thread worker: its works fail
    with WorkerDiedError (the escaped exception as cause), a new thread at
    the same index runs the initializer, and the pool serves on."""
    log: list = []
    go = tmp_path / "go"
    with aplex.ThreadAsyncPoolExecutor(
        pool_size=1,
        worker_backend=worker_backend,
        on_worker_death="replace",
        initializer=works.record_initializer,
        initargs=(log, "ready"),
    ) as executor:
        beside = executor.submit(works.async_wait_for_file, str(tmp_path / "never"))
        dying = executor.submit(works.async_die_when_file_exists, str(go), "system_exit")
        endings = _count_endings([beside, dying])
        go.touch()
        for future in (beside, dying):
            error = future.exception(TIMEOUT)
            assert isinstance(error, aplex.WorkerDiedError)
            assert error.worker == "ThreadWorker-0"
            assert isinstance(error.__cause__, SystemExit)
        assert executor.submit(works.initialized_tag).result(TIMEOUT) == "ready"
        assert [name for name, _ in log] == [log[0][0]] * 2  # same index, initialized twice
        assert endings == [1, 1]
        assert executor.statistics().replaced == 1


def test_a_worker_that_dies_once_starting_is_replaced(tmp_path):
    """A worker that dies in its initializer once is replaced; the works
    sent to it had not started (a worker runs none before its initializer
    returns), and run on its replacement instead of failing."""
    flag = tmp_path / "died"
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1,
        on_worker_death="replace",
        initializer=works.die_once_in_initializer,
        initargs=(str(flag),),
    ) as executor:
        futures = [executor.submit(works.add, index, y=3) for index in range(3)]
        assert [future.result(TIMEOUT) for future in futures] == [3, 4, 5]
        assert flag.exists()
        statistics = executor.statistics()
        assert (statistics.replaced, statistics.completed, statistics.failed) == (1, 3, 0)


def test_a_worker_that_dies_starting_during_shutdown_fails_its_works(tmp_path):
    """Shutdown has told every worker to stop when the worker dies in its
    initializer: the works sent to it never started, and with no worker
    left to run them they fail with WorkerDiedError rather than wait for
    ever (shutdown then found them unfinished and broke the pool)."""
    gate = tmp_path / "gate"
    executor = aplex.ProcessAsyncPoolExecutor(
        pool_size=1,
        on_worker_death="replace",
        initializer=works.die_once_in_initializer_after_file,
        initargs=(str(tmp_path / "died"), str(gate)),
    )
    try:
        futures = [executor.submit(works.add, index) for index in range(2)]
        executor.shutdown(wait=False)
        gate.touch()
        for future in futures:
            error = future.exception(TIMEOUT)
            assert isinstance(error, aplex.WorkerDiedError), repr(error)
            assert "exited with code 5" in str(error)
    finally:
        executor.shutdown(wait=True)
    statistics = executor.statistics()
    assert (statistics.failed, statistics.cancelled, statistics.replaced) == (2, 0, 0)


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_a_worker_that_dies_twice_starting_breaks_the_pool(worker_backend):
    """No respawn loop: dying twice in a row before the initializer
    returns breaks the executor."""
    executor = aplex.ProcessAsyncPoolExecutor(
        pool_size=1,
        worker_backend=worker_backend,
        on_worker_death="replace",
        initializer=works.exit_in_initializer,
    )
    try:
        future = executor.submit(works.add, 1)
        error = future.exception(TIMEOUT)
        assert isinstance(error, CancelledError)
        assert isinstance(error.__cause__, aplex.AplexWorkerError)
        assert "died twice in a row before its initializer returned" in str(error.__cause__)
        assert "exited with code 5" in str(error.__cause__)
        assert executor.statistics().replaced == 1
        with pytest.raises(aplex.AplexWorkerError, match="twice in a row"):
            executor.submit(works.add, 1)
    finally:
        executor.shutdown(wait=True)


def test_an_initializer_that_raises_still_breaks_the_pool():
    # Set only once the work is submitted: a pool already broken would
    # refuse it.
    gate = threading.Event()
    with aplex.ThreadAsyncPoolExecutor(
        pool_size=1,
        on_worker_death="replace",
        initializer=works.failing_initializer,
        initargs=(gate, "bad start"),
    ) as executor:
        future = executor.submit(works.add, 1)
        gate.set()
        error = future.exception(TIMEOUT)
        assert isinstance(error, CancelledError)
        assert isinstance(error.__cause__, aplex.AplexWorkerError)
        assert not isinstance(error.__cause__, aplex.WorkerDiedError)
        assert "bad start" in repr(error.__cause__.__cause__)


@pytest.mark.parametrize(
    "executor_class",
    [
        aplex.ThreadAsyncPoolExecutor,
        aplex.ProcessAsyncPoolExecutor,
        trio_front_end.ThreadAsyncPoolExecutor,
        trio_front_end.ProcessAsyncPoolExecutor,
    ],
)
def test_on_worker_death_is_checked_at_construction(executor_class):
    with pytest.raises(
        ValueError, match='on_worker_death must be "break" or "replace", got \'restart\''
    ):
        executor_class(pool_size=1, on_worker_death="restart")


def test_worker_died_error_pickles():
    import pickle

    error = aplex.WorkerDiedError("worker ProcessWorker-1 died: ...", "ProcessWorker-1", -9)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.worker, copy.exitcode) == (str(error), "ProcessWorker-1", -9)


# -- max_works_per_child: recycling ------------------------------------------


def _groups(values):
    """[a, a, b, b, b] -> [(a, 2), (b, 3)]."""
    groups: list[list] = []
    for value in values:
        if groups and groups[-1][0] == value:
            groups[-1][1] += 1
        else:
            groups.append([value, 1])
    return [tuple(group) for group in groups]


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("on_worker_death", ["break", "replace"])
def test_a_worker_is_recycled_after_its_works(worker_backend, on_worker_death):
    """Every 3 works a new process takes the index, its initializer run
    again; nothing fails and no death is counted, with either crash policy.
    Submitted all at once: works beyond a retiring worker's share wait for
    its replacement instead of going to it."""
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1,
        worker_backend=worker_backend,
        on_worker_death=on_worker_death,
        max_works_per_child=3,
        initializer=works.initialize,
        initargs=("ready",),
    ) as executor:
        futures = [executor.submit(works.pid_and_initialized) for _ in range(9)]
        results = [future.result(TIMEOUT) for future in futures]
        assert {initialized for _, initialized in results} == {("plain", "ready")}
        groups = _groups([pid for pid, _ in results])
        assert [count for _, count in groups] == [3, 3, 3]
        assert len({pid for pid, _ in groups}) == 3
        wait_until(lambda: executor.statistics().recycled == 3)
        statistics = executor.statistics()
        assert (statistics.replaced, statistics.failed, statistics.completed) == (0, 0, 9)
        # The fourth process serves on.
        assert executor.submit(works.pid).result(TIMEOUT) not in {pid for pid, _ in groups}


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_a_retiring_worker_finishes_its_running_works(tmp_path, worker_backend):
    """Its last works run to their end while the next one waits in the
    executor; statistics show them running on it until it exits."""
    release = tmp_path / "release"
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1, worker_backend=worker_backend, max_works_per_child=2
    ) as executor:
        running = [executor.submit(works.async_pid_until_file, str(release)) for _ in range(2)]
        later = executor.submit(works.pid)
        statistics = executor.statistics()
        assert (statistics.running, statistics.waiting) == (2, 1)
        assert not later.done()
        release.touch()
        old = {future.result(TIMEOUT) for future in running}
        assert len(old) == 1
        assert later.result(TIMEOUT) not in old
        assert executor.statistics().recycled == 1
        assert executor.statistics().failed == 0


def test_a_map_chunk_counts_as_one_work():
    with aplex.ProcessAsyncPoolExecutor(pool_size=1, max_works_per_child=1) as executor:
        results = list(executor.map(works.pid_and_initialized, range(6), chunksize=3))
    pids = [pid for pid, _ in results]
    assert [count for _, count in _groups(pids)] == [3, 3]


def test_a_balancer_that_picks_a_retiring_worker_makes_the_work_wait(tmp_path):
    """Sticky sends to worker 0 while it retires: the work is not failed as
    sent to a full worker, it waits (first in the line, as behind a full
    pool) and runs on worker 0's replacement."""
    release = tmp_path / "release"
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=2, load_balancer=Sticky, max_works_per_child=1
    ) as executor:
        last = executor.submit(works.async_pid_until_file, str(release), load_balancing_meta=0)
        waiting = executor.submit(works.pid, load_balancing_meta=0)
        behind = executor.submit(works.pid, load_balancing_meta=1)
        assert executor.statistics().waiting == 2
        release.touch()
        assert waiting.result(TIMEOUT) != last.result(TIMEOUT)
        behind.result(TIMEOUT)
        assert executor.statistics().failed == 0


def test_recycling_during_shutdown_leaves_nothing_behind(tmp_path):
    """shutdown(wait=True) waits for the works waiting behind a retiring
    worker, then for every process, the replacements too."""
    with aplex.ProcessAsyncPoolExecutor(pool_size=2, max_works_per_child=2) as executor:
        futures = [executor.submit(works.add, index, y=1) for index in range(11)]
        before = set(descendants())
    assert [future.result(0) for future in futures] == list(range(1, 12))
    assert executor.statistics().recycled >= 4
    left = set(descendants()) - before
    assert not [pid for pid in left if alive(pid)]


@pytest.mark.parametrize(
    "executor_class", [aplex.ProcessAsyncPoolExecutor, trio_front_end.ProcessAsyncPoolExecutor]
)
@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, "max_works_per_child must be at least 1, got 0"),
        (-3, ValueError, "max_works_per_child must be at least 1"),
        ("3", TypeError, "max_works_per_child must be an int, got '3'"),
        (True, TypeError, "max_works_per_child must be an int"),
        (2.0, TypeError, "max_works_per_child must be an int"),
    ],
)
def test_max_works_per_child_is_checked(executor_class, value, error, message):
    with pytest.raises(error, match=message):
        executor_class(pool_size=1, max_works_per_child=value)


@pytest.mark.parametrize(
    "executor_class", [aplex.ThreadAsyncPoolExecutor, trio_front_end.ThreadAsyncPoolExecutor]
)
def test_max_works_per_child_is_for_process_workers_only(executor_class):
    with pytest.raises(ValueError, match="max_works_per_child applies to process workers only"):
        executor_class(pool_size=1, max_works_per_child=5)


# -- terminate_workers() and kill_workers() -----------------------------------


def _wait_for_file(path):
    wait_until(path.exists, TIMEOUT)


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
@pytest.mark.parametrize("on_worker_death", ["break", "replace"])
def test_signalling_the_workers_ends_every_work_and_shuts_down(
    tmp_path, worker_backend, method, on_worker_death
):
    """As Python 3.14: the waiting works end cancelled, those on a worker
    (a blocking plain function, a coroutine) fail with AplexWorkerError,
    each future once; the executor is shut down, not broken, and no worker
    is replaced; every process ends."""
    started = tmp_path / "started"
    executor = aplex.ProcessAsyncPoolExecutor(
        pool_size=2,
        max_works_per_worker=1,
        load_balancer=Sticky,
        worker_backend=worker_backend,
        on_worker_death=on_worker_death,
    )
    try:
        pids = [executor.submit(works.pid, load_balancing_meta=i).result(TIMEOUT) for i in (0, 1)]
        plain = executor.submit(
            works.plain_until_file, str(started), str(tmp_path / "never"), load_balancing_meta=0
        )
        coroutine = executor.submit(
            works.async_wait_for_file, str(tmp_path / "never"), load_balancing_meta=1
        )
        waiting = executor.submit(works.pid, load_balancing_meta=0)
        futures = [plain, coroutine, waiting]
        endings = _count_endings(futures)
        _wait_for_file(started)
        getattr(executor, method)()
        assert waiting.cancelled()
        for future in (plain, coroutine):
            error = future.exception(0)  # ended at once
            assert type(error) is aplex.AplexWorkerError
            assert method.split("_")[0].rstrip("e") in str(error)  # "terminat", "kill"
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(works.pid)
        getattr(executor, method)()  # again: harmless
    finally:
        executor.shutdown(wait=True)
    assert endings == [1, 1, 1]
    statistics = executor.statistics()
    assert (statistics.cancelled, statistics.failed, statistics.replaced) == (1, 2, 0)
    assert not [pid for pid in pids if alive(pid)]


def test_kill_workers_after_terminate_workers_kills_what_ignored_sigterm(tmp_path):
    started = tmp_path / "started"
    executor = aplex.ProcessAsyncPoolExecutor(pool_size=1)
    try:
        future = executor.submit(
            works.ignore_sigterm_until_file, str(started), str(tmp_path / "never")
        )
        _wait_for_file(started)
        pid = int(started.read_text())
        executor.terminate_workers()
        assert isinstance(future.exception(0), aplex.AplexWorkerError)
        assert alive(pid)  # SIGTERM ignored: only SIGKILL ends it
        executor.kill_workers()
    finally:
        executor.shutdown(wait=True)  # would wait for ever on a worker still alive
    assert not alive(pid)


@pytest.mark.parametrize(
    "executor_class", [aplex.ProcessAsyncPoolExecutor, trio_front_end.ProcessAsyncPoolExecutor]
)
def test_signalling_the_workers_of_a_shut_down_executor_is_harmless(executor_class):
    with executor_class(pool_size=1) as executor:
        executor.submit(works.pid)
    executor.terminate_workers()
    executor.kill_workers()
    assert executor.statistics().failed == 0


@pytest.mark.parametrize(
    "executor_class", [aplex.ThreadAsyncPoolExecutor, trio_front_end.ThreadAsyncPoolExecutor]
)
def test_thread_executors_do_not_offer_signalling_their_workers(executor_class):
    assert not hasattr(executor_class, "terminate_workers")
    assert not hasattr(executor_class, "kill_workers")


# -- kill_on_cancel ------------------------------------------------------------


def _started_pid(path):
    _wait_for_file(path)
    return int(path.read_text())


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("on_worker_death", ["break", "replace"])
def test_cancelling_a_running_plain_function_kills_and_replaces_its_worker(
    tmp_path, worker_backend, on_worker_death
):
    """cancel() returns True and the future ends cancelled; the coroutine
    work beside it fails with WorkerDiedError; the work waiting in the
    executor, and the other worker's, go on; a new process takes the index."""
    started, never = tmp_path / "started", tmp_path / "never"
    release = tmp_path / "release"
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=2,
        max_works_per_worker=2,
        load_balancer=Sticky,
        worker_backend=worker_backend,
        on_worker_death=on_worker_death,
        kill_on_cancel=True,
    ) as executor:
        beside = executor.submit(works.async_wait_for_file, str(never), load_balancing_meta=0)
        runaway = executor.submit(
            works.block_writing_pid, str(started), str(never), load_balancing_meta=0
        )
        other = [
            executor.submit(works.async_wait_for_file, str(release), "other", load_balancing_meta=1)
            for _ in range(2)
        ]
        # Every worker is full: it waits in the executor.
        waiting = executor.submit(works.add, 1, y=2, load_balancing_meta=0)
        futures = [beside, runaway, waiting, *other]
        endings = _count_endings(futures)
        pid = _started_pid(started)
        assert executor.statistics().waiting == 1
        assert runaway.cancel() is True
        assert runaway.cancelled()
        error = beside.exception(TIMEOUT)
        assert isinstance(error, aplex.WorkerDiedError)
        assert "kill_on_cancel" in str(error) and error.exitcode == -signal.SIGKILL
        assert waiting.result(TIMEOUT) == 3
        assert not alive(pid)
        assert executor.submit(works.pid, load_balancing_meta=0).result(TIMEOUT) != pid
        release.touch()
        assert [future.result(TIMEOUT) for future in other] == ["other", "other"]
        assert runaway.cancel() is True  # cancelled already: still True
        statistics = executor.statistics()
    assert endings == [1, 1, 1, 1, 1]
    assert (statistics.cancelled, statistics.failed, statistics.replaced) == (1, 1, 1)


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_asyncio_cancellation_and_timeouts_kill_a_running_plain_function(tmp_path, worker_backend):
    """Cancelling the task awaiting run(), and asyncio.wait_for around it,
    kill the worker running the plain function; the pool serves on."""
    import asyncio

    async def main(executor):
        killed = []
        for round_, how in enumerate(["cancel", "wait_for", "timeout"]):
            started = tmp_path / f"started-{round_}"
            call = executor.run(works.block_writing_pid, str(started), str(tmp_path / "never"))
            if how == "cancel":
                task = asyncio.ensure_future(call)
                while not started.exists():  # noqa: ASYNC110 (the worker writes it)
                    await asyncio.sleep(0.005)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            elif how == "wait_for":
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(call, 0.5)
            else:
                if not hasattr(asyncio, "timeout"):  # Python 3.10
                    call.close()
                    continue
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await call
            killed.append(_started_pid(started))
        return killed

    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1, worker_backend=worker_backend, kill_on_cancel=True
    ) as executor:
        killed = asyncio.run(main(executor))
        wait_until(lambda: not any(alive(pid) for pid in killed), TIMEOUT)
        assert executor.submit(works.pid).result(TIMEOUT) not in killed
        assert executor.statistics().replaced == len(killed)


@pytest.mark.parametrize("worker_backend", ["asyncio", "trio"])
def test_trio_cancellation_kills_a_running_plain_function(tmp_path, worker_backend):
    import trio

    async def main(executor):
        killed = []
        started = tmp_path / "started-0"
        with trio.move_on_after(0.5) as scope:
            await executor.run(works.block_writing_pid, str(started), str(tmp_path / "never"))
        assert scope.cancelled_caught
        killed.append(_started_pid(started))
        started = tmp_path / "started-1"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                executor.run, works.block_writing_pid, str(started), str(tmp_path / "never")
            )
            while not started.exists():  # noqa: ASYNC110 (the worker writes it)
                await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
        killed.append(_started_pid(started))
        # A trio future's own cancel(), from trio code.
        started = tmp_path / "started-2"
        future = executor.submit(works.block_writing_pid, str(started), str(tmp_path / "never"))
        killed.append(_started_pid(started))
        assert future.cancel() is True
        assert future.cancelled()
        return killed

    with trio_front_end.ProcessAsyncPoolExecutor(
        pool_size=1, worker_backend=worker_backend, kill_on_cancel=True
    ) as executor:
        killed = trio.run(main, executor)
        wait_until(lambda: not any(alive(pid) for pid in killed), TIMEOUT)
        # Its pid gone, the last death may not be seen yet.
        wait_until(lambda: executor.statistics().replaced == 3, TIMEOUT)


def test_kill_on_cancel_leaves_coroutine_works_to_their_own_cancellation(tmp_path):
    with aplex.ProcessAsyncPoolExecutor(pool_size=1, kill_on_cancel=True) as executor:
        pid = executor.submit(works.pid).result(TIMEOUT)
        future = executor.submit(works.async_wait_for_file, str(tmp_path / "never"))
        assert future.cancel() is True
        assert executor.submit(works.pid).result(TIMEOUT) == pid
        assert executor.statistics().replaced == 0


@pytest.mark.parametrize(
    "executor_class", [aplex.ThreadAsyncPoolExecutor, trio_front_end.ThreadAsyncPoolExecutor]
)
def test_kill_on_cancel_is_for_process_workers_only(executor_class):
    with pytest.raises(ValueError, match="kill_on_cancel applies to process workers only"):
        executor_class(pool_size=1, kill_on_cancel=True)


def test_kill_on_cancel_is_a_bool():
    with pytest.raises(TypeError, match="kill_on_cancel must be True or False, got 1"):
        aplex.ProcessAsyncPoolExecutor(pool_size=1, kill_on_cancel=1)


def test_a_map_timeout_kills_the_workers_running_its_chunks(tmp_path):
    with aplex.ProcessAsyncPoolExecutor(pool_size=2, kill_on_cancel=True) as executor:
        started = [tmp_path / f"started-{index}" for index in range(2)]
        never = [str(tmp_path / "never")] * 2
        # concurrent.futures' own TimeoutError: on Python 3.10 it is not yet
        # the builtin one.
        with pytest.raises(FuturesTimeoutError):
            list(executor.map(works.block_writing_pid, map(str, started), never, timeout=1))
        killed = [_started_pid(path) for path in started]
        wait_until(lambda: executor.statistics().replaced == 2, TIMEOUT)
        assert not any(alive(pid) for pid in killed)
        assert executor.submit(works.pid).result(TIMEOUT) not in killed


def test_killing_a_retiring_worker_replaces_it_once(tmp_path):
    """A worker sent its last work, killed to cancel one: one replacement,
    counted as such (not recycled), and the new worker's count starts anew."""
    started = tmp_path / "started"
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1, max_works_per_child=2, kill_on_cancel=True
    ) as executor:
        runaway = executor.submit(works.block_writing_pid, str(started), str(tmp_path / "never"))
        beside = executor.submit(works.async_wait_for_file, str(tmp_path / "never"))
        waiting = executor.submit(works.pid)
        pid = _started_pid(started)
        assert runaway.cancel()
        assert isinstance(beside.exception(TIMEOUT), aplex.WorkerDiedError)
        first = waiting.result(TIMEOUT)
        assert first != pid
        assert executor.submit(works.pid).result(TIMEOUT) == first  # its second work
        wait_until(lambda: executor.statistics().recycled == 1, TIMEOUT)
        statistics = executor.statistics()
        assert (statistics.replaced, statistics.cancelled, statistics.failed) == (1, 1, 1)


def test_kills_before_the_initializer_returns_requeue_and_never_break(tmp_path):
    """Works sent to a worker still in its initializer have not started:
    killing it to cancel one puts the others back in line, and kills are no
    deaths starting, so two in a row do not break the pool."""
    gate = tmp_path / "gate"
    with aplex.ProcessAsyncPoolExecutor(
        pool_size=1,
        kill_on_cancel=True,
        initializer=works.wait_for_file_initializer,
        initargs=(str(gate),),
    ) as executor:
        survivors = []
        for round_ in range(2):
            # Sent to the worker, beside the survivors of earlier rounds.
            cancelled = executor.submit(works.add, round_)
            survivors.append(executor.submit(works.add, round_, y=10))
            assert executor.statistics().running == 2 + round_
            assert cancelled.cancel() is True
            wait_until(lambda r=round_: executor.statistics().replaced == r + 1, TIMEOUT)
        gate.touch()
        assert [future.result(TIMEOUT) for future in survivors] == [10, 11]
        statistics = executor.statistics()
    assert (statistics.replaced, statistics.failed, statistics.cancelled) == (2, 0, 2)
