"""Model-checked invariants of the load balancers, as the dispatcher uses them.

The machine drives a real :class:`aplex._dispatch.Dispatcher` over a fake
worker pool: the dispatcher needs no thread of its own (it only calls
``put`` on its pool and is told of results through the ``on_results``
callback it hands to ``start_workers``), so the machine plays the workers
itself, synchronously. That way the balancer is called exactly as in a real
executor (same FIFO, same workloads mapping, same availability checks), with
no timing involved, and every example is cheap.

Each balancer runs wrapped in a probe subclass that records, at every call,
the workloads it saw and the worker it returned. The invariants read that
log after every step rather than asserting inside the call: the dispatcher
turns an exception raised by a balancer into a failed work, which would hide
the assertion.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aplex import load_balancers
from aplex._dispatch import Dispatcher
from aplex._worker.messages import DONE, ResultItem, TasksStarted, WorkItem
from aplex.load_balancers import Average, LoadBalancer, Random, RoundRobin, Worker
from tests import works

# A deliberate run under the "long" profile takes minutes: no per-test
# timeout then (the ci profile stays under the default one).
if os.environ.get("APLEX_HYPOTHESIS_PROFILE") == "long":
    pytestmark = pytest.mark.timeout(0)

# What callers pass as load_balancing_meta: nothing, small keys, odd objects.
METAS = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=12),
    st.text(max_size=3),
    st.tuples(st.integers(0, 3), st.booleans()),
)


class StickyByKey(LoadBalancer):
    """A user-style balancer: the works of one key go to one worker while it
    has room, else to the least loaded one (lowest index among equals)."""

    def preferred(self, load_balancing_meta: Any) -> Worker | None:
        if load_balancing_meta is None:
            return None
        return self.workers[hash(load_balancing_meta) % len(self.workers)]

    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        preferred = self.preferred(load_balancing_meta)
        if preferred is not None and self.is_available(preferred):
            return preferred
        return min(self.get_available_workers(), key=lambda w: (self.workloads[w], w.index))


class IgnoresAvailability(LoadBalancer):
    """Deliberately broken: always the first worker, full or not."""

    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        return self.workers[0]


@dataclass
class Call:
    """One get_proper_worker call, as the probe saw it."""

    meta: Any
    loads: dict[Worker, int]  # the workloads at call time
    blocked: dict[Worker, bool]  # is_blocked() of each worker at call time
    returned: Any = None
    raised: BaseException | None = None


class FakePool:
    """The dispatcher's worker pool, played by the machine: it only records
    what the dispatcher sends."""

    def __init__(self, size: int):
        self.items: list[list[Any]] = [[] for _ in range(size)]
        # What the workers would write while a plain function holds their loop.
        self.blocked = memoryview(bytearray(size))

    def put(self, index: int, items: list[Any]) -> None:
        # Recorded as a process worker receives them: a copy of each work,
        # as the dispatcher lets go of a work's arguments once it has ended.
        self.items[index].extend(
            WorkItem(*item.__reduce__()[1]) if isinstance(item, WorkItem) else item
            for item in items
        )

    def abort(self) -> None:
        pass

    def join(self) -> None:
        pass


@dataclass
class Work:
    tag: int
    future: Any
    meta: Any
    worker: int | None = None  # None while waiting in the executor
    work_id: int | None = None
    done: bool = False
    plain: bool = True  # a plain function, which holds its worker's loop
    task: bool = False  # a plain function's call returned an awaitable


@dataclass
class Model:
    waiting: deque[int] = field(default_factory=deque)
    running: dict[int, Work] = field(default_factory=dict)  # by tag


class BalancerMachine(RuleBasedStateMachine):
    """The LoadBalancer contract, with the dispatcher as the only caller."""

    balancer_class: type[LoadBalancer] = RoundRobin
    # Whose documented choice to check on top of the common contract.
    contract: type[LoadBalancer] = RoundRobin

    def __init__(self) -> None:
        super().__init__()
        self.dispatcher: Dispatcher | None = None
        self.calls: list[Call] = []
        self.checked_calls = 0
        self.unmatched_calls: deque[Call] = deque()  # checked, not yet matched to a work
        self.balancer: LoadBalancer | None = None
        self.works: dict[int, Work] = {}
        self.model = Model()
        self.tags = itertools.count()
        self.placed_tags: list[int] = []
        # RoundRobin bookkeeping: who was chosen last, and the assignment
        # counts since every worker was last seen available at a call.
        self.rr_last: int | None = None
        self.rr_counts: dict[int, int] = {}

    # -- setup -------------------------------------------------------------

    @initialize(
        pool_size=st.integers(min_value=1, max_value=4),
        max_works_per_worker=st.one_of(st.none(), st.integers(min_value=1, max_value=3)),
    )
    def start(self, pool_size: int, max_works_per_worker: int | None) -> None:
        machine = self

        class Probe(self.balancer_class):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                machine.balancer = self

            def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
                blocked = {worker: self.is_blocked(worker) for worker in self.workers}
                call = Call(load_balancing_meta, dict(self.workloads), blocked)
                machine.calls.append(call)
                try:
                    call.returned = super().get_proper_worker(load_balancing_meta)
                except BaseException as exc:
                    call.raised = exc
                    raise
                return call.returned

        Probe.__name__ = self.balancer_class.__name__
        self.limit = max_works_per_worker
        self.pool = FakePool(pool_size)
        self.on_results = None

        def start_workers(*, on_results: Any, on_exit: Any) -> FakePool:
            self.on_results = on_results
            return self.pool

        self.dispatcher = Dispatcher(
            worker_names=[f"ThreadWorker-{index}" for index in range(pool_size)],
            load_balancer=Probe,
            max_works_per_worker=max_works_per_worker,
            start_workers=start_workers,
        )
        self.loads = [0] * pool_size

    def teardown(self) -> None:
        # No assertion here: teardown also runs after a failed step, and
        # must not replace that failure.
        if self.dispatcher is not None:
            self.dispatcher.shutdown(wait=False, cancel_futures=True)

    # -- the model -----------------------------------------------------------

    def has_room(self) -> bool:
        return self.limit is None or any(load < self.limit for load in self.loads)

    def submit_one(self, meta: Any, plain: bool = True) -> None:
        tag = next(self.tags)
        assert self.dispatcher is not None
        fn = works.identity if plain else works.async_add
        future = self.dispatcher.submit(fn, (tag,), {}, meta)
        work = self.works[tag] = Work(tag, future, meta, plain=plain)
        # The balancer's calls first: what it did explains what follows.
        self.check_new_calls()
        # FIFO: a new work goes to a worker only if none waits before it.
        if not self.model.waiting and self.has_room():
            self.expect_placed(work)
        else:
            self.model.waiting.append(tag)
            assert not future.done(), f"a waiting work ended: {future}"
        self.check_placements()

    def sent(self) -> dict[int, tuple[int, int]]:
        """What the fake pool received: tag -> (worker index, work id)."""
        seen: dict[int, tuple[int, int]] = {}
        for index, items in enumerate(self.pool.items):
            for item in items:
                if isinstance(item, WorkItem):
                    tag = item.args[0]
                    assert tag not in seen, f"work {tag} sent twice"
                    seen[tag] = (index, item.work_id)
        return seen

    def expect_placed(self, work: Work) -> None:
        """The dispatcher must have sent ``work`` to a worker by now: take
        the worker the balancer chose into the model."""
        sent = self.sent()
        assert work.tag in sent, f"work {work.tag} should have gone to a worker"
        work.worker, work.work_id = sent[work.tag]
        # Each work sent out is the answer to one balancer call, made with
        # that work's load_balancing_meta, the very object the caller passed.
        assert self.unmatched_calls, f"work {work.tag} went out without a balancer call"
        call = self.unmatched_calls.popleft()
        assert call.meta is work.meta, f"the balancer saw {call.meta!r}, not {work.meta!r}"
        assert call.returned.index == work.worker, "the work went to another worker"
        self.loads[work.worker] += 1
        self.model.running[work.tag] = work
        self.placed_tags.append(work.tag)

    def check_placements(self) -> None:
        # The pool received exactly the works the model placed, each once.
        sent = self.sent()
        placed = set(self.placed_tags)
        assert set(sent) == placed, (
            f"sent to workers: {sorted(sent)}, the model placed {sorted(placed)}"
        )

    def end_waiting_in_fifo_order(self) -> None:
        """A slot freed: the oldest waiting works go out, in order."""
        while self.model.waiting and self.has_room():
            self.expect_placed(self.works[self.model.waiting.popleft()])

    def finish(self, index: int, tags: list[int]) -> None:
        assert self.on_results is not None
        results = [ResultItem(self.works[tag].work_id, DONE, f"result {tag}") for tag in tags]
        self.on_results(index, results)
        self.check_new_calls()
        for tag in tags:
            work = self.model.running.pop(tag)
            work.done = True
            self.loads[index] -= 1
            assert work.future.result(timeout=0) == f"result {tag}"
        self.end_waiting_in_fifo_order()
        self.check_placements()

    # -- rules -------------------------------------------------------------

    @rule(meta=METAS, plain=st.booleans())
    def submit(self, meta: Any, plain: bool) -> None:
        self.submit_one(meta, plain)

    @precondition(lambda self: any(w.plain and not w.task for w in self.model.running.values()))
    @rule(data=st.data())
    def a_plain_work_becomes_a_task(self, data: st.DataObject) -> None:
        """A plain function returned an awaitable: its worker reports that it
        runs as a task, which holds the loop no more."""
        tags = sorted(t for t, w in self.model.running.items() if w.plain and not w.task)
        work = self.model.running[data.draw(st.sampled_from(tags), label="work")]
        assert self.on_results is not None and work.worker is not None
        self.on_results(work.worker, [TasksStarted([work.work_id])])
        work.task = True

    @rule(metas=st.lists(METAS, min_size=1, max_size=3))
    def fill_to_the_cap(self, metas: list[Any]) -> None:
        """Submit until every worker is full, then a few more that wait."""
        if self.limit is not None:
            room = sum(self.limit - load for load in self.loads)
            for number in range(room):
                self.submit_one(metas[number % len(metas)])
            assert all(load == self.limit for load in self.loads)
        for meta in metas:
            self.submit_one(meta)

    @precondition(lambda self: self.model.running)
    @rule(data=st.data())
    def finish_one(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(sorted(self.model.running)), label="work")
        work = self.model.running[tag]
        assert work.worker is not None
        self.finish(work.worker, [tag])

    @precondition(lambda self: self.model.running)
    @rule(data=st.data())
    def finish_a_worker_batch(self, data: st.DataObject) -> None:
        """A worker reports all its works in one batch, as it does when they
        end in the same turn of its loop."""
        busy = sorted({work.worker for work in self.model.running.values()})
        index = data.draw(st.sampled_from(busy), label="worker")
        self.finish(index, [t for t, w in self.model.running.items() if w.worker == index])

    @precondition(lambda self: self.dispatcher is not None)
    @rule(data=st.data())
    def block_or_unblock_a_worker(self, data: st.DataObject) -> None:
        """A worker's loop starts or ends a plain function: only what the
        balancer sees changes, nothing is sent or ended."""
        index = data.draw(st.integers(0, len(self.loads) - 1))
        self.pool.blocked[index] ^= 1

    @precondition(lambda self: self.model.waiting)
    @rule(data=st.data())
    def cancel_waiting(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(list(self.model.waiting)), label="work")
        assert self.works[tag].future.cancel() is True
        self.model.waiting.remove(tag)
        self.works[tag].done = True
        self.check_placements()

    @precondition(lambda self: self.dispatcher is not None)
    @rule()
    def drain(self) -> None:
        """Finish everything, worker by worker, until nothing waits; every
        work then ended with its own result."""
        while self.model.running:
            index = next(iter(self.model.running.values())).worker
            assert index is not None
            self.finish(index, [t for t, w in self.model.running.items() if w.worker == index])
        assert not self.model.waiting
        for work in self.works.values():
            assert work.future.done()
            assert work.future.cancelled() or work.future.result() == f"result {work.tag}"

    # -- invariants ----------------------------------------------------------

    @invariant()
    def balancer_contract(self) -> None:
        # One invariant, so that the order of the checks is fixed: the
        # balancer's own calls first, then what the dispatcher made of them.
        if self.dispatcher is None:
            return
        self.check_new_calls()
        assert not self.unmatched_calls, f"balancer calls with no work sent: {self.unmatched_calls}"
        self.check_workloads()
        self.check_read_only_views()
        for work in self.works.values():
            if work.future.done() and not work.future.cancelled():
                error = work.future.exception(timeout=0)
                assert error is None, f"work {work.tag} failed: {error!r}"

    def check_new_calls(self) -> None:
        new_calls = self.calls[self.checked_calls :]
        self.checked_calls = len(self.calls)
        for call in new_calls:
            self.check_call(call)
            self.unmatched_calls.append(call)

    def check_call(self, call: Call) -> None:
        workers = self.dispatcher.workers  # type: ignore[union-attr]
        limit = self.limit

        def available(worker: Worker) -> bool:
            return limit is None or call.loads[worker] < limit

        free = [worker for worker in workers if available(worker)]
        assert free, f"get_proper_worker was asked while every worker was full: {call.loads}"
        assert call.raised is None, f"get_proper_worker raised {call.raised!r}"
        returned = call.returned
        assert returned in workers, f"get_proper_worker returned {returned!r}, not of the pool"
        assert available(returned), (
            f"get_proper_worker returned {returned.name}, which was not available "
            f"(workloads {[call.loads[w] for w in workers]}, max_works_per_worker={limit})"
        )
        # The shipped balancers pass over a blocked worker when an available
        # one is not blocked.
        unblocked = [worker for worker in free if not call.blocked[worker]]
        candidates = unblocked or free
        kind = self.contract
        if kind in (Average, RoundRobin) and unblocked:
            assert not call.blocked[returned], (
                f"{kind.__name__} picked the blocked {returned.name} while "
                f"{[worker.name for worker in unblocked]} were available and not blocked"
            )
        if kind is Average:
            least = min(call.loads[worker] for worker in candidates)
            assert call.loads[returned] == least, (
                f"Average picked {returned.name} with {call.loads[returned]} works, "
                f"while an available worker had {least}"
            )
        if kind is RoundRobin:
            # The next candidate after the last one chosen, cyclically.
            start = 0 if self.rr_last is None else (self.rr_last + 1) % len(workers)
            expected = next(
                workers[(start + offset) % len(workers)]
                for offset in range(len(workers))
                if workers[(start + offset) % len(workers)] in candidates
            )
            assert returned == expected, f"RoundRobin picked {returned.name}, not {expected.name}"
            self.rr_last = returned.index
            if len(unblocked) < len(workers):
                self.rr_counts = {}
            else:
                self.rr_counts[returned.index] = self.rr_counts.get(returned.index, 0) + 1
                counts = [self.rr_counts.get(worker.index, 0) for worker in workers]
                assert max(counts) - min(counts) <= 1, (
                    f"RoundRobin, with every worker available, assigned {counts}"
                )
        if kind is StickyByKey:
            preferred = self.balancer.preferred(call.meta)  # type: ignore[union-attr]
            if preferred is not None and available(preferred):
                assert returned == preferred, f"{call.meta!r} left its worker {preferred.name}"

    def check_workloads(self) -> None:
        statistics = self.dispatcher.statistics()  # type: ignore[union-attr]
        loads = [worker.running for worker in statistics.workers]
        balancer_view = [self.balancer.workloads[w] for w in self.balancer.workers]  # type: ignore[union-attr]
        assert loads == self.loads == balancer_view, (
            f"statistics {loads}, balancer's view {balancer_view}, model {self.loads}"
        )
        blocked = [bool(flag) for flag in self.pool.blocked]
        assert [worker.blocked for worker in statistics.workers] == blocked
        # The balancer sees a worker blocked from the moment a plain work is
        # sent to it, not only while the worker runs it: else a burst of
        # plain works all goes to the worker whose first has not started.
        holding = [
            any(w.worker == index and w.plain and not w.task for w in self.model.running.values())
            for index in range(len(blocked))
        ]
        expected = [flag or held for flag, held in zip(blocked, holding, strict=True)]
        assert [self.balancer.is_blocked(w) for w in self.balancer.workers] == expected  # type: ignore[union-attr]
        for load in loads:
            assert load >= 0
            assert self.limit is None or load <= self.limit, f"workloads {loads} over the cap"
        assert statistics.waiting == len(self.model.waiting)
        # FIFO: works reach the workers in the order they were submitted.
        assert self.placed_tags == sorted(self.placed_tags)

    def check_read_only_views(self) -> None:
        balancer = self.balancer
        assert balancer is not None
        worker = balancer.workers[0]
        attempts = [
            lambda: balancer.workloads.__setitem__(worker, 99),
            lambda: balancer.workloads.__delitem__(worker),
            lambda: balancer.workloads.clear(),  # type: ignore[attr-defined]
            lambda: balancer.workers.__setitem__(0, worker),  # type: ignore[attr-defined]
            lambda: setattr(balancer, "workers", ()),
            lambda: setattr(balancer, "workloads", {}),
            lambda: setattr(balancer, "max_works_per_worker", 10**6),
            lambda: setattr(worker, "index", 7),
        ]
        for attempt in attempts:
            with pytest.raises((TypeError, AttributeError)):
                attempt()
        assert balancer.max_works_per_worker == self.limit
        assert balancer.workers == self.dispatcher.workers  # type: ignore[union-attr]


def machine_for(
    balancer: type[LoadBalancer], contract: type[LoadBalancer] | None = None
) -> type[BalancerMachine]:
    attributes = {"balancer_class": balancer, "contract": contract or balancer}
    return type(f"{balancer.__name__}Machine", (BalancerMachine,), attributes)


# The balancer machines are cheap (no thread: about 10 ms an example), so
# they get four times the profile's examples.
_balancer_settings = settings(
    parent=settings.default, max_examples=settings.default.max_examples * 4
)
MACHINES = {
    balancer: machine_for(balancer) for balancer in (RoundRobin, Random, Average, StickyByKey)
}

TestRoundRobin = MACHINES[RoundRobin].TestCase
TestRandom = MACHINES[Random].TestCase
TestAverage = MACHINES[Average].TestCase
TestStickyByKey = MACHINES[StickyByKey].TestCase
for _case in (TestRoundRobin, TestRandom, TestAverage, TestStickyByKey):
    _case.settings = _balancer_settings
del _case  # not a test of its own


def test_every_shipped_balancer_has_a_machine():
    """Guards against a balancer added to aplex.load_balancers without its
    invariants being model-checked here."""
    shipped = {
        balancer
        for name in load_balancers.__all__
        if isinstance(balancer := getattr(load_balancers, name), type)
        and issubclass(balancer, LoadBalancer)
        and not inspect.isabstract(balancer)
    }
    assert shipped, "found no balancer to check"
    assert shipped <= set(MACHINES), f"no machine for {shipped - set(MACHINES)}"


_HUNT = settings(
    max_examples=200,
    stateful_step_count=20,
    database=None,
    # The first failure is enough: shrinking would only cost time.
    phases=[Phase.generate],
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def test_machine_catches_a_balancer_that_ignores_availability():
    """Guards against a machine too weak to see a balancer that returns a
    full worker: the dispatcher rejects such a work, and the availability
    invariant must be the one that fails."""
    with pytest.raises(AssertionError, match="which was not available"):
        run_state_machine_as_test(machine_for(IgnoresAvailability), settings=_HUNT)


class RotationBlindToBlocking(LoadBalancer):
    """RoundRobin as it was before workers reported a blocked loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next = 0

    def get_proper_worker(self, load_balancing_meta: Any | None) -> Worker:
        count = len(self.workers)
        for offset in range(count):
            worker = self.workers[(self._next + offset) % count]
            if self.is_available(worker):
                self._next = (worker.index + 1) % count
                return worker
        raise AssertionError("unreachable: a worker is available")


def test_machine_catches_a_round_robin_that_ignores_blocked_workers():
    """Guards against a machine too weak to see a balancer that sends works
    to a worker whose loop a plain function holds, while another is free."""
    with pytest.raises(AssertionError, match="picked the blocked"):
        run_state_machine_as_test(
            machine_for(RotationBlindToBlocking, contract=RoundRobin), settings=_HUNT
        )
