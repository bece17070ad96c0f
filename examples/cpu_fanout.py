"""CPU fan-out: split a CPU-bound job over worker processes.

Run it with ``python examples/cpu_fanout.py``. It counts the primes below
600,000 by trial division, first in this process, then split into 24 ranges
over a pool of worker processes, once with ``map`` (results in input order)
and once with ``submit`` and :func:`concurrent.futures.as_completed` (results
as they come: aplex futures are ``concurrent.futures`` futures).

A plain function holds its worker's event loop while it computes, so a
process pool runs at most ``pool_size`` of them at a time; that is the point
here: one busy process per core.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import aplex

LIMIT = 600_000
RANGES = 24


def count_primes(start: int, stop: int) -> int:
    """Count the primes in [start, stop): CPU-bound, pure Python."""
    count = 0
    for n in range(max(start, 2), stop):
        if n % 2 == 0:
            count += n == 2
            continue
        divisor = 3
        while divisor * divisor <= n:
            if n % divisor == 0:
                break
            divisor += 2
        else:
            count += 1
    return count


def main() -> None:
    step = LIMIT // RANGES
    starts = list(range(0, LIMIT, step))
    stops = [start + step for start in starts]

    started = time.perf_counter()
    serial = sum(map(count_primes, starts, stops))
    serial_time = time.perf_counter() - started

    workers = min(os.cpu_count() or 1, 4)
    with aplex.ProcessAsyncPoolExecutor(pool_size=workers) as pool:
        started = time.perf_counter()
        mapped = sum(pool.map(count_primes, starts, stops))
        map_time = time.perf_counter() - started

        futures = {pool.submit(count_primes, a, b): a for a, b in zip(starts, stops, strict=True)}
        first = next(concurrent.futures.as_completed(futures))
        total = sum(future.result() for future in concurrent.futures.as_completed(futures))

    assert serial == mapped == total
    print(f"primes below {LIMIT:,}: {serial}")
    print(f"one process: {serial_time:.2f} s; {workers} worker processes: {map_time:.2f} s")
    print(f"the first range back from submit(): the one starting at {futures[first]:,}")


if __name__ == "__main__":
    main()
