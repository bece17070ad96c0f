"""What one round trip costs in each hand-off design, on bare pipes.

Usage::

    python -m benchmarks.roundtrip_floor            # 2,000 trips a design
    python -m benchmarks.roundtrip_floor --trips 500

A round trip is: a caller sends a small pickled message to a worker process,
the worker answers, the caller has the answer. Each design below adds one of
the hand-offs a pool pays on that path, so that the table shows the floor
each design sets, beside aplex's own round trip measured in the same run:

* ``direct``: the caller writes, the worker blocks in a read and writes
  back, the caller reads itself. Two wake-ups: the floor of any pool.
* ``worker loop``: the same with the worker waiting on an asyncio loop
  (``add_reader``), as a worker that runs coroutines must.
* ``reader thread``: the caller waits on a lock that a reader thread of its
  process releases once it has read the answer: the shape of a pool that
  reads results on a thread of its own (aplex, concurrent.futures).
* ``both``: a worker loop and a reader thread: aplex's shape.
* ``both, the caller reads``: the same, but the waiting caller reads the
  answer itself while the reader thread stands by (it waits on an epoll
  instance whose interest in the pipe the caller switches off meanwhile):
  the leader/follower design, which saves the reader thread's wake-up.
  Linux only.

Then aplex's own round trip, and ``anyio.to_process``'s, whose p50 sets
the suite's round-trip target (0.7 times it).

It needs nothing but the standard library and aplex. Numbers are
microseconds, p50 over the trips; lower is better.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import pickle
import select
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import works
from benchmarks.floors import interleaved_medians, print_table


def _serve_blocking(connection: Any) -> None:
    while True:
        message = pickle.loads(connection.recv_bytes())
        if message is None:
            return
        connection.send_bytes(pickle.dumps(message))


def _serve_on_loop(connection: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(connection.fileno(), readable.set)
        while True:
            await readable.wait()
            readable.clear()
            while connection.poll():
                message = pickle.loads(connection.recv_bytes())
                if message is None:
                    return
                connection.send_bytes(pickle.dumps(message))

    asyncio.run(main())


def _trips(trip: Callable[[int], None], count: int) -> float:
    for i in range(20):  # warm
        trip(i)
    times = []
    for i in range(count):
        start = time.perf_counter()
        trip(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _measure(serve: Callable[[Any], None], reader: str, count: int) -> float:
    """``reader``: "none" (the caller reads), "thread" (a reader thread hands
    the answer over) or "standby" (the caller reads, a reader thread stands by)."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=True)
    process = context.Process(target=serve, args=(child,))
    process.start()
    child.close()
    try:
        if reader == "none":

            def trip(i: int) -> None:
                parent.send_bytes(pickle.dumps(i))
                pickle.loads(parent.recv_bytes())

            return _trips(trip, count)
        if reader == "standby":
            return _standby_trips(parent, count)
        answered = threading.Lock()
        answered.acquire()
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                try:
                    pickle.loads(parent.recv_bytes())
                except EOFError:  # the worker has exited
                    return
                answered.release()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def trip(i: int) -> None:
            parent.send_bytes(pickle.dumps(i))
            answered.acquire()

        result = _trips(trip, count)
        stop.set()
        return result
    finally:
        parent.send_bytes(pickle.dumps(None))
        process.join(10)
        parent.close()


def _standby_trips(parent: Any, count: int) -> float:
    fd = parent.fileno()
    standby = select.epoll()
    standby.register(fd, select.EPOLLIN)
    reading = threading.Lock()
    stop = threading.Event()

    def read() -> None:
        readable = select.poll()
        readable.register(fd, select.POLLIN)
        while not stop.is_set():
            standby.poll(0.1)
            with reading:  # only what the caller left: nothing, here
                if readable.poll(0) and not stop.is_set():
                    pickle.loads(parent.recv_bytes())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def trip(i: int) -> None:
        # Before the request: else the reader thread could take the answer.
        with reading:
            standby.modify(fd, 0)
            parent.send_bytes(pickle.dumps(i))
            pickle.loads(parent.recv_bytes())
            standby.modify(fd, select.EPOLLIN)

    try:
        return _trips(trip, count)
    finally:
        stop.set()
        reader.join()
        standby.close()


def _aplex(count: int) -> float:
    import aplex

    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as pool:

        def trip(i: int) -> None:
            pool.submit(works.identity, i).result()

        return _trips(trip, count)


def _anyio_to_process(count: int) -> float:
    """The fastest peer on round trips in the suite's runs: its worker blocks
    in a read, its caller awaits the answer on its own event loop."""
    import anyio
    import anyio.to_process

    async def main() -> float:
        limiter = anyio.CapacityLimiter(1)
        for i in range(20):  # warm
            await anyio.to_process.run_sync(works.identity, i, limiter=limiter)
        times = []
        for i in range(count):
            start = time.perf_counter()
            await anyio.to_process.run_sync(works.identity, i, limiter=limiter)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e6

    return anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    designs: dict[str, Callable[[], float]] = {
        "direct": lambda: _measure(_serve_blocking, "none", options.trips),
        "worker loop": lambda: _measure(_serve_on_loop, "none", options.trips),
        "reader thread": lambda: _measure(_serve_blocking, "thread", options.trips),
        "both (aplex's shape)": lambda: _measure(_serve_on_loop, "thread", options.trips),
    }
    if hasattr(select, "epoll"):
        designs["both, the caller reads"] = lambda: _measure(
            _serve_on_loop, "standby", options.trips
        )
    designs["aplex ProcessAsyncPoolExecutor"] = lambda: _aplex(options.trips)
    designs["anyio.to_process (for the suite's target)"] = lambda: _anyio_to_process(options.trips)
    print_table("round trip p50 (µs)", interleaved_medians(designs, options.rounds))


if __name__ == "__main__":
    main()
