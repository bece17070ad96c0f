"""Load balancers: the shipped strategies on their own, and balancers that
misbehave inside a real thread executor.

The unit tests drive a balancer the way the executor does: a list of
``Worker`` handles, a workloads mapping the test updates, and a cap.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import MappingProxyType

import pytest

from aplex import ThreadAsyncPoolExecutor
from aplex.load_balancers import Average, LoadBalancer, Random, RoundRobin, Worker
from tests import works
from tests.support import worker_index

T = 10  # seconds to wait for what should take milliseconds


def make(balancer_class, loads, cap=2):
    """A balancer over ``len(loads)`` workers with the given workloads, and
    its workers."""
    workers = [Worker(index, f"Worker-{index}") for index in range(len(loads))]
    workloads = dict(zip(workers, loads, strict=True))
    return balancer_class(workers, workloads, cap), workers


def live(balancer_class, loads, cap=2):
    """Like make(), but the balancer sees later changes to the returned
    workloads, as it does in an executor."""
    workers = [Worker(index, f"Worker-{index}") for index in range(len(loads))]
    workloads = dict(zip(workers, loads, strict=True))
    return balancer_class(workers, MappingProxyType(workloads), cap), workers, workloads


# -- the base class -----------------------------------------------------------


def test_the_base_class_is_abstract_until_get_proper_worker_is_implemented():
    workers = [Worker(0, "w")]
    with pytest.raises(TypeError):
        LoadBalancer(workers, {workers[0]: 0}, 1)

    class Incomplete(LoadBalancer):
        pass

    with pytest.raises(TypeError):
        Incomplete(workers, {workers[0]: 0}, 1)


def test_the_base_class_reports_available_workers_against_the_cap():
    balancer, workers = make(RoundRobin, [2, 0, 1, 2], cap=2)
    assert list(balancer.get_available_workers()) == [workers[1], workers[2]]
    assert [balancer.is_available(worker) for worker in workers] == [False, True, True, False]
    assert balancer.workers == tuple(workers)
    assert balancer.max_works_per_worker == 2
    uncapped, workers = make(RoundRobin, [500, 0], cap=None)
    assert list(uncapped.get_available_workers()) == workers


def test_workers_and_workloads_are_read_only_for_the_balancer():
    balancer, workers = make(RoundRobin, [0, 1])
    with pytest.raises(TypeError):
        balancer.workloads[workers[0]] = 5
    with pytest.raises(AttributeError):
        balancer.workers = ()
    with pytest.raises(AttributeError):
        balancer.workers.append(Worker(9, "intruder"))
    assert balancer.workloads == {workers[0]: 0, workers[1]: 1}


@pytest.mark.parametrize("balancer_class", [RoundRobin, Average, Random])
def test_a_balancer_built_on_a_plain_dict_sees_the_changes_made_to_it(balancer_class):
    """The 1.x way to unit-test a balancer: build it on a dict, change the
    dict, ask again. The balancer keeps a live view, not a copy."""
    workers = [Worker(0, "Worker-0"), Worker(1, "Worker-1")]
    workloads = {workers[0]: 2, workers[1]: 0}
    balancer = balancer_class(workers, workloads, 2)
    assert balancer.get_proper_worker(None) is workers[1]
    workloads[workers[0]], workloads[workers[1]] = 0, 2
    assert balancer.workloads == workloads
    assert list(balancer.get_available_workers()) == [workers[0]]
    assert balancer.get_proper_worker(None) is workers[0]
    with pytest.raises(TypeError):
        balancer.workloads[workers[0]] = 1  # a view, read-only


def test_a_worker_is_a_small_hashable_handle_with_a_stable_index_and_name():
    worker = Worker(3, "ThreadWorker-3")
    assert (worker.index, worker.name) == (3, "ThreadWorker-3")
    assert {worker: "x"}[Worker(3, "ThreadWorker-3")] == "x"


def test_a_users_balancer_with_its_own_init_keeps_the_base_properties():
    class Remembering(RoundRobin):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.history = []

        def get_proper_worker(self, load_balancing_meta):
            self.history.append(load_balancing_meta)
            return super().get_proper_worker(load_balancing_meta)

    balancer, workers = make(Remembering, [0, 0])
    assert balancer.get_proper_worker("a") == workers[0]
    assert balancer.history == ["a"]
    assert balancer.workers == tuple(workers)


# -- RoundRobin ---------------------------------------------------------------


def test_round_robin_cycles_through_the_workers_in_index_order():
    balancer, workers = make(RoundRobin, [0, 0, 0])
    chosen = [balancer.get_proper_worker(None).index for _ in range(7)]
    assert chosen == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_skips_full_workers_and_goes_on_after_the_one_chosen():
    balancer, workers, workloads = live(RoundRobin, [0, 2, 0, 0], cap=2)
    assert balancer.get_proper_worker(None) == workers[0]
    # Worker 1 is full: the next after 0 that is available is 2.
    assert balancer.get_proper_worker(None) == workers[2]
    workloads[workers[3]] = 2
    # 3 is full now too: wraps around to 0.
    assert balancer.get_proper_worker(None) == workers[0]
    workloads[workers[1]] = 1
    assert balancer.get_proper_worker(None) == workers[1]


def test_round_robin_returns_the_only_available_worker():
    balancer, workers = make(RoundRobin, [2, 2, 1, 2], cap=2)
    assert [balancer.get_proper_worker(None) for _ in range(3)] == [workers[2]] * 3


# -- Random -------------------------------------------------------------------


def test_random_picks_only_available_workers_and_each_of_them():
    balancer, workers = make(Random, [0, 2, 1, 0], cap=2)
    picks = Counter(balancer.get_proper_worker(None) for _ in range(400))
    # Never the full worker 1; every available one in 400 draws (missing one
    # by chance has probability 3 * (2/3) ** 400).
    assert set(picks) == {workers[0], workers[2], workers[3]}


def test_random_returns_the_only_available_worker():
    balancer, workers = make(Random, [3, 3, 0], cap=3)
    assert {balancer.get_proper_worker(None) for _ in range(50)} == {workers[2]}


# -- Average ------------------------------------------------------------------


def test_average_picks_the_worker_with_the_smallest_workload():
    balancer, workers = make(Average, [4, 1, 3, 2], cap=10)
    assert balancer.get_proper_worker(None) == workers[1]


def test_average_picks_only_available_workers_and_keeps_workloads_even():
    balancer, workers, workloads = live(Average, [0, 0, 0], cap=2)
    for _ in range(6):
        chosen = balancer.get_proper_worker(None)
        # What the executor does after each choice.
        assert workloads[chosen] == min(workloads.values())
        workloads[chosen] += 1
        assert max(workloads.values()) - min(workloads.values()) <= 1
    assert list(workloads.values()) == [2, 2, 2]
    workloads[workers[1]] = 0
    assert balancer.get_proper_worker(None) == workers[1]


def test_average_in_an_executor_spreads_running_works_evenly():
    gauge, release = works.Gauge(), threading.Event()
    with ThreadAsyncPoolExecutor(pool_size=2, load_balancer=Average) as executor:
        futures = [executor.submit(works.async_gauged, gauge, i, release) for i in range(4)]
        gauge.wait_running(4)
        assert [worker.running for worker in executor.statistics().workers] == [2, 2]
        assert sorted(gauge.running.values()) == [2, 2]
        release.set()
        assert [future.result(T) for future in futures] == list(range(4))
        # Idle again: every work goes to the lowest-index least-loaded worker.
        names = [executor.submit(works.thread_name).result(T) for _ in range(3)]
    assert [worker_index(name) for name in names] == [0, 0, 0]


def test_random_in_an_executor_never_picks_a_full_worker():
    release, started = threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(
        pool_size=2, max_works_per_worker=1, load_balancer=Random
    ) as executor:
        blocker = executor.submit(works.mark_then_wait, started, release)
        assert started.wait(T)
        (busy,) = [w.index for w in executor.statistics().workers if w.running == 1]
        names = [executor.submit(works.thread_name).result(T) for _ in range(20)]
        release.set()
        assert blocker.result(T) == "released"
    assert {worker_index(name) for name in names} == {busy ^ 1}


# -- faulty balancers inside an executor --------------------------------------


class Raising(RoundRobin):
    """Fails on the meta "explode"; a good balancer otherwise."""

    def get_proper_worker(self, load_balancing_meta):
        if load_balancing_meta == "explode":
            raise KeyError("no route for explode")
        return super().get_proper_worker(load_balancing_meta)


class Unknown(RoundRobin):
    """Returns what is not a worker of the pool for some metas."""

    def get_proper_worker(self, load_balancing_meta):
        if load_balancing_meta == "stranger":
            return Worker(99, "StrangerWorker-99")
        if load_balancing_meta == "not a worker":
            return "ThreadWorker-0"
        return super().get_proper_worker(load_balancing_meta)


class AlwaysFirst(LoadBalancer):
    """Ignores availability: always worker 0, unless the meta names one."""

    def get_proper_worker(self, load_balancing_meta):
        return self.workers[load_balancing_meta or 0]


def test_a_balancer_that_raises_fails_that_work_only():
    with ThreadAsyncPoolExecutor(pool_size=2, load_balancer=Raising) as executor:
        failed = executor.submit(works.add, 1, load_balancing_meta="explode")
        with pytest.raises(RuntimeError, match="Raising") as info:
            failed.result(T)
        assert isinstance(info.value.__cause__, KeyError)
        assert executor.submit(works.add, 1, 2).result(T) == 3
        assert list(executor.map(works.add, range(3))) == [0, 1, 2]
        assert executor.statistics().failed == 1


@pytest.mark.parametrize("meta", ["stranger", "not a worker"])
def test_a_balancer_that_returns_an_unknown_worker_fails_that_work_only(meta):
    with ThreadAsyncPoolExecutor(pool_size=2, load_balancer=Unknown) as executor:
        with pytest.raises(RuntimeError, match="not a worker of this pool"):
            executor.submit(works.add, 1, load_balancing_meta=meta).result(T)
        assert executor.submit(works.async_add, 1, 2).result(T) == 3


def test_a_balancer_that_returns_a_full_worker_fails_that_work_only():
    release, started = threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(
        pool_size=2, max_works_per_worker=1, load_balancer=AlwaysFirst
    ) as executor:
        blocker = executor.submit(works.mark_then_wait, started, release)
        assert started.wait(T)
        # Worker 1 is free, so the balancer is asked, and returns the full 0.
        with pytest.raises(RuntimeError, match="full"):
            executor.submit(works.add, 1).result(T)
        assert executor.submit(works.add, 1, 2, load_balancing_meta=1).result(T) == 3
        release.set()
        assert blocker.result(T) == "released"
        assert executor.submit(works.add, 2, 2).result(T) == 4


def test_a_balancer_that_raises_for_a_waiting_work_fails_it_when_its_turn_comes():
    """Guards against a balancer fault on the dispatch of a queued work (on
    the thread that delivers results) breaking the worker or the queue."""
    release, started = threading.Event(), threading.Event()
    with ThreadAsyncPoolExecutor(
        pool_size=1, max_works_per_worker=1, load_balancer=Raising
    ) as executor:
        blocker = executor.submit(works.mark_then_wait, started, release)
        assert started.wait(T)
        doomed = executor.submit(works.add, 1, load_balancing_meta="explode")
        after = executor.submit(works.add, 2, 3)
        assert not doomed.done()
        release.set()
        with pytest.raises(RuntimeError, match="Raising"):
            doomed.result(T)
        assert blocker.result(T) == "released"
        assert after.result(T) == 5
        assert executor.submit(works.add, 3, 3).result(T) == 6
