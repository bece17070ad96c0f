"""``python -m aplex bench``: a quick benchmark of aplex against the standard library.

aplex's process and thread executors against ``ProcessPoolExecutor`` (spawn)
and ``ThreadPoolExecutor``, pools of 2, on the workloads where a pool's own
overhead shows: start-up, many tiny works, ``map`` in chunks, one work at a
time, and (aplex only) many coroutines sleeping at once, against the ideal.

Each system runs each round in a fresh Python process, so none inherits
another's warm imports or threads; rounds are interleaved and the table
shows medians. Imports only the standard library and aplex. The full suite,
with every peer library, is ``python -m benchmarks.run`` in the repository.
"""

from __future__ import annotations

import asyncio
import compileall
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["main"]

POOL_SIZE = 2
#: What each coroutine of the sleep workload sleeps: its ideal total time.
SLEEP_S = 0.2
#: Seconds one system's round may take before it counts as failed.
CHILD_TIMEOUT_S = 120


@dataclass(frozen=True)
class _Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    digits: int
    #: Its size for a default run and for --quick.
    size: int
    quick_size: int


WORKLOADS = [
    _Workload("startup", "start-up: pool, 1 work, shutdown", "ms", False, 0, 1, 1),
    _Workload("tiny", "tiny works, {size:,} submits", "works/s", True, 0, 10_000, 2_000),
    _Workload("map", "map of {size:,}, chunksize 256", "items/s", True, 0, 50_000, 10_000),
    _Workload("roundtrip", "round trip p50, one work at a time", "µs", False, 0, 500, 200),
    _Workload(
        "sleeps", "{size:,} coroutines × 0.2 s sleep (vs ideal)", "s", False, 2, 10_000, 2_000
    ),
]

#: System name -> (its label, whether it runs coroutine works).
SYSTEMS: dict[str, tuple[str, bool]] = {
    "aplex-process": ("aplex process", True),
    "cf-spawn": ("ProcessPoolExecutor spawn", False),
    "aplex-thread": ("aplex thread", True),
    "cf-thread": ("ThreadPoolExecutor", False),
}
#: (aplex system, its standard-library peer): one ratio column each.
PAIRS = [("aplex-process", "cf-spawn"), ("aplex-thread", "cf-thread")]


# -- works: module-level, so every pool pickles them by reference -------------------


def identity(x: Any) -> Any:
    return x


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


# -- inside a child process: one system, every workload -----------------------------


def _pool_class(system: str) -> Any:
    """The system's executor class. Both packages load it on first use:
    _child asks for it before any clock, as a program imports its libraries
    once, at its start."""
    import aplex

    if system == "aplex-process":
        return aplex.ProcessAsyncPoolExecutor
    if system == "aplex-thread":
        return aplex.ThreadAsyncPoolExecutor
    if system == "cf-spawn":
        return concurrent.futures.ProcessPoolExecutor
    return concurrent.futures.ThreadPoolExecutor


def _make_pool(system: str, *, uncapped: bool = False) -> Any:
    pool_class = _pool_class(system)
    if system.startswith("aplex"):
        # The sleep workload runs every coroutine at once: no cap per worker.
        options: dict[str, Any] = {"max_works_per_worker": None} if uncapped else {}
        return pool_class(pool_size=POOL_SIZE, **options)
    if system == "cf-spawn":
        return pool_class(POOL_SIZE, mp_context=multiprocessing.get_context("spawn"))
    return pool_class(POOL_SIZE)


def _measure(system: str, key: str, size: int) -> float | None:
    runs_coroutines = SYSTEMS[system][1]
    if key == "startup":
        start = time.perf_counter()
        with _make_pool(system) as pool:
            pool.submit(identity, 1).result()
        return (time.perf_counter() - start) * 1e3
    if key == "sleeps" and not runs_coroutines:
        return None
    with _make_pool(system, uncapped=key == "sleeps") as pool:
        pool.submit(identity, 0).result()  # warm: steady state only
        if key == "tiny":
            start = time.perf_counter()
            futures = [pool.submit(identity, i) for i in range(size)]
            for future in futures:
                future.result()
            return size / (time.perf_counter() - start)
        if key == "map":
            start = time.perf_counter()
            for _ in pool.map(identity, range(size), chunksize=256):
                pass
            return size / (time.perf_counter() - start)
        if key == "roundtrip":
            times = []
            for i in range(size):
                start = time.perf_counter()
                pool.submit(identity, i).result()
                times.append(time.perf_counter() - start)
            return statistics.median(times) * 1e6
        start = time.perf_counter()
        futures = [pool.submit(sleep, SLEEP_S) for _ in range(size)]
        for future in futures:
            future.result()
        return time.perf_counter() - start


