"""Quickstart: the main job of aplex in one screen.

Run it with ``python examples/quickstart.py``. It fans CPU-bound work out
over worker processes, runs thousands of I/O-bound coroutines at once on a
couple of worker threads, and awaits both from asyncio.
"""

from __future__ import annotations

import asyncio
import time

import aplex


def count_primes(limit: int) -> int:
    """CPU-bound: a plain function, run in a worker process."""
    return sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(2, limit))


async def fetch(item: int) -> int:
    """I/O-bound: a coroutine; thousands run at once on each worker's loop."""
    await asyncio.sleep(0.2)  # stands in for a network call
    return item * 2


def main() -> None:
    # Plain code: the concurrent.futures interface you know.
    with aplex.ProcessAsyncPoolExecutor(pool_size=2) as pool:
        started = time.perf_counter()
        primes = list(pool.map(count_primes, [150_000] * 4))
        print(
            f"primes below 150,000, four times over two processes: {primes} "
            f"in {time.perf_counter() - started:.2f} s"
        )

    # 5,000 coroutines that each wait 0.2 s: about 0.2 s in all, not 1,000 s.
    with aplex.ThreadAsyncPoolExecutor(pool_size=2, max_works_per_worker=None) as pool:
        started = time.perf_counter()
        futures = [pool.submit(fetch, i) for i in range(5_000)]
        total = sum(future.result() for future in futures)
        print(
            f"5,000 coroutine works of 0.2 s each: total {total} "
            f"in {time.perf_counter() - started:.2f} s"
        )

    # asyncio: awaitable futures, and an async map.
    async def from_asyncio() -> None:
        async with aplex.ThreadAsyncPoolExecutor(pool_size=2, awaitable=True) as pool:
            print("awaited from asyncio:", await pool.submit(fetch, 21))
            print("async map:", [value async for value in pool.map(fetch, range(5))])

    asyncio.run(from_asyncio())


if __name__ == "__main__":
    main()
