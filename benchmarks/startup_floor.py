"""What a pool's start-up costs when its workers import what an AnyIO worker
must, beside aplex's own start-up, in the same run.

Usage::

    python -m benchmarks.startup_floor              # 7 rounds
    python -m benchmarks.startup_floor --rounds 3

Every design is timed as the suite's ``startup`` workload times it: make a
pool of 2, get one work's result, shut it down. Each measurement runs in a
fresh Python process, which has loaded aplex's and the standard library's
pool modules before the clock starts:

* ``spawn``: ``concurrent.futures.ProcessPoolExecutor`` on the spawn start
  method, the suite's yardstick for start-up.
* ``spawn, workers import asyncio and AnyIO``: the same, each worker
  importing, in its initializer, the modules any worker running coroutines
  on AnyIO's asyncio backend needs before its first work.
* ``forkserver preloading asyncio and AnyIO``: the same imports done once, in
  a fork server that then forks the workers: aplex's shape, with the
  standard library's pool.
* ``aplex ProcessAsyncPoolExecutor``.

Numbers are milliseconds, the median of the rounds; lower is better.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import works
from benchmarks.floors import interleaved_medians, print_table
from benchmarks.systems import POOL_SIZE, AplexProcess, StdlibProcess

#: What a worker on AnyIO's asyncio backend imports before it runs a work
#: (anyio.run() imports its backend module by that name).
ANYIO_WORKER_MODULES = ("asyncio", "anyio", "anyio._backends._asyncio")


def _import_anyio_worker() -> None:
    for name in ANYIO_WORKER_MODULES:
        importlib.import_module(name)


def _stdlib_pool(method: str, *, anyio_worker: bool) -> Any:
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context(method)
    if method == "forkserver" and anyio_worker:
        context.set_forkserver_preload(list(ANYIO_WORKER_MODULES))
        return ProcessPoolExecutor(POOL_SIZE, mp_context=context)
    initializer = _import_anyio_worker if anyio_worker else None
    return ProcessPoolExecutor(POOL_SIZE, mp_context=context, initializer=initializer)


def _aplex_pool() -> Any:
    import aplex

    return aplex.ProcessAsyncPoolExecutor(pool_size=POOL_SIZE)


DESIGNS: dict[str, Callable[[], Any]] = {
    "spawn": lambda: _stdlib_pool("spawn", anyio_worker=False),
    "spawn, workers import asyncio and AnyIO": lambda: _stdlib_pool("spawn", anyio_worker=True),
    "forkserver preloading asyncio and AnyIO": lambda: _stdlib_pool(
        "forkserver", anyio_worker=True
    ),
    "aplex ProcessAsyncPoolExecutor": _aplex_pool,
}


def _one(name: str) -> float:
    """Start-up of design ``name`` in this (fresh) process, in ms."""
    make_pool = DESIGNS[name]
    start = time.perf_counter()
    pool = make_pool()
    pool.submit(works.identity, 1).result()
    pool.shutdown()
    return (time.perf_counter() - start) * 1e3


def _in_fresh_process(name: str) -> float:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.startup_floor", "--one", name],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return float(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--one", choices=DESIGNS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        # Loaded before the clock, as the suite loads each system's modules.
        AplexProcess().load()
        StdlibProcess("spawn").load()
        print(_one(options.one))
        return
    from benchmarks.run import compile_as_installed

    compile_as_installed()
    designs = {name: (lambda name=name: _in_fresh_process(name)) for name in DESIGNS}
    print_table("start-up (ms)", interleaved_medians(designs, options.rounds))


if __name__ == "__main__":
    main()
