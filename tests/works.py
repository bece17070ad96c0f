"""Works that the tests run inside workers.

They live in one importable module so that process workers can unpickle
them by reference.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time

import anyio
import anyio.lowlevel


def identity(x):
    return x


def add(x, y=0):
    return x + y


async def async_add(x, y=0):
    await anyio.lowlevel.checkpoint()
    return x + y


async def async_sleep(seconds, value=None):
    await anyio.sleep(seconds)
    return value


def raise_value_error(message="boom"):
    raise ValueError(message)


async def async_raise_value_error(message="boom"):
    await anyio.lowlevel.checkpoint()
    raise ValueError(message)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


async def async_raise_system_exit():
    await anyio.lowlevel.checkpoint()
    raise SystemExit(3)


def thread_name():
    return threading.current_thread().name


def pid():
    return os.getpid()


def sleep_sync(seconds, value=None):
    time.sleep(seconds)
    return value


def sleep_then_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def wait_event(event, timeout=30):
    """A plain work that runs until the test sets ``event``."""
    if not event.wait(timeout):
        raise TimeoutError("the test never set the event")
    return "released"


async def async_wait_event(event, timeout=30):
    """A coroutine work that runs until the test sets ``event`` (a
    threading.Event), checking it without blocking its loop."""
    with anyio.fail_after(timeout):
        while not event.is_set():
            await anyio.sleep(0.005)
    return "released"


async def async_wait_then_mark(started, cleaned_up, timeout=30):
    """Set ``started``, then wait to be cancelled; on cancellation set
    ``cleaned_up`` (the work's own cleanup, which the test observes)."""
    started.set()
    try:
        await anyio.sleep(timeout)
    finally:
        cleaned_up.set()
    return "not cancelled"


# -- process workers (tests/test_process_executor.py, test_process_failures.py)
#
# Process workers share no memory with the test, so these works talk to it
# through files: the test waits for a file a work writes, or writes one that
# a work waits for.

_initialized = None


def initialize(value):
    """An initializer: records ``value`` for :func:`initialized_value`."""
    global _initialized
    _initialized = ("plain", value)


async def async_initialize(value):
    """A coroutine initializer, awaited on the worker's loop."""
    global _initialized
    await anyio.lowlevel.checkpoint()
    _initialized = ("coroutine", value)


def initialized_value():
    return _initialized


def parent_pid():
    return os.getppid()


async def running_loop_module():
    """The module of the worker's running asyncio loop's class."""
    import asyncio

    return type(asyncio.get_running_loop()).__module__


def _wait_for_file_sync(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never created {path}")
        time.sleep(0.005)


async def _wait_for_file(path, timeout):
    with anyio.fail_after(timeout):
        while not os.path.exists(path):  # noqa: ASYNC240 (a local stat: instant)
            await anyio.sleep(0.005)


async def async_wait_for_file(path, value=None, timeout=30):
    """A coroutine work that returns ``value`` once ``path`` exists."""
    await _wait_for_file(path, timeout)
    return value


def _touch(path, text=""):
    with open(path, "w") as file:
        file.write(text)


async def async_mark_files_until_cancelled(started_path, cleaned_path, timeout=30):
    """Write ``started_path``, wait to be cancelled, and write
    ``cleaned_path`` in ``finally`` (the cleanup the test observes)."""
    _touch(started_path)
    try:
        await anyio.sleep(timeout)
    finally:
        _touch(cleaned_path, "cleaned up")
    return "not cancelled"


def _die(how):
    if how == "os_exit":
        os._exit(3)
    if how == "system_exit":
        raise SystemExit(3)
    if how == "keyboard_interrupt":
        raise KeyboardInterrupt
    raise AssertionError(f"unknown way to die: {how}")


def die_when_file_exists(path, how, timeout=30):
    """A plain work that breaks its worker (``how``) once ``path`` exists."""
    _wait_for_file_sync(path, timeout)
    _die(how)


async def async_die_when_file_exists(path, how, timeout=30):
    """A coroutine work that breaks its worker (``how``) once ``path`` exists."""
    await _wait_for_file(path, timeout)
    _die(how)


def make_lock():
    """A result that cannot be pickled."""
    return threading.Lock()


class LockHoldingError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class MismatchedInitError(Exception):
    """Pickles, but cannot be unpickled: ``__init__`` takes other arguments
    than the ``args`` it stores."""

    def __init__(self, code, reason):
        super().__init__(f"{code}: {reason}")


def raise_lock_holding_error(message="holds a lock"):
    raise LockHoldingError(message)


def raise_mismatched_init_error():
    raise MismatchedInitError(7, "mismatched")


# -- backends (tests/test_backend_matrix.py, test_trio_front_end.py,
#    test_backends_registry.py)
#
# These run on thread and process workers alike, so they signal the test
# through files (a process shares no memory with it).


class WorkError(Exception):
    """An exception with several args, to check that they come back intact."""


def raise_work_error(*args):
    raise WorkError(*args)


async def async_raise_work_error(*args):
    await anyio.lowlevel.checkpoint()
    raise WorkError(*args)


async def async_where():
    """Where the work runs: the worker's event-loop library, process id and
    thread name."""
    import sniffio

    return sniffio.current_async_library(), os.getpid(), threading.current_thread().name


async def trio_native_sleep(seconds):
    """A trio-native work: runs only on trio workers. Returns how long
    trio's own clock says it slept."""
    import trio

    start = trio.current_time()
    await trio.sleep(seconds)
    return trio.current_time() - start


# A stat or a tiny write of a local file, from a work's loop: too quick to be
# worth a thread hop, which would also start threads inside the worker.
def _file_exists(path):
    return os.path.exists(path)


def _write_file(path, text=""):
    # Atomic: a test that sees the file must also see its text.
    temporary = f"{path}.partial"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)


async def async_until_file(path, value=None, timeout=30):
    """Return ``value`` once ``path`` exists, checking without blocking the loop."""
    with anyio.fail_after(timeout):
        while not _file_exists(path):
            await anyio.sleep(0.005)
    return value


async def async_record_cancellation(started_path, cleanup_path, timeout=30):
    """Write ``started_path``, then wait to be cancelled. The work's own
    cleanup writes the name of the exception that ended it to
    ``cleanup_path``, which the test reads."""
    _write_file(started_path)
    ended_by = "nothing"
    try:
        await anyio.sleep(timeout)
    except BaseException as exc:
        ended_by = type(exc).__name__
        raise
    finally:
        _write_file(cleanup_path, ended_by)
    return "not cancelled"


async def async_shielded_until_file(started_path, release_path, value, timeout=30):
    """Write ``started_path`` and, shielded from cancellation, return
    ``value`` once ``release_path`` exists: its result reaches the parent
    after any cancel request."""
    with anyio.CancelScope(shield=True):
        _write_file(started_path)
        return await async_until_file(release_path, value, timeout)


async def asyncio_native_sleep(seconds):
    """An asyncio-native work: runs only on asyncio workers."""
    import asyncio

    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(seconds)
    return loop.time() - start


def plain_until_file(started_path, release_path, value=None, timeout=30):
    """A plain work: write ``started_path``, block the worker's loop thread
    until ``release_path`` exists, return ``value``."""
    _write_file(started_path)
    deadline = time.monotonic() + timeout
    while not os.path.exists(release_path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never created {release_path}")
        time.sleep(0.005)
    return value


# -- thread workers (tests/test_thread_executor.py, test_load_balancers.py)
#
# Thread workers share the test's memory, so these works report through the
# objects the test passes them: events, lists, a Gauge.

_thread_state = threading.local()


class Gauge:
    """Counts, per worker thread, the works running at once, and the order
    in which works started."""

    def __init__(self):
        self._lock = threading.Condition()
        self.running = {}  # thread name -> works running on it now
        self.peak = {}  # thread name -> most works seen running on it at once
        self.started = []  # tags, in the order the works started

    def enter(self, tag):
        name = threading.current_thread().name
        with self._lock:
            self.running[name] = self.running.get(name, 0) + 1
            self.peak[name] = max(self.peak.get(name, 0), self.running[name])
            self.started.append(tag)
            self._lock.notify_all()

    def leave(self):
        name = threading.current_thread().name
        with self._lock:
            self.running[name] -= 1
            self._lock.notify_all()

    def wait_running(self, count, timeout=30):
        """Wait until ``count`` works run at once, all workers together."""
        with self._lock:
            if not self._lock.wait_for(lambda: sum(self.running.values()) == count, timeout):
                raise AssertionError(f"never saw {count} works running: {self.running}")


async def async_gauged(gauge, tag, release, timeout=30):
    """A coroutine work counted by ``gauge`` while it waits for ``release``
    (a threading.Event); returns ``tag``."""
    gauge.enter(tag)
    try:
        with anyio.fail_after(timeout):
            while not release.is_set():
                await anyio.sleep(0.01)
    finally:
        gauge.leave()
    return tag


def append_to(log, value):
    """A plain work with a visible effect: appends ``value`` to ``log``."""
    log.append(value)
    return value


def thread_name_of(value):
    """The worker thread a ``map`` item ran on."""
    return threading.current_thread().name


def mark_then_wait(started, release, timeout=30):
    """A plain work that sets ``started``, then blocks until ``release``."""
    started.set()
    if not release.wait(timeout):
        raise TimeoutError("the test never set the event")
    return "released"


class DetailedError(Exception):
    """An exception with several args, to see them come back intact."""


def raise_detailed(code, detail):
    raise DetailedError(code, detail)


async def async_raise_detailed(code, detail):
    await anyio.lowlevel.checkpoint()
    raise DetailedError(code, detail)


class Crash(BaseException):
    """A BaseException of the user's own, neither Exception nor exit."""


def raise_when_set(gate, exception, timeout=30):
    """A plain work that raises ``exception`` once ``gate`` is set."""
    if not gate.wait(timeout):
        raise TimeoutError("the test never set the gate")
    raise exception


async def async_raise_when_set(gate, exception, timeout=30):
    """A coroutine work that raises ``exception`` once ``gate`` is set."""
    with anyio.fail_after(timeout):
        while not gate.is_set():
            await anyio.sleep(0.005)
    raise exception


async def async_fail_first(index, release, timeout=30):
    """A map work: item 0 raises at once; the others wait for ``release``."""
    if index == 0:
        raise ValueError("first item failed")
    with anyio.fail_after(timeout):
        while not release.is_set():
            await anyio.sleep(0.01)
    return index


async def async_first_or_wait(value, started, cleaned_up, timeout=30):
    """A map work: returns ``value`` at once when ``started`` is None, else
    behaves as :func:`async_wait_then_mark`."""
    if started is None:
        return value
    return await async_wait_then_mark(started, cleaned_up, timeout)


def record_initializer(log, tag):
    """A plain initializer: logs (thread name, tag) and marks its thread."""
    log.append((threading.current_thread().name, tag))
    _thread_state.tag = tag


async def async_record_initializer(log, tag):
    """A coroutine initializer: logs (thread name, event loop library, tag)
    once it has awaited on the worker's loop, and marks its thread."""
    import sniffio

    await anyio.lowlevel.checkpoint()
    log.append((threading.current_thread().name, sniffio.current_async_library(), tag))
    _thread_state.tag = tag


def initialized_tag():
    """What the initializer left on this worker thread, if it ran."""
    return getattr(_thread_state, "tag", None)


def failing_initializer(gate, message, timeout=30):
    """An initializer that raises ValueError(message) once ``gate`` is set."""
    if not gate.wait(timeout):
        raise TimeoutError("the test never set the gate")
    raise ValueError(message)


async def async_loop_class():
    """The class of the worker's running asyncio loop."""
    import asyncio

    return type(asyncio.get_running_loop())


async def async_library():
    """The event-loop library the work runs on."""
    import sniffio

    await anyio.lowlevel.checkpoint()
    return sniffio.current_async_library()


def controlled(control):
    """A plain work whose start, end and outcome the test controls: it
    calls ``control.begin()``, blocks its worker's loop until the test sets
    ``control.released``, returns or raises ``control.outcome()``, and calls
    ``control.end()`` however it ends (see tests/test_executor_machine.py)."""
    control.begin()
    try:
        if not control.released.wait(30):
            raise TimeoutError("the test never released the work")
        return control.outcome()
    finally:
        control.end()


async def async_controlled(control):
    """The coroutine twin of :func:`controlled`: it checks
    ``control.released`` every millisecond, so its loop keeps serving the
    other works (and cancellation) meanwhile."""
    control.begin()
    try:
        with anyio.fail_after(30):
            while not control.released.is_set():
                await anyio.sleep(0.001)
        return control.outcome()
    finally:
        control.end()


async def async_shielded_until_set(started, release, value, timeout=30):
    """Set ``started``, then, shielded from cancellation, return ``value``
    once ``release`` is set: the result reaches the parent after a cancel
    request."""
    with anyio.CancelScope(shield=True):
        started.set()
        with anyio.fail_after(timeout):
            while not release.is_set():
                await anyio.sleep(0.005)
    return value


def aplex_modules():
    """The aplex modules the worker has loaded."""
    import sys

    return sorted(name for name in sys.modules if name.split(".")[0] == "aplex")


def wait_then_return(event, value, timeout=30):
    """A plain work that returns ``value`` once the test sets ``event``."""
    if not event.wait(timeout):
        raise TimeoutError("the test never set the event")
    return value


async def async_wait_then_return(event, value, timeout=30):
    """A coroutine work that returns ``value`` once the test sets ``event``
    (a threading.Event), checking it without blocking its loop."""
    await async_wait_event(event, timeout)
    return value


#: A context variable the caller sets before run(): what does the work see?
request_id = contextvars.ContextVar("request_id", default="unset")


def read_request_id():
    return request_id.get()


# -- references (tests/test_references.py) ------------------------------------


class Referent:
    """An object whose life a test watches: with a weakref in its own
    process, or, in a worker process, by the file that its ``__del__``
    writes there (``<marker>-<pid>``; copies freed in the test's own process
    write one too, which the test ignores)."""

    def __init__(self, marker=None):
        self.marker = marker

    def method(self):
        return None

    async def async_method(self):
        await anyio.lowlevel.checkpoint()

    def __del__(self):
        if self.marker is not None:
            _touch(f"{self.marker}-{os.getpid()}")


def ignore(*args):
    return None


async def async_ignore(*args):
    await anyio.lowlevel.checkpoint()


def raise_holding(referent):
    """Raise while this frame, which the traceback keeps, holds ``referent``."""
    raise ValueError(f"holding {type(referent).__name__}")


async def async_raise_holding(referent):
    await anyio.lowlevel.checkpoint()
    raise ValueError(f"holding {type(referent).__name__}")


def make_referent(marker=None):
    return Referent(marker)


# -- coroutine works and re-entrancy (tests/test_coroutine_works.py,
# tests/test_reentrancy.py) ----------------------------------------------------


class AsyncCallable:
    """An object whose ``__call__`` is a coroutine function."""

    async def __call__(self, started, cleaned_up, timeout=30):
        return await async_wait_then_mark(started, cleaned_up, timeout)


def returns_coroutine(started, cleaned_up, timeout=30):
    """A plain function that returns a coroutine: a coroutine work all the
    same, which the parent learns only from its worker."""
    return async_wait_then_mark(started, cleaned_up, timeout)


def returns_coroutine_of_files(started_path, cleaned_path, timeout=30):
    """:func:`returns_coroutine` for process workers, with files."""
    return async_mark_files_until_cancelled(started_path, cleaned_path, timeout)


async def async_generator_function():
    yield 1


def touch(path):
    """A plain work whose only effect is the file it writes."""
    _touch(path)


def returns_asyncio_future(value):
    """A plain function that returns an awaitable that is not a coroutine."""
    import asyncio

    future = asyncio.get_running_loop().create_future()
    future.get_loop().call_soon(future.set_result, value)
    return future


class CallsBack:
    """An argument whose pickling (``__reduce__``) or freeing (``__del__``)
    calls into the pool that runs the work: ``on_reduce(pool)`` or
    ``on_del(pool)``, whose result is recorded in ``seen`` as
    ``("reduce", result)`` or ``("del", result)``."""

    def __init__(self, pool, seen, on_reduce=None, on_del=None):
        self.pool, self.seen, self.on_reduce, self.on_del = pool, seen, on_reduce, on_del

    def __reduce__(self):
        if self.on_reduce is not None:
            self.seen.append(("reduce", self.on_reduce(self.pool)))
        return (int, (7,))

    def __del__(self):
        if self.on_del is not None:
            self.seen.append(("del", self.on_del(self.pool)))


_primitives = None


def keep_primitives(*primitives):
    """An initializer that keeps what multiprocessing passed it."""
    global _primitives
    _primitives = primitives


def use_primitives(value):
    queue, event, _lock, double = _primitives
    queue.put(double(value))
    event.set()
    return "done"


def try_primitive_lock():
    lock = _primitives[2]
    if not lock.acquire(timeout=0.05):
        return False
    lock.release()
    return True


def hold_gil(started_path):
    """A plain work that holds the GIL for minutes in one C call (a sum over
    a range runs in C without a bytecode boundary), once it has written
    ``started_path``: no other thread of its worker runs meanwhile."""
    _write_file(started_path)
    return sum(range(10**12))


def resubmit_forever(executor):
    """A plain work that submits itself again, until the executor refuses:
    keeps the dispatcher's lock busy from the executor's own threads."""
    executor.submit(resubmit_forever, executor)


def _load_only_in(pid, value):
    if os.getpid() != pid:
        raise ValueError(f"refuses to load outside process {pid}")
    return LoadsOnlyIn(pid, value)


class LoadsOnlyIn:
    """Pickles anywhere, and loads only in process ``pid``: its reconstructor
    raises elsewhere."""

    def __init__(self, pid, value=None):
        self.pid = pid
        self.value = value

    def __reduce__(self):
        return _load_only_in, (self.pid, self.value)


def loads_only_here(value=None):
    """A result that the parent cannot load."""
    return LoadsOnlyIn(os.getpid(), value)


async def async_loads_only_here_after_file(path, value=None, timeout=30):
    """A coroutine work whose result the parent cannot load, once ``path`` exists."""
    await _wait_for_file(path, timeout)
    return loads_only_here(value)


def _load_error_only_in(pid, message):
    if os.getpid() != pid:
        raise ValueError(f"refuses to load outside process {pid}")
    return LoadsOnlyInError(pid, message)


class LoadsOnlyInError(Exception):
    """An exception that pickles and round-trips in its worker, and that the
    parent cannot load."""

    def __init__(self, pid, message):
        super().__init__(message)
        self.pid = pid

    def __reduce__(self):
        return _load_error_only_in, (self.pid, str(self))


def raise_error_that_loads_only_here(message):
    raise LoadsOnlyInError(os.getpid(), message)


# -- Ctrl-C and exit (tests/test_ctrl_c.py)


def plain_started_then_sleep(started_path, seconds):
    """A long plain work: write ``started_path``, then block its worker's
    loop for ``seconds``."""
    _write_file(started_path)
    time.sleep(seconds)
    return "slept"


# -- issue 17: interrupts, callbacks, evil objects -----------------------------


class RaisesOnReduce:
    """An argument whose pickling raises ``exception`` the first ``times``
    times (on whichever thread pickles it), then pickles as 7."""

    def __init__(self, exception, times=1):
        self.exception, self.times, self.calls = exception, times, 0

    def __reduce__(self):
        self.calls += 1
        if self.calls <= self.times:
            raise self.exception
        return (int, (7,))


class SlowReduce:
    """An argument whose first pickling sets ``started`` and blocks until
    ``release`` is set (at most ``timeout`` s); later ones pickle as 7 at once."""

    def __init__(self, started, release, timeout=30):
        self.started, self.release, self.timeout, self.calls = started, release, timeout, 0

    def __reduce__(self):
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            # Short waits: a signal that comes between Python's last check
            # for one and the start of a lock wait is handled only once the
            # wait ends (CPython's own race, seen as a 30 s hang under load);
            # each wait here ends soon, and the check comes then.
            deadline = time.monotonic() + self.timeout
            while not self.release.wait(0.05) and time.monotonic() < deadline:
                pass
        return (int, (7,))


class UnprintableError(Exception):
    """Cannot be unpickled (its __init__ wants two arguments) and its
    ``__str__`` raises."""

    def __init__(self, code, detail):
        super().__init__(code)
        self.detail = detail

    def __str__(self):
        raise ValueError("no str for you")


def raise_unprintable():
    raise UnprintableError(1, "detail")


def raise_stop_iteration():
    raise StopIteration("stopped")


async def async_raise_stop_async_iteration():
    raise StopAsyncIteration("stopped")


class EvilRepr:
    """A callable that cannot be pickled (it holds a lock) and whose
    ``repr()`` raises."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self):
        return "called"

    def __repr__(self):
        raise RuntimeError("no repr for you")


class NotCallableEvilRepr:
    def __repr__(self):
        raise RuntimeError("no repr for you")


class GatedUnpicklable:
    """An argument whose pickling waits for ``gate`` (at most ``timeout``
    s), then fails: the work can be made to fail on the feeder thread."""

    def __init__(self, gate, timeout=30):
        self.gate, self.timeout = gate, timeout

    def __reduce__(self):
        self.gate.wait(self.timeout)
        raise TypeError("this argument cannot be pickled")


async def async_stop_async_iteration_at(x, stop_at):
    if x == stop_at:
        raise StopAsyncIteration("stopped")
    return x


def exit_in_initializer(code=5):
    """An initializer whose process dies before it returns."""
    os._exit(code)


def die_once_in_initializer(path, code=5):
    """An initializer that dies the first time (creating ``path``), and
    returns every time after."""
    if not os.path.exists(path):
        _touch(path)
        os._exit(code)


def pid_and_initialized(*args):
    """Which process ran the work, and what its initializer left there
    (see :func:`initialize`); takes any arguments, for ``map``."""
    return os.getpid(), _initialized


async def async_pid_until_file(path, timeout=30):
    """A coroutine work that returns its process's pid once ``path`` exists."""
    await _wait_for_file(path, timeout)
    return os.getpid()


def die_once_in_initializer_after_file(path, gate, timeout=30, code=5):
    """An initializer that waits for ``gate`` to exist, then dies the first
    time (creating ``path``) and returns every time after."""
    _wait_for_file_sync(gate, timeout)
    die_once_in_initializer(path, code)


def ignore_sigterm_until_file(started_path, release_path, timeout=30):
    """A plain work that ignores SIGTERM, writes its pid to ``started_path``,
    and blocks until ``release_path`` exists."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _write_file(started_path, str(os.getpid()))
    _wait_for_file_sync(release_path, timeout)


def block_writing_pid(started_path, release_path, timeout=30):
    """A plain work that writes its pid to ``started_path`` and blocks its
    worker's loop until ``release_path`` exists."""
    _write_file(started_path, str(os.getpid()))
    _wait_for_file_sync(release_path, timeout)
    return os.getpid()


def wait_for_file_initializer(path, timeout=30):
    """An initializer that returns once ``path`` exists."""
    _wait_for_file_sync(path, timeout)


# -- large payloads (tests/test_payloads.py)


def buffer_facts(value):
    """What a buffer argument is once it has arrived in the worker: its
    type, its layout and a digest of its bytes."""
    import hashlib

    view = memoryview(value)
    facts = (type(value).__name__, view.format, view.shape, view.readonly)
    return facts + (hashlib.sha256(view.cast("B") if view.ndim else view.tobytes()).hexdigest(),)


def make_buffer(kind, size, seed):
    """A large buffer of ``kind`` made in the worker: a result to send back."""
    import random

    data = random.Random(seed).randbytes(size)
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    return memoryview(bytearray(data)).cast("Q")


def buffers_of_kwargs(**kwargs):
    return {key: buffer_facts(value) for key, value in kwargs.items()}
