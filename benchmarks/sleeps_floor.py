"""What many coroutine sleeps cost on bare asyncio loops, beside aplex's own
figure for the same sleeps, in the same run.

Usage::

    python -m benchmarks.sleeps_floor                  # 20,000 sleeps
    python -m benchmarks.sleeps_floor --sleeps 100000

The suite's ``sleeps`` workload: that many coroutines each ``await
asyncio.sleep(0.2)`` at once, in a pool of 2; the ideal is 0.2 s. Each
design below keeps one part of what a pool must do for them:

* ``one loop, every sleep``: one asyncio loop in this process runs them
  all as tasks, and nothing else: the cost of the tasks themselves.
* ``2 processes, a share each``: two processes started beforehand, each
  running half of the sleeps as tasks on its own loop, told to start at
  once: the floor for a pool of 2 whose caller costs nothing.
* ``the caller's part``: what the caller of a pool must do per work, with
  no worker: make a future (aplex's :class:`~aplex.ConcurrentFuture`),
  pickle the calls in batches of 1,000, load a batch of results for each
  and set every future's result. Seconds for all of them, in this process.
* ``aplex ProcessAsyncPoolExecutor``: the suite's workload itself.

It needs nothing but the standard library and aplex. Numbers are seconds,
the median of the rounds; lower is better.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import pickle
import time
from typing import Any

from benchmarks import works
from benchmarks.floors import interleaved_medians, print_table
from benchmarks.systems import POOL_SIZE, AplexProcess
from benchmarks.workloads import SLEEP_S, WORKLOADS

#: Works pickled, and results loaded, together in the caller's part.
BATCH = 1000


async def _sleep_all(count: int) -> None:
    left = count
    done = asyncio.Event()

    def one_done(_: object) -> None:
        nonlocal left
        left -= 1
        if not left:
            done.set()

    loop = asyncio.get_running_loop()
    for _ in range(count):
        loop.create_task(works.asyncio_sleep(SLEEP_S)).add_done_callback(one_done)
    await done.wait()


def _one_loop(count: int) -> float:
    start = time.perf_counter()
    asyncio.run(_sleep_all(count))
    return time.perf_counter() - start


def _sleeper(connection: Any, count: int) -> None:
    connection.send("ready")
    connection.recv()
    asyncio.run(_sleep_all(count))
    connection.send("done")


def _processes(count: int) -> float:
    context = multiprocessing.get_context("spawn")
    connections = []
    processes = []
    for index in range(POOL_SIZE):
        share = count // POOL_SIZE + (index < count % POOL_SIZE)
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_sleeper, args=(child_end, share))
        process.start()
        child_end.close()
        connections.append(parent_end)
        processes.append(process)
    for connection in connections:
        assert connection.recv() == "ready"
    start = time.perf_counter()
    for connection in connections:
        connection.send("go")
    for connection in connections:
        assert connection.recv() == "done"
    elapsed = time.perf_counter() - start
    for process in processes:
        process.join(10)
    return elapsed


def _callers_part(count: int) -> float:
    from aplex import ConcurrentFuture

    start = time.perf_counter()
    futures: dict[int, ConcurrentFuture[None]] = {}
    batches = []
    batch: list[tuple[Any, ...]] = []
    for work_id in range(count):
        futures[work_id] = ConcurrentFuture()
        batch.append((work_id, works.asyncio_sleep, (SLEEP_S,), {}))
        if len(batch) == BATCH or work_id == count - 1:
            batches.append(pickle.dumps(batch, protocol=5))
            batch = []
    # What the workers would send back, made outside the clock.
    elapsed = time.perf_counter() - start
    answers = [
        pickle.dumps([(item[0], None) for item in pickle.loads(data)], protocol=5)
        for data in batches
    ]
    start = time.perf_counter()
    for data in answers:
        for work_id, result in pickle.loads(data):
            futures.pop(work_id).set_result(result)
    return elapsed + time.perf_counter() - start


def _aplex(count: int) -> float:
    system = AplexProcess()
    system.load()
    return WORKLOADS["sleeps"].run(system, count)["sleeps_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sleeps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    count = options.sleeps
    designs = {
        "one loop, every sleep": lambda: _one_loop(count),
        f"{POOL_SIZE} processes, a share each": lambda: _processes(count),
        "the caller's part": lambda: _callers_part(count),
        "aplex ProcessAsyncPoolExecutor": lambda: _aplex(count),
    }
    medians = interleaved_medians(designs, options.rounds)
    print_table(f"{count:,} sleeps of {SLEEP_S} s (s)", medians, digits=3)


if __name__ == "__main__":
    main()
