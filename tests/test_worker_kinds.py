"""The contract every worker kind keeps, below the executor.

A worker kind (threads, processes, Ray actors) starts workers, takes items for them and
reports what they answer through two callbacks; the dispatcher relies on
nothing else. These tests drive each kind directly, with each worker
backend, the way the dispatcher does, and check what comes back: so a new
kind (or a change to one) is held to the same contract before any executor
runs on it.
"""

from __future__ import annotations

import threading

import pytest

from aplex._processes import ProcessKind
from aplex._threads import ThreadKind
from aplex._worker.messages import (
    ABORT,
    CANCELLED,
    DONE,
    FAILED,
    RESTART,
    STOP,
    CancelItem,
    Ready,
    WorkerFailure,
    WorkItem,
)
from aplex.backends import get_backend

from . import works
from .support import T, wait_until


def _ray_kind():
    from aplex._ray import RayKind

    return RayKind(address=None, ray_actor_options=None)


KINDS = {"thread": ThreadKind, "process": lambda: ProcessKind("forkserver"), "ray": _ray_kind}


class Reports:
    """What the workers report, as the dispatcher would receive it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.results: dict[int, tuple[int, object]] = {}
        self.failures: list[WorkerFailure] = []
        self.exits: dict[int, BaseException | None] = {}
        self.order: list[str] = []

    def on_results(self, index: int, results: list[object]) -> None:
        with self._changed:
            for result in results:
                if type(result) is WorkerFailure:
                    self.failures.append(result)
                    self.order.append("failure")
                    continue
                if type(result) is Ready:
                    self.order.append("ready")
                    continue
                work_id, status, value = result  # type: ignore[misc]
                assert work_id not in self.results, f"work {work_id} answered twice"
                self.results[work_id] = (status, value)
                self.order.append(f"result {work_id}")
            self._changed.notify_all()

    def on_exit(self, index: int, error: BaseException | None) -> None:
        with self._changed:
            self.exits[index] = error
            self.order.append("exit")
            self._changed.notify_all()

    def wait_for(self, predicate, what: str):
        with self._changed:
            if not self._changed.wait_for(predicate, T):
                raise AssertionError(f"timed out waiting for {what}; got {self.order}")

    def result(self, work_id: int) -> tuple[int, object]:
        self.wait_for(lambda: work_id in self.results, f"work {work_id}")
        return self.results[work_id]

    def wait_exit(self) -> BaseException | None:
        self.wait_for(lambda: 0 in self.exits, "the worker's exit")
        return self.exits[0]


@pytest.fixture(
    params=[
        "thread-asyncio",
        "thread-trio",
        "process-asyncio",
        "process-trio",
        # Ray's kind needs Ray and the session's instance: with the tests marked ray.
        pytest.param("ray-asyncio", marks=pytest.mark.ray),
        pytest.param("ray-trio", marks=pytest.mark.ray),
    ]
)
def start(request):
    """Start one worker of the kind and backend in the test's id."""
    kind_name, backend_name = request.param.split("-")
    if kind_name == "ray":
        request.getfixturevalue("ray_instance")
    started = []

    def start(initializer=None, initargs=()):
        reports = Reports()
        pool = KINDS[kind_name]().start(
            [f"contract-{request.param}"],
            backend=get_backend(backend_name),
            loop_factory=None,
            initializer=initializer,
            initargs=initargs,
            on_results=reports.on_results,
            on_exit=reports.on_exit,
        )
        started.append((pool, reports))
        return pool, reports

    yield start
    for pool, reports in started:
        if 0 not in reports.exits:
            pool.abort()
        pool.join()


def test_plain_and_coroutine_works_answer_with_their_value_or_exception(start):
    pool, reports = start()
    pool.put(
        0,
        [
            WorkItem(1, works.add, (1, 2), {}),
            WorkItem(2, works.async_add, (2,), {"y": 3}),
            WorkItem(3, works.raise_work_error, ("plain",), {}),
            WorkItem(4, works.async_raise_work_error, ("coroutine",), {}),
        ],
    )
    assert reports.result(1) == (DONE, 3)
    assert reports.result(2) == (DONE, 5)
    for work_id, message in ((3, "plain"), (4, "coroutine")):
        status, error = reports.result(work_id)
        assert status == FAILED
        assert isinstance(error, works.WorkError) and error.args == (message,)
    pool.put(0, [STOP])
    assert reports.wait_exit() is None


def test_a_chunk_answers_once_with_every_value(start):
    pool, reports = start()
    pool.put(0, [WorkItem(1, works.async_add, [(1,), (2,), (3,)], {"y": 10}, chunk=True)])
    assert reports.result(1) == (DONE, [11, 12, 13])
    pool.put(0, [STOP])
    assert reports.wait_exit() is None


