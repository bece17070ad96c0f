"""A trio program: trio works in worker processes, awaited from trio.

Run it with ``python examples/trio_program.py`` (needs ``pip install trio``).
The executors of :mod:`aplex.backends.trio` hand out futures that trio code
awaits, and their workers run trio too, so the works are trio-native
coroutine functions. Shown here:

* ``await pool.submit(...)`` and ``async for`` over ``pool.map(...)``;
* works submitted from a nursery, many at once per worker;
* a per-work timeout with ``trio.move_on_after``: leaving the scope cancels
  the work in its worker process, where its ``finally`` block runs.
"""

from __future__ import annotations

import os
import sys

import trio

from aplex.backends.trio import ProcessAsyncPoolExecutor


async def where(item: int) -> tuple[int, int]:
    """Wait a little, then say which process ran the work."""
    await trio.sleep(0.1)
    return item, os.getpid()


async def stubborn() -> str:
    """A work that would take far too long: the caller times it out."""
    try:
        await trio.sleep(60)
        return "finished"
    finally:
        # Runs in the worker when the work is cancelled, at the same time as
        # the parent goes on: to stderr, so that the two processes' lines
        # cannot be interleaved on one stream.
        print(
            f"  [worker {os.getpid()}] stubborn work cancelled, cleaning up",
            file=sys.stderr,
            flush=True,
        )


async def main() -> None:
    async with ProcessAsyncPoolExecutor(pool_size=2) as pool:
        item, pid = await pool.submit(where, 0)
        print(f"awaited one future: item {item} ran in process {pid}")

        # 100 works of 0.1 s from a nursery: about 0.1 s, not 10 s.
        results: list[tuple[int, int]] = []

        async def run_one(item: int) -> None:
            results.append(await pool.run(where, item))

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for item in range(100):
                nursery.start_soon(run_one, item)
        pids = sorted({pid for _, pid in results})
        print(
            f"100 works from a nursery in {trio.current_time() - started:.2f} s, "
            f"over {len(pids)} worker processes"
        )

        squares = [item * item async for item, _ in pool.map(where, range(5))]
        print("async for over map:", squares)

        with trio.move_on_after(0.5) as scope:
            await pool.run(stubborn)
        print("timed out and cancelled:", scope.cancelled_caught)
    # Leaving `async with` waited for the workers to stop.
    print("pool shut down")


if __name__ == "__main__":
    trio.run(main)
