"""A library function that offloads work with ``await pool.run()``.

Run it with ``python examples/library_run.py``. ``digest_files`` stands for a
library's API: it hashes blobs in worker processes and knows nothing of the
event loop its caller runs. ``pool.run()`` detects the caller's loop when it
is called, and AnyIO's task group (AnyIO comes with aplex) runs the calls
concurrently on asyncio and trio alike. The same function is then called
from an asyncio program and from a trio program, on one executor.

Cancellation crosses the same way: when the caller gives up (here a
timeout), the works still running in the workers are cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib

import anyio
import trio

import aplex

# -- the library ---------------------------------------------------------------


def _sha256(data: bytes, rounds: int) -> str:
    """CPU-bound: runs in a worker process."""
    for _ in range(rounds):
        data = hashlib.sha256(data).digest()
    return data.hex()[:16]


async def _slow_sha256(data: bytes, delay: float) -> str:
    """A work that waits (on the worker's loop) before hashing."""
    await anyio.sleep(delay)
    return _sha256(data, 1)


async def digest_files(
    pool: aplex.ProcessAsyncPoolExecutor, blobs: list[bytes], *, delay: float = 0
) -> list[str]:
    """Hash every blob in the pool's workers, concurrently, from any event loop."""
    digests = [""] * len(blobs)

    async def digest(index: int, blob: bytes) -> None:
        if delay:
            digests[index] = await pool.run(_slow_sha256, blob, delay)
        else:
            digests[index] = await pool.run(_sha256, blob, 20_000)

    async with anyio.create_task_group() as task_group:
        for index, blob in enumerate(blobs):
            task_group.start_soon(digest, index, blob)
    return digests


# -- two applications using it -------------------------------------------------

BLOBS = [f"file {n}".encode() for n in range(8)]


async def asyncio_app(pool: aplex.ProcessAsyncPoolExecutor) -> list[str]:
    digests = await digest_files(pool, BLOBS)
    try:
        await asyncio.wait_for(digest_files(pool, BLOBS, delay=30), timeout=0.3)
    except asyncio.TimeoutError:  # the built-in TimeoutError from Python 3.11 on
        print("asyncio: gave up after 0.3 s; the slow works were cancelled")
    return digests


async def trio_app(pool: aplex.ProcessAsyncPoolExecutor) -> list[str]:
    digests = await digest_files(pool, BLOBS)
    with trio.move_on_after(0.3) as scope:
        await digest_files(pool, BLOBS, delay=30)
    if scope.cancelled_caught:
        print("trio: gave up after 0.3 s; the slow works were cancelled")
    return digests


def main() -> None:
    # The pool belongs to neither loop: it is made and shut down in plain code.
    with aplex.ProcessAsyncPoolExecutor(pool_size=2) as pool:
        from_asyncio = asyncio.run(asyncio_app(pool))
        from_trio = trio.run(trio_app, pool)
        statistics = pool.statistics()
    print("first digests:", ", ".join(from_asyncio[:3]))
    print("asyncio and trio got the same digests:", from_asyncio == from_trio)
    print(f"works completed: {statistics.completed}, cancelled: {statistics.cancelled}")


if __name__ == "__main__":
    main()
