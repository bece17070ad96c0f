"""The loop that runs inside a worker, written once on AnyIO.

A worker is a thread or a process running one event loop (asyncio or trio,
started by a backend) and, on it, :func:`serve`. Its endpoint hands it
batches of items from the parent and takes batches of results back:

* a :class:`~aplex._worker.messages.WorkItem` (anything that is not one of the
  two others) is called at once on the loop thread;
  if the call returns an awaitable (whatever made it: a coroutine function,
  a partial, a lambda, an object with an async ``__call__``), the awaitable
  becomes a task in its own cancel scope, so that it can be cancelled alone,
  and the parent is told so (see :class:`~aplex._worker.messages.TasksStarted`);
* a :class:`~aplex._worker.messages.CancelItem` cancels that scope;
* a :class:`~aplex._worker.messages.StopItem` ends the loop once the running works
  have ended (at once, cancelling them, if it says so).

Results are gathered and sent in one batch per turn of the loop rather than
one message per work: that is what keeps a process worker's pipe cheap.

Nothing of a work outlives it here: its callable, arguments, result and
exception are let go of as soon as the result is sent (no batch or last item
is kept while the worker waits for the next), so that a worker holds no
stale references, as the standard library's workers do not.

This module imports nothing from the front end, so a worker process loads
only what it needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from types import CoroutineType, GeneratorType
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import sniffio
from anyio import TaskHandle

from .messages import (
    BATCH_BYTES,
    CANCELLED,
    DONE,
    FAILED,
    READY,
    CancelItem,
    StopItem,
    TasksStarted,
    WorkerFailure,
    WorkItem,
    is_coroutine_function,
    size_hint,
)


class Endpoint(Protocol):
    """The worker's side of its channel to the parent."""

    #: One byte the parent reads: 1 while the loop runs a plain function,
    #: which holds the whole loop (the load balancer then looks elsewhere).
    blocked: memoryview

    async def receive(self) -> list[Any]:
        """Wait for the next batch of items from the parent."""

    def send(self, results: list[Any]) -> None:
        """Send a batch of results to the parent."""


