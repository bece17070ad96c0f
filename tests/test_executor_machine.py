"""Model-checked invariants of a real ThreadAsyncPoolExecutor.

The machine drives a thread executor (2 workers, ``max_works_per_worker=2``,
a RoundRobin balancer, dead workers replaced) through the public API only, with works
whose start, end and outcome it controls (``works.controlled`` and
``works.async_controlled``, each given a :class:`Control`). A model follows
every work: waiting in the executor, running on a predicted worker, or ended
with a predicted outcome; after each step the machine waits, boundedly,
until the executor shows the state the model predicts, then checks it.

**Why the works poll.** A coroutine work checks its threading.Event every
millisecond with ``anyio.sleep`` rather than awaiting an event set through
its loop's thread-safe call: that needs no handle on the worker's loop,
works the same on asyncio and trio workers, and costs nothing measurable at
this size. A plain work blocks on its threading.Event, on its worker's loop
thread, as plain works do in aplex.

**What the model leaves out, and why.** A plain work that blocks holds its
worker's whole loop: whatever reaches that worker afterwards waits in its
channel, and in what order it then starts depends on turns of the worker's
loop, not on the contract. So the rules never send a work to a worker held
by a blocking plain work, and never release or cancel a coroutine work held
there; everything else (waiting works, cancellation while waiting or
running, a raising work, both kinds of shutdown) is modelled exactly.

**Worker death.** The executor replaces dead workers
(``on_worker_death="replace"``): a rule lets SystemExit escape a running
coroutine work, and the model fails every work on that worker with
WorkerDiedError, counts the replacement, and places the waiting works as
RoundRobin does, the new worker (same index, same thread name) among the
others. Each future still ends exactly once, and nothing runs twice.
Recycling and kill_on_cancel are for process workers only, and tested in
tests/test_worker_death.py.

**Interrupts.** A real Ctrl-C lands at a moment no model can predict (the
Ctrl-C storms of tests/test_interrupts.py cover it); what can be modelled
is a KeyboardInterrupt raised synchronously inside aplex's critical
sections: by the load balancer (called under the dispatcher's lock) while a
new work is placed, and by a done callback while ``cancel()`` settles its
future. Either way the caller gets the KeyboardInterrupt once the section is
whole, and every future still ends as predicted.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import aplex
import aplex.load_balancers
from tests import works

# A deliberate run under the "long" profile takes minutes: no per-test
# timeout then (the ci profile stays under the default one).
if os.environ.get("APLEX_HYPOTHESIS_PROFILE") == "long":
    pytestmark = pytest.mark.timeout(0)

POOL_SIZE = 2
MAX_WORKS = 2
# How long a step may take to show the predicted state: generous, the
# machine shares 2 cores with other test runs.
SETTLE_TIMEOUT = 10.0


class Recorder:
    """What the works did, as seen from inside them (on the worker threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: Counter[int] = Counter()
        self.running: Counter[str] = Counter()  # by worker thread name
        self.most_running: Counter[str] = Counter()


class Control:
    """How the machine drives one work (see works.controlled)."""

    def __init__(self, tag: int, recorder: Recorder):
        self.tag = tag
        self.recorder = recorder
        self.released = threading.Event()
        self.started = threading.Event()
        self.exited = threading.Event()
        self.raises = False
        self.dies = False  # the work lets SystemExit escape: its worker dies
        self.thread: str | None = None

    def begin(self) -> None:
        recorder = self.recorder
        with recorder.lock:
            self.thread = name = threading.current_thread().name
            recorder.starts[self.tag] += 1
            recorder.running[name] += 1
            recorder.most_running[name] = max(recorder.most_running[name], recorder.running[name])
        self.started.set()

    def end(self) -> None:
        with self.recorder.lock:
            assert self.thread is not None
            self.recorder.running[self.thread] -= 1
        self.exited.set()

    def outcome(self) -> str:
        if self.dies:
            raise SystemExit(f"work {self.tag} ended its worker")
        if self.raises:
            raise ValueError(f"work {self.tag} raised")
        return f"result {self.tag}"

    def __repr__(self) -> str:
        return f"Control({self.tag})"


@dataclass
class Job:
    """The model of one work."""

    tag: int
    coroutine: bool
    control: Control
    future: Any
    state: str = "waiting"  # "waiting", "running", "ended"
    worker: int | None = None
    outcome: str | None = None  # "result", "error", "cancelled", "died" once ended
    cancelled_waiting: bool = False
    done_calls: int = 0


class ExecutorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.executor: Any = None
        self.recorder = Recorder()
        self.tags = itertools.count()
        self.jobs: dict[int, Job] = {}
        self.waiting: deque[int] = deque()
        self.loads = [0] * POOL_SIZE
        self.rr_next = 0  # RoundRobin's next position, as the model sees it
        self.completed = self.failed = self.cancelled = 0
        self.replaced = 0
        self.shut = False
        self.callback_lock = threading.Lock()

    @initialize(worker_backend=st.sampled_from(["asyncio", "trio"]))
    def start(self, worker_backend: str) -> None:
        before = set(threading.enumerate())
        machine = self

        class Interrupting(aplex.load_balancers.RoundRobin):
            """RoundRobin, but raises KeyboardInterrupt once when armed."""

            def get_proper_worker(self, meta: Any) -> Any:
                if machine.armed:
                    machine.armed = False
                    raise KeyboardInterrupt
                return super().get_proper_worker(meta)

        self.armed = False
        self.executor = aplex.ThreadAsyncPoolExecutor(
            pool_size=POOL_SIZE,
            max_works_per_worker=MAX_WORKS,
            worker_backend=worker_backend,
            load_balancer=Interrupting,
            on_worker_death="replace",
        )
        self.threads = [
            t for t in threading.enumerate() if t not in before and t.name.startswith("aplex-")
        ]
        assert len(self.threads) == POOL_SIZE

    def teardown(self) -> None:
        # No assertion here: teardown also runs after a failed step and must
        # not replace its error. Release everything so nothing hangs.
        if self.executor is None:
            return
        for job in self.jobs.values():
            job.control.released.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        shutdown_within(self.executor, SETTLE_TIMEOUT)

    # -- the model -----------------------------------------------------------

    def running_on(self, worker: int) -> list[Job]:
        return [j for j in self.jobs.values() if j.state == "running" and j.worker == worker]

    def held(self, worker: int, leaving: Job | None = None) -> bool:
        """Is ``worker``'s loop held by a blocking plain work (other than
        ``leaving``, which the step ends)?"""
        return any(
            not job.coroutine and not job.control.released.is_set() and job is not leaving
            for job in self.running_on(worker)
        )

    def pick_worker(self, loads: list[int], position: int) -> tuple[int | None, int]:
        """RoundRobin: the next worker with room from ``position``."""
        for offset in range(POOL_SIZE):
            index = (position + offset) % POOL_SIZE
            if loads[index] < MAX_WORKS:
                return index, (index + 1) % POOL_SIZE
        return None, position

    def next_placement(self, freeing: Job | None = None) -> int | None:
        """The worker the next work sent out would go to: a new work now, or
        with ``freeing`` given, the oldest waiting one once ``freeing`` has
        ended. None if no work would go out."""
        if freeing is None:
            if self.waiting:
                return None  # a new work waits behind the waiting ones
            loads = self.loads
        else:
            if not self.waiting:
                return None
            assert freeing.worker is not None
            loads = list(self.loads)
            loads[freeing.worker] -= 1
        return self.pick_worker(loads, self.rr_next)[0]

    def placement_is_modelled(self, freeing: Job | None = None) -> bool:
        target = self.next_placement(freeing)
        return target is None or not self.held(target, leaving=freeing)

    def place(self, job: Job) -> None:
        index, self.rr_next = self.pick_worker(self.loads, self.rr_next)
        assert index is not None
        self.loads[index] += 1
        job.state, job.worker = "running", index

    def free_slot_of(self, job: Job) -> None:
        assert job.worker is not None
        self.loads[job.worker] -= 1
        while self.waiting and min(self.loads) < MAX_WORKS:
            self.place(self.jobs[self.waiting.popleft()])

    def end(self, job: Job, outcome: str) -> None:
        job.state, job.outcome = "ended", outcome
        if outcome == "result":
            self.completed += 1
        elif outcome in ("error", "died"):
            self.failed += 1
        else:
            self.cancelled += 1

    # -- waiting for the executor to catch up ----------------------------------

    def unsettled(self) -> list[str]:
        problems = []
        for job in self.jobs.values():
            if job.state == "running" and not job.control.started.is_set():
                problems.append(f"work {job.tag} has not started on worker {job.worker}")
            if job.state == "ended" and not job.future.done():
                problems.append(f"work {job.tag} should have ended ({job.outcome})")
        statistics = self.executor.statistics()
        seen = (
            [worker.running for worker in statistics.workers],
            statistics.waiting,
            (statistics.completed, statistics.failed, statistics.cancelled),
            statistics.replaced,
        )
        expected = (
            self.loads,
            len(self.waiting),
            (self.completed, self.failed, self.cancelled),
            self.replaced,
        )
        if seen != expected:
            problems.append(
                f"statistics (running, waiting, (completed, failed, cancelled), replaced) "
                f"are {seen}, the model says {expected}"
            )
        return problems

    def settle(self) -> None:
        """Wait, boundedly, until the executor shows the model's state."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while problems := self.unsettled():
            if time.monotonic() > deadline:
                raise AssertionError("; ".join(problems))
            time.sleep(0.001)

    # -- rules -------------------------------------------------------------

    def submit(self, coroutine: bool) -> None:
        tag = next(self.tags)
        control = Control(tag, self.recorder)
        work = works.async_controlled if coroutine else works.controlled
        future = self.executor.submit(work, control)
        job = self.jobs[tag] = Job(tag, coroutine, control, future)

        def count_done(_: Any) -> None:
            with self.callback_lock:
                job.done_calls += 1

        future.add_done_callback(count_done)
        if self.waiting or min(self.loads) >= MAX_WORKS:
            self.waiting.append(tag)
        else:
            self.place(job)
        self.settle()

    @precondition(lambda self: not self.shut and self.placement_is_modelled())
    @rule()
    def submit_coroutine_work(self) -> None:
        self.submit(coroutine=True)

    @precondition(lambda self: not self.shut and self.placement_is_modelled())
    @rule()
    def submit_plain_work(self) -> None:
        self.submit(coroutine=False)

    @precondition(lambda self: not self.shut and self.next_placement() is not None)
    @rule(coroutine=st.booleans())
    def submit_while_the_balancer_interrupts(self, coroutine: bool) -> None:
        """The balancer raises KeyboardInterrupt while placing a new work:
        submit() raises it, the work (whose future the caller never got)
        fails, and nothing else changes: RoundRobin did not move on."""
        tag = next(self.tags)
        control = Control(tag, self.recorder)
        self.armed = True
        with pytest.raises(KeyboardInterrupt):
            self.executor.submit(works.async_controlled if coroutine else works.controlled, control)
        assert not self.armed, "the balancer was not asked"
        self.failed += 1
        self.settle()
        assert not control.started.is_set()

    def cancellable_at_once(self) -> list[Job]:
        return [
            job
            for job in self.cancellable()
            if job.state == "waiting" or (job.state == "running" and job.coroutine)
        ]

    @precondition(lambda self: self.cancellable_at_once())
    @rule(data=st.data())
    def cancel_with_an_interrupting_callback(self, data: st.DataObject) -> None:
        """A done callback raises KeyboardInterrupt as cancel() settles the
        future on this thread: cancel() raises it once its bookkeeping is
        done, and the callbacks after it still run."""
        job = data.draw(st.sampled_from(self.cancellable_at_once()), label="work")
        after: list[bool] = []

        def interrupt(_: Any) -> None:
            raise KeyboardInterrupt

        job.future.add_done_callback(interrupt)
        job.future.add_done_callback(lambda _: after.append(True))
        with pytest.raises(KeyboardInterrupt):
            job.future.cancel()
        assert after == [True], "a callback after the interrupting one did not run"
        assert job.future.cancelled()
        if job.state == "waiting":
            self.waiting.remove(job.tag)
            job.cancelled_waiting = True
            self.end(job, "cancelled")
        else:
            self.end(job, "cancelled")
            self.free_slot_of(job)
        self.settle()

    @precondition(lambda self: not self.shut and self.placement_is_modelled())
    @rule(extra=st.lists(st.booleans(), min_size=1, max_size=2))
    def fill_to_the_cap(self, extra: list[bool]) -> None:
        """Fill every free slot with coroutine works, then submit ``extra``
        works (True: coroutine) that wait in the executor."""
        while min(self.loads) < MAX_WORKS and self.placement_is_modelled():
            self.submit(coroutine=True)
        if min(self.loads) < MAX_WORKS:
            return  # the rest would go to a worker held by a plain work
        for coroutine in extra:
            self.submit(coroutine)
        assert self.executor.statistics().waiting == len(self.waiting) >= len(extra)

    def releasable(self) -> list[Job]:
        return [
            job
            for job in self.jobs.values()
            if job.state == "running"
            and not job.control.released.is_set()
            and (not job.coroutine or not self.held(job.worker))  # type: ignore[arg-type]
            and self.placement_is_modelled(freeing=job)
        ]

    @precondition(lambda self: not self.shut and self.releasable())
    @rule(data=st.data(), raises=st.booleans())
    def release(self, data: st.DataObject, raises: bool) -> None:
        """Let a running work return, or raise ValueError."""
        job = data.draw(st.sampled_from(self.releasable()), label="work")
        job.control.raises = raises
        job.control.released.set()
        self.end(job, "error" if raises else "result")
        self.free_slot_of(job)
        self.settle()

    def placements_after_death_are_modelled(self, dead: int) -> bool:
        """Whether the waiting works that worker ``dead``'s death lets go
        out would each go to a worker not held by a plain work, and start
        there in an order the model knows.

        A death frees several slots at once, and the waiting works fill
        them in one burst: the works for one worker then reach it in one
        batch, which it takes in one go, so a blocking plain work in the
        batch holds the loop before the coroutine works of the same batch,
        even those before it, have taken their first step (an earlier
        draft of this rule, blind to it, found such a work "not started").
        Such bursts are left out, as a plain work's holding is elsewhere."""
        loads = list(self.loads)
        loads[dead] = 0
        held = {index for index in range(POOL_SIZE) if index != dead and self.held(index)}
        burst: dict[int, list[Job]] = {}
        position = self.rr_next
        for tag in self.waiting:
            index, position = self.pick_worker(loads, position)
            if index is None:
                break
            if index in held:
                return False
            burst.setdefault(index, []).append(self.jobs[tag])
            loads[index] += 1
        return not any(
            len(jobs) > 1
            and any(not job.coroutine and not job.control.released.is_set() for job in jobs)
            for jobs in burst.values()
        )

    def can_die(self) -> list[Job]:
        return [
            job
            for job in self.jobs.values()
            if job.state == "running"
            and job.coroutine
            and not job.control.released.is_set()
            and not self.held(job.worker)  # type: ignore[arg-type]
            and self.placements_after_death_are_modelled(job.worker)  # type: ignore[arg-type]
        ]

    @precondition(lambda self: not self.shut and self.can_die())
    @rule(data=st.data())
    def kill_a_worker(self, data: st.DataObject) -> None:
        """A running coroutine work lets SystemExit escape: its worker dies.
        Every work on that worker fails with WorkerDiedError, each future
        once; a new worker takes its index, and the waiting works go out
        as RoundRobin places them, the new worker among the others.

        The step waits for the death to be seen (statistics().replaced)
        before the next one: until the parent has seen it, a work it sends
        to that worker goes to the dying one and fails with it, which no
        model of the steps could tell from a work lost by the replacement."""
        job = data.draw(st.sampled_from(self.can_die()), label="work")
        dead = job.worker
        assert dead is not None
        job.control.dies = True
        job.control.released.set()
        for other in self.running_on(dead):
            self.end(other, "died")
        self.replaced += 1
        self.loads[dead] = 0
        while self.waiting and min(self.loads) < MAX_WORKS:
            self.place(self.jobs[self.waiting.popleft()])
        self.settle()

    def cancellable(self) -> list[Job]:
        return [
            job
            for job in self.jobs.values()
            if not (
                job.state == "running"
                and job.coroutine
                and (self.held(job.worker) or not self.placement_is_modelled(freeing=job))  # type: ignore[arg-type]
            )
        ]

    @precondition(lambda self: self.cancellable())
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """Cancel a work, whatever its state: waiting, running or ended."""
        job = data.draw(st.sampled_from(self.cancellable()), label="work")
        was_cancelled = job.outcome == "cancelled"
        returned = job.future.cancel()
        if job.state == "waiting":
            assert returned is True, "cancel() of a waiting work returned False"
            assert job.future.cancelled()
            self.waiting.remove(job.tag)
            job.cancelled_waiting = True
            self.end(job, "cancelled")
        elif job.state == "running" and job.coroutine:
            assert returned is True, "cancel() of a running coroutine work returned False"
            # Cancelled at once; its slot is freed when its worker answers.
            assert job.future.cancelled()
            self.end(job, "cancelled")
            self.free_slot_of(job)
        elif job.state == "running":
            assert returned is False, "cancel() of a running plain work returned True"
            assert job.future.running() and not job.future.done()
        else:
            assert returned is was_cancelled, f"cancel() of an ended work returned {returned}"
        self.settle()

    # Not before a few works are in: an early shutdown would end most
    # examples before anything interesting happened.
    @precondition(lambda self: not self.shut and len(self.jobs) >= 6)
    @rule(cancel_futures=st.booleans(), release_first=st.booleans())
    def shutdown(self, cancel_futures: bool, release_first: bool) -> None:
        """Shut down, letting the works end or cancelling them; then check
        that every future ended as the model says and no thread is left.

        With ``release_first`` (and no cancel_futures) every work is released
        and ``shutdown(wait=True)`` does it all in one call; otherwise the
        machine calls ``shutdown(wait=False)`` first, checks what must
        happen at once, then releases the works and waits."""
        self.shut = True
        if release_first and not cancel_futures:
            self.release_all()
            assert shutdown_within(self.executor, SETTLE_TIMEOUT), "shutdown(wait=True) hung"
        else:
            self.executor.shutdown(wait=False, cancel_futures=cancel_futures)
            if cancel_futures:
                # Both are decided by shutdown itself, before it returns.
                for tag in self.waiting:
                    job = self.jobs[tag]
                    job.cancelled_waiting = True
                    self.end(job, "cancelled")
                    assert job.future.cancelled(), f"waiting work {tag} was not cancelled"
                self.waiting.clear()
                for job in self.jobs.values():
                    if job.state == "running" and job.coroutine:
                        self.end(job, "cancelled")
                        assert job.future.cancelled(), f"running work {job.tag} not cancelled"
            with pytest.raises(RuntimeError):
                self.executor.submit(works.identity, 1)
            self.release_all()
            assert shutdown_within(self.executor, SETTLE_TIMEOUT), "shutdown(wait=True) hung"
        # Every future has ended, as predicted, and nothing runs any more.
        self.loads = [0] * POOL_SIZE
        self.settle()
        for job in self.jobs.values():
            assert job.future.done(), f"work {job.tag} still pending after shutdown"
        statistics = self.executor.statistics()
        assert statistics.running == 0 and statistics.waiting == 0
        leftover = [t for t in self.threads if t.is_alive()]
        assert not leftover, f"threads left after shutdown(wait=True): {leftover}"
        # Calling it again is harmless.
        self.executor.shutdown()

    def release_all(self) -> None:
        """Release every work; the model ends each one not yet ended (the
        waiting ones run to their end)."""
        for job in self.jobs.values():
            job.control.released.set()
            if job.state == "waiting":
                job.state = "running"  # on some worker, once others end
            if job.state == "running":
                self.end(job, "result")
        self.waiting.clear()

    @precondition(lambda self: self.shut)
    @rule()
    def submit_after_shutdown(self) -> None:
        with pytest.raises(RuntimeError):
            self.executor.submit(works.async_controlled, Control(-1, self.recorder))

    @precondition(lambda self: self.shut)
    @rule(wait=st.booleans(), cancel_futures=st.booleans())
    def shutdown_again(self, wait: bool, cancel_futures: bool) -> None:
        """Harmless: no future changes (the invariants check it)."""
        self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)
        self.settle()

    # -- invariants ----------------------------------------------------------

    @invariant()
    def works_ran_as_modelled(self) -> None:
        if self.executor is None:
            return
        recorder = self.recorder
        with recorder.lock:
            starts = dict(recorder.starts)
            most_running = dict(recorder.most_running)
        twice = [tag for tag, count in starts.items() if count > 1]
        assert not twice, f"works ran more than once: {twice}"
        for name, most in most_running.items():
            assert most <= MAX_WORKS, f"{most} works ran at once on {name}"
        for job in self.jobs.values():
            if job.cancelled_waiting or job.state == "waiting":
                assert job.tag not in starts, f"waiting or cancelled work {job.tag} started"
            if job.state == "running" or (job.outcome in ("result", "error")):
                # It runs, or ran, on the worker RoundRobin was to pick.
                thread = job.control.thread
                if thread is not None and job.worker is not None:
                    assert thread.endswith(f"-ThreadWorker-{job.worker}"), (
                        f"work {job.tag} ran on {thread}, not on worker {job.worker}"
                    )

    @invariant()
    def futures_ended_once_as_modelled(self) -> None:
        if self.executor is None:
            return
        for job in self.jobs.values():
            future = job.future
            with self.callback_lock:
                done_calls = job.done_calls
            if job.state != "ended":
                assert not future.done(), f"work {job.tag} ended early: {future}"
                assert done_calls == 0
                continue
            assert done_calls == 1, f"work {job.tag}'s future ended {done_calls} times"
            if job.outcome == "cancelled":
                assert future.cancelled(), f"work {job.tag} should be cancelled: {future}"
            elif job.outcome == "error":
                error = future.exception(timeout=0)
                assert type(error) is ValueError and str(error) == f"work {job.tag} raised"
            elif job.outcome == "died":
                error = future.exception(timeout=0)
                assert type(error) is aplex.WorkerDiedError, repr(error)
                assert error.worker == f"ThreadWorker-{job.worker}"
            else:
                assert future.result(timeout=0) == f"result {job.tag}"


def shutdown_within(executor: Any, timeout: float) -> bool:
    """Call ``executor.shutdown(wait=True)`` on a helper thread; return
    whether it returned within ``timeout`` (so that a hang fails the step
    instead of the whole test session)."""
    waiter = threading.Thread(target=executor.shutdown, name="machine-shutdown", daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()


TestExecutorMachine = ExecutorMachine.TestCase
# An example costs about 20 ms (a pool started and stopped, works that
# start and end in milliseconds): four times the profile's examples, and
# longer runs, so that most of them get to shut down with works in flight.
TestExecutorMachine.settings = settings(
    parent=settings.default,
    max_examples=settings.default.max_examples * 4,
    stateful_step_count=settings.default.stateful_step_count + 20,
)