def test_coroutine_works_run_at_once_and_one_is_cancelled_alone(start, tmp_path):
    pool, reports = start()
    written, cleaned = tmp_path / "written", tmp_path / "cleaned"
    # Work 1 can only end once work 2, on the same worker, has started.
    pool.put(
        0,
        [
            WorkItem(1, works.async_wait_for_file, (str(written), "saw it"), {}),
            WorkItem(2, works.async_mark_files_until_cancelled, (str(written), str(cleaned)), {}),
        ],
    )
    assert reports.result(1) == (DONE, "saw it")
    pool.put(0, [CancelItem(2)])
    assert reports.result(2) == (CANCELLED, None)
    assert cleaned.read_text() == "cleaned up"
    pool.put(0, [CancelItem(2)])  # a late cancel of an ended work is ignored
    pool.put(0, [WorkItem(3, works.identity, ("still serving",), {}), STOP])
    assert reports.result(3) == (DONE, "still serving")
    assert reports.wait_exit() is None


def test_stop_lets_running_works_end_before_the_worker_exits(start, tmp_path):
    pool, reports = start()
    release = tmp_path / "release"
    pool.put(0, [WorkItem(1, works.async_wait_for_file, (str(release), "ended"), {}), STOP])
    release.write_text("")
    assert reports.wait_exit() is None
    assert reports.order == ["ready", "result 1", "exit"]
    assert reports.results[1] == (DONE, "ended")


def test_abort_cancels_running_coroutine_works_and_exits(start, tmp_path):
    pool, reports = start()
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    pool.put(
        0, [WorkItem(1, works.async_mark_files_until_cancelled, (str(started), str(cleaned)), {})]
    )
    wait_until(started.exists)
    pool.put(0, [ABORT])
    assert reports.wait_exit() is None
    assert reports.results[1] == (CANCELLED, None)
    assert cleaned.read_text() == "cleaned up"


def test_the_initializer_runs_before_the_first_work(start):
    pool, reports = start(initializer=works.async_initialize, initargs=("ready",))
    pool.put(0, [WorkItem(1, works.initialized_value, (), {}), STOP])
    assert reports.result(1) == (DONE, ("coroutine", "ready"))
    assert reports.wait_exit() is None


def test_a_failing_initializer_is_reported_and_the_worker_exits(start):
    pool, reports = start(initializer=works.raise_work_error, initargs=("no setup",))
    pool.put(0, [WorkItem(1, works.identity, (1,), {})])
    reports.wait_exit()
    assert [failure.where for failure in reports.failures] == ["initializer"]
    error = reports.failures[0].error
    assert isinstance(error, works.WorkError) and error.args == ("no setup",)
    assert 1 not in reports.results  # no work runs on a worker that could not start
    assert "ready" not in reports.order


def test_restart_starts_a_new_worker_at_the_same_index(start, request):
    """RESTART (from the dispatcher, after a death): items before it went
    to the dead worker and are dropped; a new worker starts, runs the
    initializer, reports ready, and takes the items after it. Ray's kind
    refuses it: its executors offer no option that replaces a worker."""
    pool, reports = start(initializer=works.async_initialize, initargs=("again",))
    pool.put(0, [STOP])
    assert reports.wait_exit() is None
    del reports.exits[0]
    if request.node.callspec.params["start"].startswith("ray"):
        with pytest.raises(NotImplementedError, match="not replaced"):
            pool.put(0, [WorkItem(1, works.identity, (1,), {}), RESTART])
        return
    pool.put(
        0,
        [
            WorkItem(1, works.identity, (1,), {}),
            RESTART,
            WorkItem(2, works.initialized_value, (), {}),
            STOP,
        ],
    )
    assert reports.result(2) == (DONE, ("coroutine", "again"))
    assert reports.wait_exit() is None
    assert 1 not in reports.results
    assert reports.order == ["ready", "exit", "ready", "result 2", "exit"]


def test_a_base_exception_escaping_a_work_is_reported_and_the_worker_exits(start):
    pool, reports = start()
    pool.put(0, [WorkItem(1, works.async_raise_system_exit, (), {})])
    reports.wait_exit()
    assert [failure.where for failure in reports.failures] == ["work"]
    assert isinstance(reports.failures[0].error, SystemExit)
    assert reports.order[-1] == "exit"


def test_items_for_a_worker_that_has_exited_are_dropped(start):
    """put() never blocks nor raises once the worker is gone: the
    dispatcher learns of the exit from on_exit, not from put()."""
    pool, reports = start()
    pool.put(0, [STOP])
    reports.wait_exit()
    pool.put(0, [WorkItem(1, works.identity, (1,), {})])
    pool.join()
    assert reports.results == {}