async def serve(
    endpoint: Endpoint,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> None:
    """Run works from ``endpoint`` until told to stop or until a work breaks
    the worker (then a :class:`WorkerFailure` is the last thing sent)."""
    await _Worker(endpoint).serve(initializer, initargs)


class _Worker:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        # The running coroutine works' tasks; None for one being created.
        self._tasks: dict[int, Any] = {}  # TaskHandle, or asyncio.Task
        self._results: list[Any] = []
        self._result_bytes = 0  # of the values in _results (see BATCH_BYTES)
        # Works started as tasks that the parent cannot have known would be.
        self._started: list[int] = []
        self._results_ready = anyio.Event()
        self._finished = anyio.Event()
        self._stopping = False
        self._going_down = False  # the worker is ending its tasks: none reports
        self._fatal: BaseException | None = None
        self._cancelled_exc = anyio.get_cancelled_exc_class()
        # Whether works run as the event loop's own tasks (asyncio) rather
        # than AnyIO's (see _task_factory).
        self._native = sniffio.current_async_library() == "asyncio"

    async def serve(
        self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
    ) -> None:
        if initializer is not None:
            try:
                value = initializer(*initargs)
                if inspect.isawaitable(value):
                    await value
            except BaseException as exc:  # any failure of the initializer breaks the pool
                self._endpoint.send([WorkerFailure("initializer", exc)])
                return
        self._endpoint.send([READY])
        async with anyio.create_task_group() as task_group:
            # How a coroutine work becomes a task that can be cancelled
            # alone. On asyncio, the loop's own task: a third of the cost of
            # an AnyIO task, which wraps it in a cancel scope the worker has
            # no use for (it cancels each task itself, and ends those left
            # before it returns). On trio, AnyIO's task, whose own scope its
            # handle cancels; the name spares anyio from making one per task.
            if self._native:
                import asyncio  # here: a trio worker never loads it

                loop = asyncio.get_running_loop()
                self._create_task: Callable[[Coroutine[Any, Any, None]], Any] = loop.create_task
                self._call_soon = loop.call_soon
            else:
                self._create_task = partial(task_group.create_task, name="work")
            self._scope = task_group.cancel_scope
            task_group.start_soon(self._receive_loop)
            task_group.start_soon(self._send_loop)
            await self._finished.wait()
            self._going_down = True
            task_group.cancel_scope.cancel()
        if self._native:
            # A work broke the worker: the loop's own tasks are not in the
            # task group, and end here, before the worker returns.
            tasks = [task for task in self._tasks.values() if task is not None]
            for task in tasks:
                self._cancel(task)
            if tasks:
                import asyncio

                await asyncio.wait(tasks)
        self._flush()
        if self._fatal is not None:
            self._endpoint.send([WorkerFailure("work", self._fatal)])

    async def _receive_loop(self) -> None:
        while True:
            # The batch is handed over, not kept: held here, its works would
            # stay alive until the next batch arrives.
            if not self._take(await self._endpoint.receive()):
                return
            self._flush()
            if self._stopping and not self._tasks:
                self._finished.set()
                return

    def _take(self, items: list[Any]) -> bool:
        """Act on a batch of items; False if a work broke the worker."""
        for item in items:
            kind = type(item)
            if kind is CancelItem:
                task = self._tasks.get(item.work_id)
                if task is not None:
                    self._cancel(task)
            elif kind is StopItem:
                self._stopping = True
                if item.cancel:
                    for task in self._tasks.values():
                        if task is not None:
                            self._cancel(task)
            else:
                self._start(item)
                if self._result_bytes >= BATCH_BYTES:
                    self._flush()  # large results leave as they come
            if self._fatal is not None:
                return False
        return True

    def _cancel(self, task: Any) -> None:
        if self._native:
            # A loop's task cancelled before its first step ends without
            # running its coroutine at all, so without reporting: it is
            # cancelled once started, which the loop does first.
            self._call_soon(task.cancel)
        else:
            task.cancel()

    def _start(self, item: WorkItem) -> None:
        work_id = item.work_id
        blocked = self._endpoint.blocked
        blocked[0] = 1
        try:
            if item.chunk:
                value: Any = _call_chunk(item)
                is_task = any(map(_is_awaitable, value))
            else:
                value = item.fn(*item.args, **item.kwargs)
                is_task = _is_awaitable(value)
        except Exception as exc:
            self._results.append((work_id, FAILED, exc))
            # The exception's traceback holds this frame: not the work too.
            item = None  # type: ignore[assignment]
            return
        except BaseException as exc:
            self._fail(exc)
            return
        finally:
            blocked[0] = 0
        if is_task:
            if not is_coroutine_function(item.fn):
                self._started.append(work_id)
            awaitable = _gather(value) if item.chunk else value
            self._tasks[work_id] = None
            task = self._create_task(self._await_work(work_id, awaitable))
            if work_id in self._tasks:  # an eager task factory may have run it to its end
                self._tasks[work_id] = task
        else:
            self._results.append((work_id, DONE, value))
            self._result_bytes += size_hint(value)

    async def _await_work(self, work_id: int, awaitable: Awaitable[Any]) -> None:
        try:
            value = await awaitable
        except Exception as exc:
            # Reported here, so that no local of this frame, which the
            # exception's traceback holds, refers back to the exception.
            del self._tasks[work_id]
            self._report(work_id, FAILED, exc)
            return
        except self._cancelled_exc:
            task = self._tasks.pop(work_id)
            if self._going_down or self._scope.cancel_called:
                raise  # the whole worker is going down: nothing to report
            self._report(work_id, CANCELLED, None)
            if (
                not self._native
                and task is not None
                and task.status is TaskHandle.Status.CANCELLING
            ):
                raise  # we asked for it: the task's own scope takes it back
            # The work raised a cancellation of its own making, or a task of
            # the loop's own was cancelled: its end is reported, it is over.
            return
        except BaseException as exc:
            del self._tasks[work_id]
            self._fail(exc)
            return
        del self._tasks[work_id]
        self._report(work_id, DONE, value)

    def _report(self, work_id: int, status: int, value: Any) -> None:
        self._results.append((work_id, status, value))
        self._result_bytes += size_hint(value)
        if self._result_bytes >= BATCH_BYTES:
            self._flush()  # large results leave as they come
        self._results_ready.set()
        if self._stopping and not self._tasks:
            self._finished.set()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._finished.set()

    async def _send_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready = anyio.Event()
            # Let the other works that are ready end first, so that their
            # results share one message.
            await anyio.lowlevel.checkpoint()
            self._flush()

    def _flush(self) -> None:
        if self._started:
            self._results.append(TasksStarted(self._started))
            self._started = []
        if self._results:
            results, self._results = self._results, []
            self._result_bytes = 0
            self._endpoint.send(results)


def _call_chunk(item: WorkItem) -> list[Any]:
    values: list[Any] = []
    try:
        for args in item.args:
            values.append(item.fn(*args, **item.kwargs))  # noqa: PERF401 (keeps what was made)
    except BaseException:
        # The chunk fails as a whole: its coroutines that were made will
        # never be awaited, and must not warn that they were not.
        for value in values:
            if inspect.iscoroutine(value):
                value.close()
        # The exception's traceback holds this frame: not the chunk's
        # arguments and results too.
        values.clear()
        item = None  # type: ignore[assignment]
        raise
    return values


def _is_awaitable(value: Any) -> bool:
    """inspect.isawaitable(), quicker for what most works return (a plain
    value): the worker asks it of every result."""
    kind = type(value)
    if kind is CoroutineType or hasattr(kind, "__await__"):
        return True
    return kind is GeneratorType and bool(value.gi_code.co_flags & inspect.CO_ITERABLE_COROUTINE)


async def _gather(values: list[Any]) -> list[Any]:
    """Await the coroutines of a chunk concurrently, in place; the first
    exception cancels the rest and is raised."""
    first_error: list[Exception] = []

    async def settle(index: int, coroutine: Awaitable[Any]) -> None:
        try:
            values[index] = await coroutine
        except Exception as exc:
            if not first_error:
                first_error.append(exc)
            task_group.cancel_scope.cancel()

    async with anyio.create_task_group() as task_group:
        for index, value in enumerate(values):
            if _is_awaitable(value):
                task_group.start_soon(settle, index, value)
    if first_error:
        raise first_error[0]
    return values
