"""Ctrl-C anywhere, callbacks that call back, and evil objects (issue 17).

SPEC: every future that ``submit()`` returned ends, whatever was
interrupted; a callback, a ``__del__`` or a ``__reduce__`` never deadlocks
the pool nor loses a work; whatever a work raises, and whatever its
``__str__``, ``__repr__`` or ``__reduce__`` do, that work alone fails.

The Ctrl-C tests run a real program in a subprocess, with a thread sending
SIGINT to it every 300 microseconds while its main thread submits, cancels
or shuts down, and check that every future it got ends as it should.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import anyio
import pytest

import aplex
import aplex.backends.trio as aplex_trio
from aplex import ProcessAsyncPoolExecutor, ThreadAsyncPoolExecutor
from tests import works
from tests.support import T, wait_until

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A run sends thousands of signals; on a loaded machine a run takes seconds.
RUN_TIMEOUT = 50


def run_program(source, *args, timeout=RUN_TIMEOUT):
    """Run ``source`` as a script (it may import tests.works) and return it
    finished; fail if it hangs, with every thread's stack at that moment."""
    process = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(source), *map(str, args)],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints the stacks
        try:
            stdout, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        pytest.fail(f"the program hung:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


STORM = """
import os, select, signal, subprocess, sys, time

import aplex
from tests import works

kind, mode, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
Executor = aplex.ThreadAsyncPoolExecutor if kind == "thread" else aplex.ProcessAsyncPoolExecutor

# The program's own SIGINT handler: KeyboardInterrupt, as the default one
# raises, but only while armed, around each call into aplex (the program's
# own loop and the interpreter's exit are not what is tested). It disarms
# itself, so that the program's handling of one is not cut short by the next.
armed = [False]


def on_sigint(signum, frame):
    if armed[0]:
        armed[0] = False
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, on_sigint)


# Another process sends SIGINT every 300 microseconds for 2 seconds: a thread
# of this one would wait for the GIL between two signals.
INTERRUPTER = (
    "import os, sys, time\\n"
    "end = time.monotonic() + 2\\n"
    "while time.monotonic() < end:\\n"
    "    os.kill(int(sys.argv[1]), 2)\\n"
    "    time.sleep(0.0003)\\n"
)


def interrupter():
    return subprocess.Popen([sys.executable, "-c", INTERRUPTER, str(os.getpid())])


def run():
    pool = Executor(pool_size=2, max_works_per_worker=8)
    futures = {}  # each future submit() returned -> what it should give
    interrupts = 0
    if mode == "submit":
        sender = interrupter()
        i = 0
        while sender.poll() is None:
            i += 1
            try:
                armed[0] = True
                if i % 2:
                    future = pool.submit(works.identity, i)
                else:
                    future = pool.submit(works.async_sleep, 0.001, i)
                futures[future] = i
                if i % 5 == 0:
                    future.cancel()
                armed[0] = False
            except KeyboardInterrupt:
                armed[0] = False
                interrupts += 1
    else:  # shutdown(cancel_futures=True) under Ctrl-C, thousands waiting
        for i in range(3000):
            futures[pool.submit(works.async_sleep, 60, i)] = None
        # The sender's interpreter may take longer to start, on a loaded
        # machine, than the whole shutdown: the storm must be on first. The
        # interpreter writes to the wakeup fd as a signal comes (a Python
        # handler cannot set an Event: the next signal would re-enter it).
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_write, False)
        signal.set_wakeup_fd(wakeup_write)
        sender = interrupter()
        select.select([wakeup_read], [], [], 30)
        signal.set_wakeup_fd(-1)
        os.close(wakeup_read)
        os.close(wakeup_write)
        while True:
            try:
                armed[0] = True
                pool.shutdown(wait=True, cancel_futures=True)
                armed[0] = False
                break
            except KeyboardInterrupt:
                armed[0] = False
                interrupts += 1
        sender.kill()
    sender.wait()
    pool.shutdown(wait=True)
    pending = [future for future in futures if not future.done()]
    wrong = [
        (future, value)
        for future, value in futures.items()
        if future.done()
        and not future.cancelled()
        and (mode == "shutdown" or future.exception() is not None or future.result() != value)
    ]
    print(
        f"futures={len(futures)} interrupts={interrupts} pending={len(pending)} "
        f"wrong={wrong[:3]}",
        flush=True,
    )
    return not pending and not wrong


if __name__ == "__main__":
    ok = all([run() for _ in range(runs)])
    sys.exit(0 if ok else 1)
"""


# -- Ctrl-C ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["thread", "process"])
@pytest.mark.parametrize("mode", ["submit", "shutdown"])
def test_every_future_ends_when_ctrl_c_is_pressed_again_and_again(kind, mode):
    """Guards against a Ctrl-C landing inside the dispatcher's bookkeeping:
    futures left pending for ever after shutdown(wait=True), a process
    pool's reader dying on "a work ends once", thousands of futures left
    pending by an interrupted shutdown(cancel_futures=True)."""
    done = run_program(STORM, kind, mode, 2)
    assert done.returncode == 0, done.stdout + done.stderr
    # No thread of the pool died (a reader on "a work ends once"). A
    # KeyboardInterrupt may still be printed as ignored, from a weakref
    # callback it hit (the interpreter's, out of any section).
    assert "Exception in thread" not in done.stderr, done.stderr
    assert "AssertionError" not in done.stderr, done.stderr
    # The signals did land while the program was in aplex.
    assert all(int(line.split()[1].split("=")[1]) > 0 for line in done.stdout.splitlines())


def test_ctrl_c_stops_a_blocking_pickling_and_the_work_still_runs():
    """A Ctrl-C while submit() pickles an argument for an idle worker (its
    ``__reduce__`` blocks) interrupts it at once; the feeder sends the work
    (pickling it again), and the worker goes on getting works: the link's
    writing flag was left set before, and shutdown() hung."""
    done = run_program(
        """
        import os, signal, threading, time

        import aplex
        from tests import works

        pool = aplex.ProcessAsyncPoolExecutor(pool_size=1)
        pool.submit(works.add, 1, 1).result(10)  # started, idle
        started, release = threading.Event(), threading.Event()
        main = threading.get_ident()

        def ctrl_c():
            started.wait(10)
            # To the main thread itself: a lock wait there is cut short only
            # by a signal that the kernel hands to that thread.
            signal.pthread_kill(main, signal.SIGINT)

        threading.Thread(target=ctrl_c).start()
        begun = time.monotonic()
        try:
            pool.submit(works.identity, works.SlowReduce(started, release))
            print("not interrupted")
        except KeyboardInterrupt:
            elapsed = time.monotonic() - begun
            print("interrupted at once" if elapsed < 10 else f"interrupted in {elapsed:.0f} s")
        print(pool.submit(works.add, 2, 2).result(10))
        deadline = time.monotonic() + 10
        while pool.statistics().completed < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("completed", pool.statistics().completed)
        pool.shutdown()
        print("shut down")
        """,
        timeout=30,
    )
    assert done.stdout.split("\n") == [
        "interrupted at once",
        "4",
        "completed 3",
        "shut down",
        "",
    ], done.stdout + done.stderr


def test_a_keyboard_interrupt_raised_by_reduce_on_the_main_thread():
    """The KeyboardInterrupt reaches the caller once submit's bookkeeping is
    whole; the work is pickled again by the feeder (this time it pickles)
    and runs; the pool serves on."""
    with ProcessAsyncPoolExecutor(pool_size=1) as pool:
        assert pool.submit(works.add, 1, 1).result(T) == 2  # idle: the direct write
        with pytest.raises(KeyboardInterrupt):
            pool.submit(works.identity, works.RaisesOnReduce(KeyboardInterrupt()))
        assert pool.submit(works.add, 2, 2).result(T) == 4
        wait_until(lambda: pool.statistics().completed == 3)


def test_a_keyboard_interrupt_raised_by_reduce_fails_its_work_alone():
    """Raised each time, from a thread no signal reaches: the work fails
    with a PicklingError caused by it; neither the caller nor the feeder
    thread gets it, and the pool serves on."""
    with ProcessAsyncPoolExecutor(pool_size=1) as pool:
        assert pool.submit(works.add, 1, 1).result(T) == 2
        argument = works.RaisesOnReduce(KeyboardInterrupt(), times=10)
        outcome = []
        thread = threading.Thread(
            target=lambda: outcome.append(pool.submit(works.identity, argument))
        )
        thread.start()
        thread.join(T)
        error = outcome[0].exception(T)
        assert isinstance(error, pickle.PicklingError)
        assert "argument 0 (RaisesOnReduce)" in str(error)
        assert isinstance(error.__cause__, KeyboardInterrupt)
        assert pool.submit(works.add, 2, 2).result(T) == 4


def test_a_done_callback_raising_keyboard_interrupt_during_cancel():
    """cancel() on the main thread runs the callbacks: one that raises
    KeyboardInterrupt does not stop the others, nor the bookkeeping; the
    interrupt reaches the caller once cancel() is done."""
    with ThreadAsyncPoolExecutor(pool_size=1) as pool:
        future = pool.submit(works.async_sleep, 60)
        wait_until(lambda: pool.statistics().running == 1)
        seen = []

        def interrupt(_):
            raise KeyboardInterrupt

        future.add_done_callback(lambda _: seen.append("first"))
        future.add_done_callback(interrupt)
        future.add_done_callback(lambda _: seen.append("last"))
        with pytest.raises(KeyboardInterrupt):
            future.cancel()
        assert future.cancelled()
        assert seen == ["first", "last"]
        wait_until(lambda: pool.statistics().running == 0)
        assert pool.submit(works.add, 1, 1).result(T) == 2


def test_a_balancer_raising_keyboard_interrupt_fails_that_work_alone():
    """A synchronous KeyboardInterrupt from the balancer (called under the
    dispatcher's lock) fails the work it was placing, reaches the caller
    after the bookkeeping, and leaves the pool whole."""
    raised = []

    class Interrupting(aplex.load_balancers.RoundRobin):
        def get_proper_worker(self, meta):
            if meta == "interrupt":
                raised.append(meta)
                raise KeyboardInterrupt
            return super().get_proper_worker(meta)

    release = threading.Event()
    with ThreadAsyncPoolExecutor(
        pool_size=1, max_works_per_worker=1, load_balancer=Interrupting
    ) as pool:
        with pytest.raises(KeyboardInterrupt):
            pool.submit(works.identity, 1, load_balancing_meta="interrupt")
        # Now while a waiting work is placed, on the worker's thread.
        first = pool.submit(works.wait_event, release)
        waiting = pool.submit(works.identity, 2, load_balancing_meta="interrupt")
        after = pool.submit(works.identity, 3)
        release.set()
        assert first.result(T) == "released"
        error = waiting.exception(T)
        assert isinstance(error, RuntimeError) and "KeyboardInterrupt" in str(error)
        assert isinstance(error.__cause__, KeyboardInterrupt)
        assert after.result(T) == 3
        assert raised == ["interrupt", "interrupt"]
        assert pool.statistics().failed == 2


def test_the_programs_sigint_handler_is_left_as_it_was():
    import signal

    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with ThreadAsyncPoolExecutor(pool_size=1) as pool:
            future = pool.submit(works.async_sleep, 60)
            assert signal.getsignal(signal.SIGINT) is handler
            future.cancel()
            assert pool.submit(works.add, 1, 1).result(T) == 2
            assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


# -- callbacks that call back, __del__ ------------------------------------------


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_shutdown_from_a_done_callback_loses_no_running_work(kind, tmp_path):
    """The callback runs on a worker thread (thread pool) or a reader thread
    (process pool); the coroutine work still running there ends normally."""
    first_gate, running_gate = tmp_path / "first", tmp_path / "running"
    executor_class = ThreadAsyncPoolExecutor if kind == "thread" else ProcessAsyncPoolExecutor
    with executor_class(pool_size=1) as pool:
        running = pool.submit(works.async_until_file, str(running_gate), "still here")
        first = pool.submit(works.async_until_file, str(first_gate), "first")
        threads = []
        first.add_done_callback(
            lambda _: (threads.append(threading.current_thread().name), pool.shutdown(wait=False))
        )
        first_gate.touch()
        assert first.result(T) == "first"
        wait_until(lambda: threads)
        assert threads[0].startswith("aplex-")
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(works.add, 1, 1)
        running_gate.touch()
        assert running.result(T) == "still here"


def test_shutdown_from_the_callback_of_a_work_that_could_not_be_pickled(tmp_path):
    """That callback runs on the feeder thread, which holds its link's
    writing flag: shutdown(wait=False) there neither deadlocks nor loses
    the coroutine work still running."""
    gate = threading.Event()
    path = tmp_path / "running"
    with ProcessAsyncPoolExecutor(pool_size=1) as pool:
        running = pool.submit(works.async_until_file, str(path), "still here")
        wait_until(lambda: pool.statistics().running == 1)
        # The worker is busy: the feeder pickles this one, and fails it.
        failing = pool.submit(works.identity, works.GatedUnpicklable(gate))
        threads = []
        failing.add_done_callback(
            lambda _: (threads.append(threading.current_thread().name), pool.shutdown(wait=False))
        )
        gate.set()
        assert isinstance(failing.exception(T), pickle.PicklingError)
        wait_until(lambda: threads)
        assert threads[0].endswith("-feeder")
        path.touch()
        assert running.result(T) == "still here"


def test_an_executor_collected_inside_its_own_dispatchers_lock():
    """The garbage collector runs the executor's __del__ on a worker thread
    inside the dispatcher's (non-reentrant) lock: its shutdown must not
    deadlock there, and the works it had still end."""
    done = run_program(
        """
        import gc, threading, time, warnings

        import aplex
        from aplex.load_balancers import RoundRobin
        from tests import works

        warnings.simplefilter("ignore", ResourceWarning)
        gc.disable()


        class Collecting(RoundRobin):
            # Called under the dispatcher's lock: there, collect the cycle.
            def get_proper_worker(self, meta):
                if meta == "collect":
                    gc.collect()
                return super().get_proper_worker(meta)


        release = threading.Event()
        pool = aplex.ThreadAsyncPoolExecutor(
            pool_size=1, max_works_per_worker=1, load_balancer=Collecting
        )
        pool.cycle = pool
        first = pool.submit(works.wait_event, release)
        # Waits, and is placed on the worker's thread when the first ends.
        second = pool.submit(works.identity, 2, load_balancing_meta="collect")
        del pool
        release.set()
        print(first.result(10), second.result(10))
        deadline = time.monotonic() + 10
        while any(t.name.startswith("aplex-") for t in threading.enumerate()):
            if time.monotonic() > deadline:
                print("the worker did not exit")
                break
            time.sleep(0.01)
        print("done")
        """,
        timeout=30,
    )
    assert done.stdout == "released 2\ndone\n", done.stdout + done.stderr


def test_a_garbage_collected_executor_is_shut_down_off_the_collecting_thread():
    release = threading.Event()
    executor = ThreadAsyncPoolExecutor(pool_size=1)
    future = executor.submit(works.wait_event, release)
    executor.cycle = executor
    with pytest.warns(ResourceWarning):
        del executor
        gc.collect()
    release.set()
    assert future.result(T) == "released"


# -- evil exceptions and objects ------------------------------------------------


def test_stop_iteration_from_a_plain_work_under_an_awaitable_executor():
    """asyncio refuses StopIteration in a future: it used to escape the
    loop's waker and leave every other future of the batch pending."""

    async def main():
        with ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as pool:
            futures = [pool.submit(works.identity, i) for i in range(10)]
            futures.append(pool.submit(works.raise_stop_iteration))
            futures += [pool.submit(works.identity, i) for i in range(10, 20)]
            with anyio.fail_after(T):
                return await asyncio.gather(*futures, return_exceptions=True)

    outcome = asyncio.run(main())
    assert outcome[:10] == list(range(10)) and outcome[11:] == list(range(10, 20))
    error = outcome[10]
    assert isinstance(error, RuntimeError) and "StopIteration" in str(error)
    assert isinstance(error.__cause__, StopIteration)


@pytest.mark.anyio
async def test_stop_iteration_through_run_and_async_map(anyio_backend):
    """Awaited, StopIteration and StopAsyncIteration become RuntimeError: the
    second would otherwise end an ``async for`` over map silently."""
    executor_class = (
        aplex_trio.ThreadAsyncPoolExecutor if anyio_backend == "trio" else ThreadAsyncPoolExecutor
    )
    kwargs = {} if anyio_backend == "trio" else {"awaitable": True}
    with executor_class(pool_size=1, **kwargs) as pool:
        with anyio.fail_after(T):
            with pytest.raises(RuntimeError, match="StopIteration") as caught:
                await pool.run(works.raise_stop_iteration)
            assert isinstance(caught.value.__cause__, StopIteration)
            with pytest.raises(RuntimeError, match="StopAsyncIteration"):
                async for _ in pool.map(works.async_stop_async_iteration_at, [1, 2, 3], [2] * 3):
                    pass


def test_stop_iteration_under_a_plain_executor_is_kept_as_it_is():
    """As concurrent.futures does: no await is in the way."""
    with ThreadAsyncPoolExecutor(pool_size=1) as pool:
        assert type(pool.submit(works.raise_stop_iteration).exception(T)) is StopIteration


def test_an_exception_that_cannot_travel_and_has_no_str_fails_its_work_alone():
    with ProcessAsyncPoolExecutor(pool_size=1) as pool:
        error = pool.submit(works.raise_unprintable).exception(T)
        assert isinstance(error, aplex.RemoteError)
        assert error.type_name == "tests.works.UnprintableError"
        assert "str() raised ValueError" in error.message
        assert pool.submit(works.add, 1, 1).result(T) == 2


def test_an_unpicklable_callable_whose_repr_raises_fails_its_work_alone():
    with ProcessAsyncPoolExecutor(pool_size=1) as pool:
        error = pool.submit(works.EvilRepr()).exception(T)
        assert isinstance(error, pickle.PicklingError)
        assert "EvilRepr object; its repr() raised RuntimeError" in str(error)
        assert pool.submit(works.add, 1, 1).result(T) == 2


def test_a_non_callable_whose_repr_raises_gets_a_type_error():
    with ThreadAsyncPoolExecutor(pool_size=1) as pool:
        with pytest.raises(TypeError, match="work must be callable, got <NotCallableEvilRepr"):
            pool.submit(works.NotCallableEvilRepr())


def test_future_loop_that_is_not_an_event_loop_raises_type_error_at_construction():
    before = set(threading.enumerate())
    with pytest.raises(TypeError, match="future_loop must be an asyncio event loop"):
        ThreadAsyncPoolExecutor(awaitable=True, future_loop=object())
    assert set(threading.enumerate()) <= before


# -- memory ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_large_argument_and_result_are_let_go_once_used():
    """200 MB sent and 200 MB received, then dropped: the parent holds
    neither (it used to keep about 600 MB: the last batches in the feeder
    and reader, and the work's arguments)."""
    done = run_program(
        """
        import gc

        import aplex
        from tests import works


        def rss_mb():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) // 1024


        with aplex.ProcessAsyncPoolExecutor(pool_size=1) as pool:
            pool.submit(works.add, 1, 1).result(30)
            before = rss_mb()
            payload = bytes(200 * 1024 * 1024)
            future = pool.submit(works.identity, payload)
            result = future.result(60)
            assert len(result) == len(payload)
            del payload, result, future
            # Another round trip: nothing of the first may wait for the next.
            pool.submit(works.add, 1, 1).result(30)
            gc.collect()
            print(rss_mb() - before)
        """,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout)
    assert grown < 150, f"the parent still holds {grown} MB"
