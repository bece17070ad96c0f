"""The parent-side coordinator: works in, results out.

The :class:`Dispatcher` owns everything the parent knows of the pool: the
workloads the load balancer reads, the FIFO of works waiting for a free
worker, the works running on each worker, and the counts behind
:meth:`Dispatcher.statistics`. Callers (``submit``, ``cancel``, ``shutdown``)
and the workers' result deliveries meet here, under one lock.

No user code runs under that lock, except the load balancer's (documented
as called under it): completing a future runs its callbacks, sending a work
to a process pickles its arguments (their ``__reduce__``), dropping the last
reference to a work may run its arguments' ``__del__``, and any of these may
call back into the executor. Each locked section gathers what it decided
(futures to settle, items to send, works to let go of), and the caller acts
on it once the lock is released; the decision, not the acting, fixes the
order. Items are sent by one thread at a time, in the order they were
decided: the works sent to one worker keep their order, and a cancel
request never overtakes its work.

**Cancellation.** A running work can be cancelled when it runs as a task in
its worker: when its call returned an awaitable. The parent knows that of a
coroutine function (or a partial of one, or an object whose ``__call__`` is
one) from the start; of any other work (a lambda or a wrapper returning a
coroutine), once its worker has reported starting it as a task
(:class:`~aplex._worker.messages.TasksStarted`, sent with the worker's next
batch of results). Until then, ``cancel()`` answers False and the work runs
to its end: the answer is given at once and never contradicted.
"""

from __future__ import annotations

import inspect
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import CancelledError, InvalidStateError
from dataclasses import dataclass
from functools import partial
from types import CodeType, MappingProxyType
from typing import Any, Protocol

from ._exceptions import AplexWorkerError, ProcessExit, WorkerDiedError, describe
from ._interrupts import deferred, keep
from ._lifecycle import STOP_GRACE, track
from ._worker.messages import (
    CANCELLED,
    DONE,
    FAILED,
    KILL,
    RELOAD,
    RESTART,
    STOP,
    CancelItem,
    LoadFailure,
    Ready,
    TasksStarted,
    WorkerFailure,
    WorkItem,
    is_coroutine_function,
)
from .backends import Backend
from .futures import ConcurrentFuture
from .load_balancers import LoadBalancer, Worker

# _Work.state values: waiting in the executor, sent to a worker, known to
# run there as a task (so cancellable), ended.
_WAITING, _RUNNING, _TASK, _ENDED = range(4)
# A settle status of our own, beside the ResultItem ones: the pool broke.
_BROKEN = -1


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker, as :meth:`statistics` saw it."""

    index: int
    name: str
    running: int
    #: Whether its loop was running a plain function (see
    #: :meth:`~aplex.load_balancers.LoadBalancer.is_blocked`).
    blocked: bool = False


@dataclass(frozen=True)
class PoolStatistics:
    """The pool as it was when :meth:`statistics` was called.

    Attributes:
        workers: Each worker with the number of works it runs.
        waiting: Works waiting in the executor for a free worker.
        completed: Works that returned, so far.
        failed: Works that raised, or that could not be sent or balanced.
        cancelled: Works cancelled, including those a broken pool ended.
        replaced: Workers that died and were replaced (with
            ``on_worker_death="replace"``, or killed by ``kill_on_cancel``).
        recycled: Workers that took their ``max_works_per_child`` works,
            exited once these had ended, and were replaced: not deaths, and
            not counted in ``replaced``.
    """

    workers: tuple[WorkerStatistics, ...]
    waiting: int
    completed: int
    failed: int
    cancelled: int
    replaced: int = 0
    recycled: int = 0

    @property
    def running(self) -> int:
        """Works running on all the workers together."""
        return sum(worker.running for worker in self.workers)


class WorkerPool(Protocol):
    """The parent's side of a pool of workers of one kind (threads, processes)."""

    #: One byte per worker, 1 while its loop runs a plain function; the
    #: workers write it, the balancer reads it.
    blocked: memoryview

    def put(self, index: int, items: list[Any]) -> None:
        """Send items to worker ``index``; never blocks."""

    def abort(self) -> None:
        """Stop every worker now, cancelling what it runs."""

    def stop_now(self, busy: Collection[int]) -> None:
        """Stop every worker at once, dropping the items not yet sent to it
        and any put after; the workers in ``busy`` run plain functions and
        cannot answer: kill them (processes) or leave them behind (threads)."""

    def kill_remaining(self) -> None:
        """Kill the workers still running (processes), or leave them behind
        (threads, which cannot be killed)."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker has exited, but those left behind; return
        False if ``timeout`` passed first."""

    def runs_current_thread(self) -> bool:
        """Whether the caller runs on one of the pool's own threads."""

    def signal_all(self, *, kill: bool) -> None:
        """Terminate (SIGTERM) or kill (SIGKILL) every worker process now,
        and start none from now on. Process workers only."""