def _child(system: str, quick: bool) -> None:
    """Measure every workload on one system; one JSON line per workload."""
    _pool_class(system)
    for workload in WORKLOADS:
        size = workload.quick_size if quick else workload.size
        value = _measure(system, workload.key, size)
        print(json.dumps([workload.key, value]), flush=True)


# -- the parent: rounds, progress, table ------------------------------------------


def _run_system(system: str, quick: bool) -> Iterator[tuple[str, float | None]]:
    command = [
        sys.executable,
        "-c",
        "import sys; from aplex._bench import _child; _child(sys.argv[1], sys.argv[2] == 'quick')",
        system,
        "quick" if quick else "full",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        # A child that hangs is killed, which ends its output and so this loop.
        watchdog = threading.Timer(CHILD_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                key, value = json.loads(line)
                yield key, value
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()  # the caller stopped early
        if process.wait() != 0:
            raise RuntimeError(f"the {system} run failed (exit code {process.returncode})")


def run(rounds: int, quick: bool, progress: Callable[[str], None]) -> str:
    """Run the benchmark and return its Markdown table."""
    # The bytecode an installed package has: the standard library has its
    # own, and aplex run from a checkout with PYTHONDONTWRITEBYTECODE (or
    # installed editable) would otherwise be compiled from source in every
    # process, its fork server included, as part of its start-up.
    compileall.compile_dir(os.path.dirname(__file__), quiet=2)
    names = list(SYSTEMS)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    steps = rounds * len(names) * len(WORKLOADS)
    step = 0
    started = time.monotonic()
    for round_index in range(rounds):
        shift = round_index % len(names)
        for system in names[shift:] + names[:shift]:
            measurements = _run_system(system, quick)
            for workload in WORKLOADS:
                step += 1
                size = workload.quick_size if quick else workload.size
                progress(
                    f"[{step}/{steps}] round {round_index + 1}/{rounds}, {SYSTEMS[system][0]}: "
                    f"{workload.title.format(size=size)} ({time.monotonic() - started:.0f} s)"
                )
                measured = next(measurements, None)
                if measured is None:
                    break
                key, value = measured
                if value is not None:
                    results[system].setdefault(key, []).append(value)
            for _ in measurements:
                pass  # reaps the child; raises if it failed
            if measured is None:
                raise RuntimeError(f"the {system} run ended early")
    return _table(results, rounds, quick)


def _table(results: dict[str, dict[str, list[float]]], rounds: int, quick: bool) -> str:
    medians = {
        system: {key: statistics.median(values) for key, values in keyed.items()}
        for system, keyed in results.items()
    }
    header = ["workload", "unit"]
    for aplex, peer in PAIRS:
        header += [SYSTEMS[aplex][0], SYSTEMS[peer][0], "aplex ÷ stdlib"]
    lines = [
        f"aplex bench, {datetime.date.today().isoformat()}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({platform.system()} {platform.machine()}), "
        f"pools of {POOL_SIZE}, median of {rounds} round(s){', --quick' if quick else ''}.",
        "Rates: higher is better; times: lower is better. The coroutine sleeps run on "
        f"aplex only: their ratio is against the ideal, {SLEEP_S} s.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for workload in WORKLOADS:
        size = workload.quick_size if quick else workload.size
        cells = [workload.title.format(size=size), workload.unit]
        for aplex, peer in PAIRS:
            mine = medians[aplex].get(workload.key)
            theirs = medians[peer].get(workload.key)
            cells += [_format(mine, workload.digits), _format(theirs, workload.digits)]
            base = SLEEP_S if workload.key == "sleeps" else theirs
            cells.append("n/a" if mine is None or not base else f"{mine / base:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def main(rounds: int = 3, quick: bool = False) -> int:
    """Run the benchmark with a live progress line on stderr; print the table."""
    width = 0

    def progress(text: str) -> None:
        nonlocal width
        width = max(width, len(text))
        print(f"\r{text:<{width}}", end="", file=sys.stderr, flush=True)

    table = run(rounds, quick, progress)
    print(f"\r{'':<{width}}\r", end="", file=sys.stderr, flush=True)
    print(table)
    return 0