class _NoWorkers:
    """The pool of a Dispatcher whose workers are still starting, or of a
    forked child's copy of one: there the workers are the parent's, never to
    be sent to, stopped or waited for."""

    def __init__(self, size: int):
        self.blocked = memoryview(bytearray(size))

    def put(self, index: int, items: list[Any]) -> None:
        pass

    def abort(self) -> None:
        pass

    def stop_now(self, busy: Collection[int]) -> None:
        pass

    def kill_remaining(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> bool:
        return True

    def runs_current_thread(self) -> bool:
        return False

    def signal_all(self, *, kill: bool) -> None:
        pass


OnResults = Callable[[int, list[Any]], None]
OnExit = Callable[[int, BaseException | None], None]


class WorkerKind(Protocol):
    """A kind of worker (threads, processes): what an executor is composed of."""

    #: What the worker handles are called: "ThreadWorker-0", ...
    name: str
    #: Whether the workers run in this process (so a work may be handed
    #: objects that cannot be pickled, such as the caller's context).
    in_process: bool

    def start(
        self,
        names: list[str],
        *,
        backend: Backend,
        loop_factory: Callable[[], Any] | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        on_results: OnResults,
        on_exit: OnExit,
    ) -> WorkerPool:
        """Start one worker per name; they report through the two callbacks."""


class StartWorkers(Protocol):
    """Start the workers (a :meth:`WorkerKind.start` with all but these given)."""

    def __call__(self, *, on_results: OnResults, on_exit: OnExit) -> WorkerPool: ...


class _Work(WorkItem):
    """A work as the parent tracks it; sent to a worker as the WorkItem it is."""

    __slots__ = ("future", "meta", "state", "worker", "cancelled", "plain", "_dispatcher")

    def __init__(
        self,
        dispatcher: Dispatcher,
        work_id: int,
        fn: Callable[..., Any],
        args: Any,
        kwargs: dict[str, Any],
        chunk: bool,
        meta: Any,
    ):
        super().__init__(work_id, fn, args, kwargs, chunk)
        self._dispatcher = dispatcher
        # The future's cancel interface is the work itself (see __call__).
        self.future: ConcurrentFuture[Any] | None = ConcurrentFuture(self)  # until end()
        self.meta = meta
        self.state = _WAITING
        self.worker: Worker | None = None
        self.cancelled = False
        # Whether it holds its worker's loop until it returns (see
        # _BlockedView): known here, before the lock, by the check the
        # worker makes of it (see TasksStarted).
        try:
            self.plain = not is_coroutine_function(fn)
        except Exception:  # a __getattr__ of the callable's own that raised
            self.plain = True

    def __call__(self, future: ConcurrentFuture[Any]) -> bool:
        """Cancel this work: what its future's ``cancel()`` calls."""
        return self._dispatcher._cancel(self, future)

    def end(self) -> ConcurrentFuture[Any]:
        """Mark the work ended (under the lock); return its future, to be
        settled.

        The work lets go of its future here, and of what it was to run once
        the lock is released (:meth:`release`): the future still refers to
        the work (it is its cancel interface), and a future kept by a caller
        must not keep the work's callable and arguments alive, nor a pool of
        many tiny works spend its time in the garbage collector walking
        them.
        """
        self.state = _ENDED
        future, self.future = self.future, None
        assert future is not None, "a work ends once"
        self._dispatcher._to_release.append(self)
        return future

    def release(self) -> None:
        """Let go of the callable, arguments and meta of an ended work.
        Outside the lock: dropping them may run their ``__del__``, which may
        call back into the executor."""
        self.fn = self.args = self.kwargs = self.meta = None  # type: ignore[assignment]


# What a locked section leaves to do once the lock is released: futures to
# settle, works to let go of, and items to send (when this thread is to
# send them).
_Effects = tuple[
    list[tuple[ConcurrentFuture[Any], int, Any]], list[_Work], "dict[int, list[Any]] | None"
]


class Dispatcher:
    """Routes works to workers and results to futures; see the module doc."""

    def __init__(
        self,
        *,
        worker_names: list[str],
        load_balancer: type[LoadBalancer],
        max_works_per_worker: int | None,
        start_workers: StartWorkers,
        on_worker_death: str = "break",
        max_works_per_child: int | None = None,
        kill_on_cancel: bool = False,
    ):
        self._lock = threading.Lock()
        # With kill_on_cancel: the workers killed to cancel a plain function
        # they run, until their death is seen. Each is replaced, whatever
        # on_worker_death says, and takes no work meanwhile.
        self._kill_on_cancel = kill_on_cancel
        self._killing: set[int] = set()
        # With on_worker_death="replace": whether each worker has reported
        # its initializer done, how many times in a row it died before
        # that, and what it reported just before dying.
        self._replace = on_worker_death == "replace"
        self._ready = [False] * len(worker_names)
        self._deaths_starting = [0] * len(worker_names)
        self._last_words: dict[int, BaseException] = {}
        self._replaced = 0
        self._ids = itertools.count()
        self._waiting: deque[_Work] = deque()
        self._waiting_cancelled = 0  # cancelled works still in _waiting, skipped when reached
        self._running: dict[int, _Work] = {}
        self._to_settle: list[tuple[ConcurrentFuture[Any], int, Any]] = []
        self._to_release: list[_Work] = []
        # Items decided under the lock, by worker index, not yet sent; and
        # whether a thread is sending them (only one at a time does).
        self._outbox: dict[int, list[Any]] = {}
        self._sending = False
        self._completed = self._failed = self._cancelled = 0
        self._shutdown = False
        self._stop_sent = False
        self._owner_pid = os.getpid()  # a forked child's copy belongs to this process
        self._forgotten = False
        self._broken: AplexWorkerError | None = None
        # With max_works_per_child: the works sent to each index's current
        # worker, and the works still running on each worker being
        # recycled. A worker sent its last work is held at the limit, full
        # to the balancer and to _has_free_worker() until its replacement
        # starts: it never takes more than it may. A worker never runs more
        # at once than it is ever sent, so the child's cap bounds the limit.
        self._per_child = max_works_per_child
        self._sent = [0] * len(worker_names)
        self._retiring: dict[int, int] = {}
        self._recycled = 0
        if max_works_per_child is not None and (
            max_works_per_worker is None or max_works_per_child < max_works_per_worker
        ):
            max_works_per_worker = max_works_per_child
        self._limit = max_works_per_worker
        self._full_workers = 0  # how many are at the limit: kept, not counted per work
        self.workers = tuple(Worker(index, name) for index, name in enumerate(worker_names))
        self._workloads = dict.fromkeys(self.workers, 0)
        self._blocked = _BlockedView(self.workers)
        self._balancer = load_balancer(
            list(self.workers),
            MappingProxyType(self._workloads),
            max_works_per_worker,
            blocked=self._blocked,
        )
        self._stopped_now = False
        # A worker that fails at once may report before start_workers()
        # returns: the pool it would stop is then a placeholder, and the
        # real one is stopped below. Not under the lock: a constructor that
        # fails waits for what it started, which may be reporting.
        self._pool: WorkerPool = _NoWorkers(len(self.workers))
        try:
            pool = start_workers(on_results=self._on_results, on_exit=self._on_exit)
        except BaseException:
            self._stopped_now = True  # what its workers still report is nobody's news
            raise
        with self._lock:
            self._pool = pool
            self._blocked.flags = pool.blocked
            if self._broken is not None:
                pool.abort()
        try:
            track(self)
        except BaseException:  # Ctrl-C, just now: what was started must not outlive it
            self.stop_now()
            raise

    # -- callers ---------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        args: Any,
        kwargs: dict[str, Any],
        meta: Any,
        *,
        chunk: bool = False,
    ) -> ConcurrentFuture[Any]:
        """Send a work to a worker, or queue it; return its future."""
        work = _Work(self, next(self._ids), fn, args, kwargs, chunk, meta)
        future = work.future
        assert future is not None
        with deferred:
            with self._lock:
                self._check_open()
                if self._waiting or not self._place(work):
                    self._waiting.append(work)
                effects = self._leave()
            self._after(effects)
        return future

    def _cancel(self, work: _Work, future: ConcurrentFuture[Any]) -> bool:
        if work.state == _ENDED:
            return future.cancelled()
        # Outside the lock: inspecting a callable may run its own code.
        is_coroutine = is_coroutine_work(work.fn)
        with deferred:
            with self._lock:
                if work.cancelled:
                    return True
                if work.state == _ENDED:
                    return future.cancelled()
                if work.state == _WAITING:
                    work.end()
                    self._waiting_cancelled += 1
                    self._dispatch_waiting()
                elif work.state == _TASK or is_coroutine:
                    # The work's slot stays taken until its worker answers.
                    assert work.worker is not None
                    self._send_later(work.worker.index, CancelItem(work.work_id))
                elif self._kill_on_cancel:
                    # A plain function cannot be interrupted: its process
                    # is killed. Its result, should it come first, is dropped.
                    assert work.worker is not None
                    index = work.worker.index
                    if index not in self._killing:
                        self._killing.add(index)
                        self._send_later(index, KILL)
                else:
                    return False
                work.cancelled = True
                self._cancelled += 1
                effects = self._leave()
            self._after(effects)
            return future.set_cancelled()

    def shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        """Take no new works; stop the workers once the works taken have ended.

        Ctrl-C cannot stop it half-way through cancelling (see
        :mod:`aplex._interrupts`); Ctrl-C while it waits for the workers
        stops the pool at once (see :meth:`stop_now`).

        Raises:
            RuntimeError: ``wait`` on one of the pool's own threads (a thread
                work, or a done callback run there), which would wait for
                itself; nothing is changed then.
        """
        if wait and self._pool.runs_current_thread():
            raise RuntimeError(
                "shutdown(wait=True) was called from one of the pool's own threads "
                "(a work of a thread pool, or a done callback): it would wait for "
                "itself; call shutdown(wait=False) there, or shut down from outside"
            )
        futures: list[ConcurrentFuture[Any]] = []
        running: list[_Work] = []
        with deferred:
            with self._lock:
                self._shutdown = True
                if cancel_futures and self._broken is None:
                    for work in self._waiting:
                        if not work.cancelled:
                            futures.append(work.end())
                            work.cancelled = True
                            self._cancelled += 1
                    self._waiting.clear()
                    self._waiting_cancelled = 0
                    # Nothing waits any more, so nothing starts from now on.
                    running = [work for work in self._running.values() if not work.cancelled]
                self._dispatch_waiting()
                effects = self._leave()
            self._after(effects)
            for future in futures:
                future.set_cancelled()
            if running:
                self._cancel_running(running)
        if wait:
            try:
                self._pool.join()
            except KeyboardInterrupt:
                self.stop_now()
                raise
            # Every worker has reported all it ran before exiting; a work
            # still unsettled now was lost with a worker that died.
            with deferred:
                with self._lock:
                    if self._running or self._waiting:
                        self._break(
                            AplexWorkerError("a worker exited without reporting all its works")
                        )
                    effects = self._leave()
                self._after(effects)

    def _cancel_running(self, running: list[_Work]) -> None:
        """Cancel those of ``running`` that run as tasks (for shutdown)."""
        # Outside the lock: inspecting a callable may run its own code.
        coroutines = {work.work_id for work in running if is_coroutine_work(work.fn)}
        futures: list[ConcurrentFuture[Any]] = []
        with deferred:
            with self._lock:
                for work in running:
                    if (
                        work.state == _TASK
                        or (work.state == _RUNNING and work.work_id in coroutines)
                    ) and not work.cancelled:
                        assert work.worker is not None and work.future is not None
                        self._send_later(work.worker.index, CancelItem(work.work_id))
                        futures.append(work.future)
                        work.cancelled = True
                        self._cancelled += 1
                effects = self._leave()
            self._after(effects)
            for future in futures:
                future.set_cancelled()

    def stop_now(self, *, wait: bool = True) -> None:
        """Stop at once, as Ctrl-C asks: take no new works, end every
        unfinished work cancelled, cancel the running coroutine works in
        their workers, and stop the workers.

        A worker running a plain function cannot answer: a process is
        killed at once, a thread is left to finish the function alone (its
        result is dropped; the thread is a daemon, the interpreter does not
        wait for it). The other workers get ``STOP_GRACE`` (see
        :mod:`aplex._lifecycle`) to end their cancelled works and exit; the
        processes still running then are killed, the threads left behind.
        Calling it again only waits.

        Args:
            wait: Return once the workers have exited, been killed or been
                left behind (within about twice ``STOP_GRACE``); otherwise
                call :meth:`wait_stopped` later.
        """
        running: list[tuple[int, Callable[..., Any], int]] = []
        with deferred:
            with self._lock:
                stopping = not self._stopped_now and self._broken is None
                self._stopped_now = self._shutdown = True
                if stopping:  # else stopped already, or broken (its workers stopped)
                    running = [
                        (work.worker.index, work.fn, work.state)
                        for work in self._running.values()
                        if work.worker is not None
                    ]
                    self._end_unfinished(CANCELLED, None)
                    # Nothing more goes to the workers but the stop.
                    self._outbox.clear()
                    self._stop_sent = True
                effects = self._leave()
            self._after(effects)
            if stopping:
                # Outside the lock: inspecting a callable may run its own code.
                busy = {
                    index
                    for index, fn, state in running
                    if state != _TASK and not is_coroutine_work(fn)
                }
                self._pool.stop_now(busy)
        if wait:
            self.wait_stopped(time.monotonic() + STOP_GRACE)

    def signal_workers(self, *, kill: bool) -> None:
        """Shut down, and terminate (SIGTERM) or kill (SIGKILL) every worker
        process at once, as Python 3.14's ``terminate_workers()`` and
        ``kill_workers()``: the waiting works end cancelled, the works sent to
        a worker fail with :class:`AplexWorkerError`, and no worker is
        started again. On an executor shut down or broken already, the
        workers still running are signalled all the same."""
        how = "killed by kill_workers()" if kill else "terminated by terminate_workers()"
        with deferred:
            with self._lock:
                self._shutdown = True
                if not self._stopped_now and self._broken is None:
                    # Their exits are nobody's news now: nothing fails twice.
                    self._stopped_now = True
                    for work in self._waiting:
                        if work.state != _ENDED:  # else cancelled while waiting
                            work.cancelled = True
                            self._cancelled += 1
                            self._to_settle.append((work.end(), CANCELLED, None))
                    for work in self._running.values():
                        if work.cancelled:
                            work.end()  # counted, and settled, when cancelled
                            continue
                        assert work.worker is not None
                        self._fail(work, AplexWorkerError(f"worker {work.worker.name} was {how}"))
                    self._forget_works()
                    self._outbox.clear()
                    self._stop_sent = True
                effects = self._leave()
            self._after(effects)
            self._pool.signal_all(kill=kill)

    def wait_stopped(self, deadline: float) -> None:
        """After :meth:`stop_now`: wait until ``deadline`` for the workers to
        exit, then kill those still running (processes) or leave them
        behind (threads) and wait for the killed ones to be reaped."""
        if not self._pool.join(max(0.0, deadline - time.monotonic())):
            self._pool.kill_remaining()
            self._pool.join(STOP_GRACE)

    def forget_after_fork(self) -> None:
        """Let go of the parent's pool in a forked child; see _lifecycle.

        Called in the child before anything else runs there, so without the
        lock, which a thread of the parent may have held when it forked and
        which no thread of the child would ever release. The workers, their
        threads and the works belong to the parent: the child's copy only
        refuses new works and shuts down at once. The futures are copies the
        child has no way to complete: their works run in the parent.
        """
        self._lock = threading.Lock()
        self._pool = _NoWorkers(len(self.workers))
        self._forgotten = True
        self._shutdown = self._stop_sent = True
        self._waiting.clear()
        self._waiting_cancelled = 0
        self._running.clear()
        self._to_settle = []
        self._to_release = []
        self._outbox = {}
        self._sending = False

    @property
    def is_shut_down(self) -> bool:
        return self._shutdown

    def check_open(self) -> None:
        """Raise what ``submit`` would raise now, if anything."""
        with self._lock:
            self._check_open()

    def statistics(self) -> PoolStatistics:
        blocked = self._pool.blocked
        with self._lock:
            return PoolStatistics(
                workers=tuple(
                    WorkerStatistics(
                        worker.index,
                        worker.name,
                        self._retiring.get(worker.index, load),
                        bool(blocked[worker.index]),
                    )
                    for worker, load in self._workloads.items()
                ),
                waiting=len(self._waiting) - self._waiting_cancelled,
                completed=self._completed,
                failed=self._failed,
                cancelled=self._cancelled,
                replaced=self._replaced,
                recycled=self._recycled,
            )

    # -- workers ---------------------------------------------------------

    def _on_results(self, index: int, results: list[Any]) -> None:
        """Take a batch of results from worker ``index`` (on any thread)."""
        # Dropped results are freed as ``results`` is, once the lock is released.
        with self._lock:
            for result in results:
                kind = type(result)
                if kind is not tuple:  # the hot path sends plain tuples
                    if kind is WorkerFailure:
                        if self._replace and result.where == "work":
                            self._last_words[index] = result.error  # its on_exit follows
                        else:
                            self._break_by(result)
                        continue
                    if kind is Ready:
                        self._ready[index] = True
                        self._deaths_starting[index] = 0
                        continue
                    if kind is TasksStarted:
                        self._tasks_started(result.work_ids)
                        continue
                work_id, status, value = result
                work = self._running.pop(work_id, None)
                if work is None:
                    continue  # ended already, with the pool that broke
                if status > CANCELLED:  # the work, or its result, did not load
                    if status == RELOAD:
                        # Its worker could not load the batch it came in: it
                        # runs nowhere yet, and goes again (alone, see
                        # LoadFailure), its slot kept.
                        self._running[work_id] = work
                        self._send_later(index, work)
                        continue
                    value = _load_error(value, work.fn)  # before end() lets go of fn
                assert work.worker is not None
                if work.plain and work.state == _RUNNING:
                    self._blocked.plain[work.worker.index] -= 1
                load = self._workloads[work.worker]
                if load != self._limit:
                    self._workloads[work.worker] = load - 1
                else:
                    left = self._retiring.get(work.worker.index)
                    if left is None:
                        self._full_workers -= 1
                        self._workloads[work.worker] = load - 1
                    else:  # held full until its replacement starts
                        self._retiring[work.worker.index] = left - 1
                future = work.end()
                if work.cancelled:
                    continue  # counted, and settled, when cancelled
                if status == DONE:
                    self._completed += 1
                elif status == CANCELLED:
                    self._cancelled += 1
                else:
                    self._failed += 1
                self._to_settle.append((future, status, value))
            self._dispatch_waiting()
            effects = self._leave()
        self._after(effects)

    def _tasks_started(self, work_ids: list[int]) -> None:
        for work_id in work_ids:
            work = self._running.get(work_id)
            if work is not None:  # else it has ended already
                if work.plain and work.state == _RUNNING:
                    assert work.worker is not None
                    self._blocked.plain[work.worker.index] -= 1
                work.state = _TASK

    def _on_exit(self, index: int, error: BaseException | None) -> None:
        """Worker ``index`` has exited (on any thread)."""
        if self._stopped_now:
            return  # stopped, or killed, on purpose: its works have ended
        with self._lock:
            on_this_worker = any(
                work.worker is not None and work.worker.index == index
                for work in self._running.values()
            )
            killed = index in self._killing
            self._killing.discard(index)
            if error is None and index in self._retiring and not on_this_worker:
                self._recycle(index)
            elif killed or error is not None or not self._stop_sent or on_this_worker:
                if (self._replace or killed) and self._broken is None:
                    self._worker_died(index, error, killed=killed)
                else:
                    name = self.workers[index].name
                    broken = AplexWorkerError(f"worker {name} exited unexpectedly")
                    broken.__cause__ = error
                    self._break(broken)
            effects = self._leave()
        self._after(effects)

    # -- under the lock --------------------------------------------------

    def _retire(self, worker: Worker) -> None:
        """Worker ``worker`` has been sent its last work: hold it full, and
        tell it alone to stop once its works have ended."""
        load = self._workloads[worker]
        self._retiring[worker.index] = load
        assert self._limit is not None  # the child's cap bounds it
        if load != self._limit:
            self._workloads[worker] = self._limit
            self._full_workers += 1
        self._send_later(worker.index, STOP)

    def _recycle(self, index: int) -> None:
        """Retired worker ``index`` has exited cleanly: start another in
        its place."""
        del self._retiring[index]
        self._workloads[self.workers[index]] = 0
        self._blocked.plain[index] = 0
        self._full_workers -= 1
        self._sent[index] = 0
        self._ready[index] = False
        self._recycled += 1
        if self._stop_sent:
            return  # shutting down, nothing waits: no worker needed there
        self._send_later(index, RESTART)
        self._dispatch_waiting()

    def _worker_died(
        self, index: int, error: BaseException | None, *, killed: bool = False
    ) -> None:
        """Fail the works on dead worker ``index`` and start another in its
        place, unless it died starting twice in a row (a worker ``killed``
        to cancel a work did not die of its own)."""
        worker = self.workers[index]
        cause = self._last_words.pop(index, None) or error
        exitcode = error.exitcode if isinstance(error, ProcessExit) else None
        if killed:
            how = "it was killed to cancel a plain function sent to it (kill_on_cancel)"
        elif isinstance(error, ProcessExit):
            how = str(error)
        elif cause is not None and cause is not error:
            how = f"{type(cause).__name__} escaped a work and ended it"
        elif error is not None:
            how = f"it failed: {error!r}"
        else:
            how = "it exited unexpectedly"
        if not self._ready[index] and not killed:
            self._deaths_starting[index] += 1
            if self._deaths_starting[index] >= 2:
                broken = AplexWorkerError(
                    f"worker {worker.name} died twice in a row before its initializer "
                    f"returned (last time: {how})"
                )
                broken.__cause__ = cause
                self._break(broken)
                return
        started = self._ready[index]
        self._ready[index] = False
        died = WorkerDiedError(f"worker {worker.name} died: {how}", worker.name, exitcode)
        died.__cause__ = cause
        lost = [work for work in self._running.values() if work.worker is worker]
        requeued = []
        for work in lost:
            del self._running[work.work_id]
            if work.cancelled:
                work.end()  # counted, and settled, when cancelled
            elif not started:
                # A worker runs nothing before its initializer returns: these
                # never started, and wait again, first in the line.
                work.state = _WAITING
                requeued.append(work)
            else:
                self._fail(work, died)
        if self._workloads[worker] == self._limit:
            self._full_workers -= 1
        self._workloads[worker] = 0
        self._blocked.plain[index] = 0
        self._retiring.pop(index, None)
        self._sent[index] = 0
        if self._stop_sent:
            # Nothing more comes, and the other workers have been told to
            # stop: there is no worker left to run them.
            for work in requeued:
                self._fail(work, died)
            return
        self._waiting.extendleft(reversed(requeued))
        # The items decided for the dead worker go before the marker (to be
        # dropped), the new worker's after it, in the order decided.
        self._send_later(index, RESTART)
        self._replaced += 1
        self._dispatch_waiting()

    def _check_open(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._shutdown:
            if self._forgotten:
                raise RuntimeError(
                    f"this executor belongs to process {self._owner_pid}, which forked "
                    "this one: a forked process cannot use its parent's pools (make a new "
                    "executor here)"
                )
            raise RuntimeError("cannot take new works after shutdown")

    def _has_free_worker(self) -> bool:
        return self._full_workers < len(self.workers)

    def _place(self, work: _Work) -> bool:
        """Send ``work`` to the worker the balancer picks; False if every
        worker is full, or if the balancer picked a worker being recycled
        (the work then waits for its replacement). A balancer fault fails the
        work (and returns True)."""
        if not self._has_free_worker():
            return False
        try:
            worker = self._balancer.get_proper_worker(work.meta)
        except BaseException as exc:
            # Even a KeyboardInterrupt of the balancer's own making fails
            # only this work: the section around must end whole. It is
            # raised to the caller once it has (on the main thread).
            if not isinstance(exc, Exception):
                keep(exc)
            error = self._balancer_fault(f"raised {describe(exc)} while choosing a worker")
            error.__cause__ = exc
            return self._fail(work, error)
        load = self._workloads.get(worker) if isinstance(worker, Worker) else None
        if load is None:
            return self._fail(
                work,
                self._balancer_fault(
                    f"returned {describe(worker)}, which is not a worker of this pool"
                ),
            )
        if self._killing and worker.index in self._killing:
            return False  # it waits for the worker's replacement
        if self._limit is not None and load >= self._limit:
            if worker.index in self._retiring:
                return False  # it waits for the worker's replacement
            return self._fail(
                work,
                self._balancer_fault(
                    f"returned {worker.name}, which is full "
                    f"({load} works running, max_works_per_worker={self._limit})"
                ),
            )
        self._workloads[worker] = load + 1
        if load + 1 == self._limit:
            self._full_workers += 1
        first_placed = work.worker is None  # else placed again after its worker died starting
        work.worker = worker
        work.state = _RUNNING
        if work.plain:
            self._blocked.plain[worker.index] += 1
        self._running[work.work_id] = work
        assert work.future is not None  # it is placed before it ends
        if first_placed:
            work.future.set_running_or_notify_cancel()
        self._send_later(worker.index, work)
        if self._per_child is not None:
            self._sent[worker.index] += 1
            if self._sent[worker.index] == self._per_child:
                self._retire(worker)
        return True

    def _send_later(self, index: int, item: Any) -> None:
        """Send ``item`` to worker ``index`` once the lock is released."""
        items = self._outbox.get(index)
        if items is None:
            self._outbox[index] = [item]
        else:
            items.append(item)

    def _balancer_fault(self, what: str) -> RuntimeError:
        return RuntimeError(f"load balancer {type(self._balancer).__name__} {what}")

    def _fail(self, work: _Work, error: Exception) -> bool:
        """End ``work`` failed with ``error`` (settled once the lock is
        released); True, for :meth:`_place`, which has then dealt with it."""
        self._failed += 1
        self._to_settle.append((work.end(), FAILED, error))
        return True

    def _dispatch_waiting(self) -> None:
        waiting = self._waiting
        while waiting:
            if waiting[0].cancelled:
                waiting.popleft()
                self._waiting_cancelled -= 1
            elif self._has_free_worker():
                work = waiting.popleft()
                if not self._place(work):
                    waiting.appendleft(work)
                    return
            else:
                return
        if self._shutdown and not self._stop_sent and self._broken is None:
            self._stop_sent = True
            for worker in self.workers:
                self._send_later(worker.index, STOP)

    def _break_by(self, failure: WorkerFailure) -> None:
        if failure.where == "initializer":
            message = "a worker's initializer raised"
        else:
            message = f"{type(failure.error).__name__} escaped a work and broke its worker"
        broken = AplexWorkerError(message)
        broken.__cause__ = failure.error
        self._break(broken)

    def _break(self, broken: AplexWorkerError) -> None:
        """End every unfinished work with CancelledError caused by
        ``broken``, and stop the workers."""
        if self._broken is not None or self._stopped_now:
            return
        self._broken = broken
        self._end_unfinished(_BROKEN, broken)
        # Nothing more goes to the workers, which are stopped here.
        self._outbox.clear()
        self._stop_sent = True
        self._pool.abort()

    def _end_unfinished(self, status: int, value: Any) -> None:
        """End every waiting and running work, settled with ``status``; the
        workers' answers for them will be dropped."""
        for work in itertools.chain(self._waiting, self._running.values()):
            if work.state == _ENDED:
                continue  # cancelled while waiting, and left in the FIFO to be skipped
            future = work.end()
            if not work.cancelled:
                self._cancelled += 1
                self._to_settle.append((future, status, value))
        self._forget_works()

    def _forget_works(self) -> None:
        """Once every unfinished work has ended: no work waits or runs, and
        every worker's count starts from nothing."""
        self._waiting.clear()
        self._waiting_cancelled = 0
        self._running.clear()
        for worker in self._workloads:
            self._workloads[worker] = 0
        self._blocked.plain[:] = [0] * len(self.workers)
        self._full_workers = 0
        self._retiring.clear()
        self._killing.clear()

    def _leave(self) -> _Effects:
        """Take what this locked section leaves to do (see :meth:`_after`)."""
        settle, self._to_settle = self._to_settle, []
        release: list[_Work] = []
        if self._to_release:
            release, self._to_release = self._to_release, []
        outbox = None
        if self._outbox and not self._sending:
            self._sending = True
            outbox, self._outbox = self._outbox, {}
        return settle, release, outbox

    def _after(self, effects: _Effects) -> None:
        """Do, outside the lock, what a locked section left to do."""
        settle, release, outbox = effects
        if outbox is not None:
            self._send(outbox)
        _settle(settle)
        for work in release:
            work.release()

    def _send(self, outbox: dict[int, list[Any]]) -> None:
        """Send ``outbox``, then whatever other threads leave meanwhile, until
        nothing is left: they leave it to this thread, the only one sending,
        so that items go out in the order they were decided in."""
        put = self._pool.put
        while True:
            try:
                while outbox:
                    put(*outbox.popitem())
            except BaseException:
                with self._lock:  # what is not sent yet goes first next time
                    for index, items in self._outbox.items():
                        outbox[index] = outbox.get(index, []) + items
                    self._outbox = outbox
                    self._sending = False
                raise
            with self._lock:
                if not self._outbox:
                    self._sending = False
                    return
                outbox, self._outbox = self._outbox, {}


class _BlockedView(Mapping[Worker, bool]):
    """Which workers are blocked, as the balancer reads it: a worker is
    while a plain function holds its loop (the byte it writes in ``flags``,
    set once the workers have started), and from the moment one is sent to
    it (``plain``, counted by the dispatcher under its lock, each until the
    work ends or turns out to be a task).

    The flag alone is late: in a burst of plain works, the first one sent to
    a worker has not started when the next is placed, so that worker looked
    free while the one already running looked blocked, and every work of the
    burst went to it (8 CPU-bound works split 2 and 6, or 1 and 7, in about
    half of the bursts measured).

    It holds the flags, not the dispatcher: the balancer, which the
    dispatcher holds, keeps it, and a cycle would leave the pool's shared
    memory to the garbage collector."""

    def __init__(self, workers: tuple[Worker, ...]):
        self._workers = workers
        self.flags = memoryview(bytes(len(workers)))
        #: Plain works sent to each worker, by index, not yet ended.
        self.plain = [0] * len(workers)

    def __getitem__(self, worker: Worker) -> bool:
        index = worker.index
        return self.plain[index] > 0 or bool(self.flags[index])

    def __iter__(self) -> Iterator[Worker]:
        return iter(self._workers)

    def __len__(self) -> int:
        return len(self._workers)


def _settle(settle: list[tuple[ConcurrentFuture[Any], int, Any]]) -> None:
    """Complete futures as decided under the lock (never under it)."""
    for future, status, value in settle:
        try:
            if status == DONE:
                future.set_result(value)
            elif status == CANCELLED:
                future.set_cancelled()
            elif status == _BROKEN:
                error = CancelledError(f"the work was lost: {value}")
                error.__cause__ = value
                future.set_exception(error)
            else:
                future.set_exception(value)
        except InvalidStateError:
            pass  # cancelled by its caller in the meantime


def _load_error(failure: LoadFailure, fn: Callable[..., Any]) -> Exception:
    # Imported here: only process workers' works fail to load, and the
    # pickling machinery is no thread pool's concern.
    from ._worker.pickling import load_error

    return load_error(failure, fn)


def is_coroutine_work(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` is known to make a coroutine, before it is
    called: a coroutine function, a partial of one, an object whose
    ``__call__`` is one. Asked on cancel and by ``run()``, never by submit,
    since inspecting the function costs more than the rest of submit; never
    under the lock, since it may run the callable's own code (a
    ``__getattr__``)."""
    return (
        is_coroutine_function(fn)
        or inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 (an object with an async __call__)
        )
    )


def reject_async_generator_function(work: Any) -> None:
    """Raise TypeError if ``work`` is an async generator function (or a
    method or partial of one): its call returns an async generator, which is
    neither a value nor an awaitable, so it cannot be a work.

    Told by the code flag where there is one: ``inspect`` would cost more
    than the rest of a submit.
    """
    code = getattr(work, "__code__", None)
    if type(code) is CodeType:
        is_async_generator = bool(code.co_flags & inspect.CO_ASYNC_GENERATOR)
    else:
        is_async_generator = type(work) is partial and inspect.isasyncgenfunction(work)
    if is_async_generator:
        raise TypeError(
            f"work must return a value or an awaitable, got the async generator function "
            f"{work!r}, whose call returns an async generator: iterate it inside a "
            "coroutine function and submit that, e.g. "
            "async def collect(): return [item async for item in generate()]"
        )
