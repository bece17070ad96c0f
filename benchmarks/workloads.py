"""The workloads, written once for each family of system (see systems.py).

Every workload runs in a process that has imported the system's modules
first (see ``System.load``), as a program does at its start; ``import``
times that import alone, in a fresh interpreter. Every workload but start-up
first warms its pool with one work, so that it measures the steady state;
start-up measures exactly that first work.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import works
from .systems import AsyncSystem, NotApplicable, SyncSystem

MIB = 1 << 20
#: How many callers await at once when an async system is fed many works: a
#: deep enough pipeline for every system, without one task per work.
CALLERS = 1000


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    digits: int = 0


@dataclass(frozen=True)
class Workload:
    name: str
    metrics: tuple[Metric, ...]
    #: The workload's size: full run, --quick run.
    size: int
    quick_size: int
    run: Callable[[SyncSystem | AsyncSystem, int], dict[str, float]]


# -- either family ---------------------------------------------------------------


def _import(system: SyncSystem | AsyncSystem, size: int) -> dict[str, float]:
    """Import the system's modules in a fresh interpreter: what the other
    workloads, each in a process that has loaded them, leave out."""
    code = (
        "import importlib, time\n"
        "start = time.perf_counter()\n"
        f"for name in {system.modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print((time.perf_counter() - start) * 1e3)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return {"import_ms": float(output)}


# -- the workloads, sync family --------------------------------------------------


def _sync_startup(system: SyncSystem, size: int) -> dict[str, float]:
    start = time.perf_counter()
    pool = system.make_pool()
    system.submit(pool, works.identity, 1).result()
    system.close(pool)
    return {"startup_ms": (time.perf_counter() - start) * 1e3}


def _sync_tiny(system: SyncSystem, size: int) -> tuple[float, float]:
    pool = system.make_pool()
    try:
        system.submit(pool, works.identity, 0).result()
        clock = _Clock()
        futures = [system.submit(pool, works.identity, i) for i in range(size)]
        for future in futures:
            future.result()
        return clock.rate(size), clock.cpu_us(size)
    finally:
        system.close(pool)


def _sync_map(system: SyncSystem, size: int) -> dict[str, float]:
    pool = system.make_pool()
    try:
        system.submit(pool, works.identity, 0).result()
        clock = _Clock()
        count = sum(1 for _ in system.map(pool, works.identity, range(size), 256))
        assert count == size, count
        return {"map_per_s": clock.rate(size), "map_cpu_us": clock.cpu_us(size)}
    finally:
        system.close(pool)


def _sync_roundtrip(system: SyncSystem, size: int) -> dict[str, float]:
    pool = system.make_pool()
    try:
        for i in range(10):
            system.submit(pool, works.identity, i).result()
        times = []
        budget_end = time.perf_counter() + ROUNDTRIP_BUDGET_S
        for i in range(size):
            start = time.perf_counter()
            system.submit(pool, works.identity, i).result()
            times.append(time.perf_counter() - start)
            if start > budget_end and len(times) >= 20:
                break
        return _percentiles(times)
    finally:
        system.close(pool)


def _distinct_payloads(size: int) -> list[bytes]:
    """One payload object per work, as a real program sends: a single object
    sent many times would be pickled once per batch (pickle's memo), and
    measure nothing but the memo."""
    return [os.urandom(MIB) for _ in range(size)]


def _sync_payload(system: SyncSystem, size: int) -> dict[str, float]:
    payloads = _distinct_payloads(size)
    pool = system.make_pool()
    try:
        system.submit(pool, works.identity, 0).result()
        rate, cpu = _sync_echo(system, pool, payloads)
        return {"payload_mb_s": rate, "payload_cpu_us": cpu}
    finally:
        system.close(pool)


def _sync_echo(system: SyncSystem, pool: Any, payloads: list[Any]) -> tuple[float, float]:
    """Echo every payload at once: MB/s, and the caller's CPU per work (µs)."""
    clock = _Clock()
    futures = [system.submit(pool, works.echo, payload) for payload in payloads]
    for future, payload in zip(futures, payloads, strict=True):
        assert len(future.result()) == len(payload)
    return clock.rate(_bytes(payloads) / 1e6), clock.cpu_us(len(payloads))


def _sync_payloads(system: SyncSystem, size: int, make: Callable[..., Any]) -> dict[str, float]:
    families = _payload_families(size, make)
    pool = system.make_pool()
    try:
        # Warmed with the payloads' kind: a worker's first NumPy array
        # imports numpy there.
        system.submit(pool, works.echo, make(1024, 0)).result()
        return _keyed_family(families, lambda payloads: _sync_echo(system, pool, payloads))
    finally:
        system.close(pool)


def _sync_cpu(system: SyncSystem, size: int) -> dict[str, float]:
    tasks = 8
    start = time.perf_counter()
    for _ in range(tasks):
        works.cpu_burn(size)
    serial = time.perf_counter() - start
    pool = system.make_pool()
    try:
        system.submit(pool, works.identity, 0).result()
        start = time.perf_counter()
        futures = [system.submit(pool, works.cpu_burn, size) for _ in range(tasks)]
        for future in futures:
            future.result()
        return {"cpu_speedup": serial / (time.perf_counter() - start)}
    finally:
        system.close(pool)


def _sync_sleeps(system: SyncSystem, size: int) -> tuple[float, float]:
    if system.sleep_work is None:
        raise NotApplicable("runs no coroutines")
    pool = system.make_pool(concurrency=size)
    try:
        system.submit(pool, works.identity, 0).result()
        clock = _Clock()
        futures = [system.submit(pool, system.sleep_work, SLEEP_S) for _ in range(size)]
        for future in futures:
            future.result()
        return clock.elapsed(), clock.cpu_us(size)
    finally:
        system.close(pool)


def _sync_memory(system: SyncSystem, size: int) -> dict[str, float]:
    pool = system.make_pool()
    try:
        pid = system.submit(pool, works.worker_pid).result()
        return _rss_mib(pid)
    finally:
        system.close(pool)


# -- the workloads, async family -------------------------------------------------


def _run_async(system: AsyncSystem, main: Callable[[], Any]) -> Any:
    import anyio

    return anyio.run(main, backend=system.backend)


async def _call_many(system: AsyncSystem, handle: Any, fn: Callable[..., Any], args: list) -> None:
    """Await ``fn(arg)`` for every arg, CALLERS at a time."""
    import anyio

    async def caller(chunk: list) -> None:
        for arg in chunk:
            await system.call(handle, fn, arg)

    callers = min(CALLERS, len(args))
    async with anyio.create_task_group() as group:
        for index in range(callers):
            group.start_soon(caller, args[index::callers])


def _async_startup(system: AsyncSystem, size: int) -> dict[str, float]:
    async def main() -> None:
        async with system.open() as handle:
            await system.call(handle, works.identity, 1)

    start = time.perf_counter()
    _run_async(system, main)
    return {"startup_ms": (time.perf_counter() - start) * 1e3}


def _async_tiny(system: AsyncSystem, size: int) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        async with system.open() as handle:
            await system.call(handle, works.identity, 0)
            clock = _Clock()
            await _call_many(system, handle, works.identity, list(range(size)))
            return clock.rate(size), clock.cpu_us(size)

    return _run_async(system, main)


def _async_map(system: AsyncSystem, size: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        async with system.open() as handle:
            await system.call(handle, works.identity, 0)
            clock = _Clock()
            count = 0
            async for _ in system.amap(handle, works.identity, list(range(size)), 256):
                count += 1
            assert count == size, count
            return {"map_per_s": clock.rate(size), "map_cpu_us": clock.cpu_us(size)}

    return _run_async(system, main)


def _async_roundtrip(system: AsyncSystem, size: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        async with system.open() as handle:
            for i in range(10):
                await system.call(handle, works.identity, i)
            times = []
            budget_end = time.perf_counter() + ROUNDTRIP_BUDGET_S
            for i in range(size):
                start = time.perf_counter()
                await system.call(handle, works.identity, i)
                times.append(time.perf_counter() - start)
                if start > budget_end and len(times) >= 20:
                    break
            return _percentiles(times)

    return _run_async(system, main)


def _async_payload(system: AsyncSystem, size: int) -> dict[str, float]:
    payloads = _distinct_payloads(size)

    async def main() -> dict[str, float]:
        async with system.open() as handle:
            await system.call(handle, works.identity, 0)
            rate, cpu = await _async_echo(system, handle, payloads)
            return {"payload_mb_s": rate, "payload_cpu_us": cpu}

    return _run_async(system, main)


async def _async_echo(system: AsyncSystem, handle: Any, payloads: list[Any]) -> tuple[float, float]:
    clock = _Clock()
    await _call_many(system, handle, works.echo, payloads)
    return clock.rate(_bytes(payloads) / 1e6), clock.cpu_us(len(payloads))


def _async_payloads(system: AsyncSystem, size: int, make: Callable[..., Any]) -> dict[str, float]:
    families = _payload_families(size, make)

    async def main() -> dict[str, float]:
        metrics: dict[str, float] = {}
        async with system.open() as handle:
            await system.call(handle, works.echo, make(1024, 0))  # see _sync_payloads
            for key in list(families):
                rate, cpu = await _async_echo(system, handle, families.pop(key))
                metrics[f"{key}_mb_s"], metrics[f"{key}_cpu_us"] = rate, cpu
        return metrics

    return _run_async(system, main)


def _async_cpu(system: AsyncSystem, size: int) -> dict[str, float]:
    tasks = 8
    start = time.perf_counter()
    for _ in range(tasks):
        works.cpu_burn(size)
    serial = time.perf_counter() - start

    async def main() -> dict[str, float]:
        async with system.open() as handle:
            await system.call(handle, works.identity, 0)
            start = time.perf_counter()
            await _call_many(system, handle, works.cpu_burn, [size] * tasks)
            return {"cpu_speedup": serial / (time.perf_counter() - start)}

    return _run_async(system, main)


def _async_sleeps(system: AsyncSystem, size: int) -> tuple[float, float]:
    if not system.runs_coroutines:
        raise NotApplicable("runs no coroutines")

    async def main() -> tuple[float, float]:
        async with system.open(concurrency=size) as handle:
            await system.call(handle, works.identity, 0)
            clock = _Clock()
            await system.sleeps(handle, size, SLEEP_S)
            return clock.elapsed(), clock.cpu_us(size)

    return _run_async(system, main)


def _async_memory(system: AsyncSystem, size: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        async with system.open() as handle:
            return _rss_mib(await system.call(handle, works.worker_pid, None))

    return _run_async(system, main)


# -- the payload family ------------------------------------------------------------

#: The payload family's sizes, by the label of their metrics.
PAYLOAD_SIZES = {"1k": 1 << 10, "64k": 64 << 10, "1m": MIB, "16m": 16 * MIB}
#: Works per size at most, per MiB of the workload's size: the 1 KiB run
#: would otherwise be 65,536 works, minutes for the slowest peers.
PAYLOAD_WORKS_PER_MIB = 64


def _payload_families(size: int, make: Callable[[int, int], Any]) -> dict[str, list[Any]]:
    """For each payload size, distinct payloads (``make(nbytes, seed)``)
    moving about ``size`` MiB in all."""
    families = {}
    for label, nbytes in PAYLOAD_SIZES.items():
        count = max(2, min(size * PAYLOAD_WORKS_PER_MIB, size * MIB // nbytes))
        families[label] = [make(nbytes, seed) for seed in range(count)]
    return families


def _keyed_family(
    families: dict[str, list[Any]], echo: Callable[[list[Any]], tuple[float, float]]
) -> dict[str, float]:
    metrics = {}
    for label in list(families):
        rate, cpu = echo(families.pop(label))  # each size's payloads freed once sent
        metrics[f"{label}_mb_s"], metrics[f"{label}_cpu_us"] = rate, cpu
    return metrics


def _random_bytes(nbytes: int, seed: int) -> bytes:
    return os.urandom(nbytes)


def _random_array(nbytes: int, seed: int) -> Any:
    try:
        import numpy
    except ImportError:
        raise NotApplicable("numpy is not installed") from None
    return numpy.random.default_rng(seed).random(nbytes // 8)


def _bytes(payloads: list[Any]) -> int:
    return sum(memoryview(payload).nbytes for payload in payloads)


def _payloads(make: Callable[[int, int], Any], prefix: str) -> Callable:
    def run(system: SyncSystem | AsyncSystem, size: int) -> dict[str, float]:
        run_family = _sync_payloads if system.family == "sync" else _async_payloads
        metrics = run_family(system, size, make)  # type: ignore[arg-type]
        return {f"{prefix}_{key}": value for key, value in metrics.items()}

    return run


def _payload_metrics(prefix: str, kind: str) -> tuple[Metric, ...]:
    names = {"1k": "1 KiB", "64k": "64 KiB", "1m": "1 MiB", "16m": "16 MiB"}
    metrics = []
    for label, name in names.items():
        metrics.append(
            Metric(f"{prefix}_{label}_mb_s", f"{name} {kind} echoed ({{size}} MiB)", "MB/s", True)
        )
        metrics.append(
            Metric(f"{prefix}_{label}_cpu_us", f"caller's CPU per work, {name} {kind}", "µs", False)
        )
    return tuple(metrics)


# -- helpers -----------------------------------------------------------------------

#: A round-trip run stops after this long (some peers poll: ~10 ms a trip).
ROUNDTRIP_BUDGET_S = 3.0
#: What each coroutine of the sleep workloads sleeps: the ideal total time.
SLEEP_S = 0.2


def _percentiles(times: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {"rt_p50_us": cuts[49] * 1e6, "rt_p99_us": cuts[98] * 1e6}


def _rss_mib(pid: int) -> dict[str, float]:
    if pid == os.getpid():
        raise NotApplicable("thread workers share the caller's process")
    import psutil

    return {"worker_rss_mib": psutil.Process(pid).memory_info().rss / MIB}


def _by_family(sync: Callable, asynchronous: Callable) -> Callable:
    def run(system: SyncSystem | AsyncSystem, size: int) -> Any:
        return (sync if system.family == "sync" else asynchronous)(system, size)

    return run


def _keyed(key: str, cpu_key: str, run: Callable[[Any, int], tuple[float, float]]) -> Callable:
    def keyed(system: Any, size: int) -> dict[str, float]:
        value, cpu = run(system, size)
        return {key: value, cpu_key: cpu}

    return keyed


class _Clock:
    """Wall time, and this process's CPU time, from its making on."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def rate(self, amount: float) -> float:
        return amount / self.elapsed()

    def cpu_us(self, works: int) -> float:
        """The CPU time of this process (every thread of it) per work, in µs:
        what bounds how many workers one caller can feed."""
        return (time.process_time() - self._cpu) / works * 1e6


_tiny = _by_family(_sync_tiny, _async_tiny)
_sleeps = _by_family(_sync_sleeps, _async_sleeps)

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "import",
            (Metric("import_ms", "import: the system's modules", "ms", False, 0),),
            1,
            1,
            _import,
        ),
        Workload(
            "startup",
            (Metric("startup_ms", "start-up: pool, 1 work, shutdown", "ms", False, 0),),
            1,
            1,
            _by_family(_sync_startup, _async_startup),
        ),
        Workload(
            "tiny",
            (
                Metric("tiny_per_s", "tiny works, {size:,} submits", "works/s", True),
                Metric("tiny_cpu_us", "caller's CPU per work, tiny", "µs", False, 1),
            ),
            20_000,
            2_000,
            _keyed("tiny_per_s", "tiny_cpu_us", _tiny),
        ),
        Workload(
            "tiny-large",
            (
                Metric("tiny_large_per_s", "tiny works, {size:,} submits", "works/s", True),
                Metric(
                    "tiny_large_cpu_us", "caller's CPU per work, tiny ×{size:,}", "µs", False, 1
                ),
            ),
            200_000,
            20_000,
            _keyed("tiny_large_per_s", "tiny_large_cpu_us", _tiny),
        ),
        Workload(
            "map",
            (
                Metric("map_per_s", "map of {size:,}, chunksize 256", "items/s", True),
                Metric("map_cpu_us", "caller's CPU per item, map", "µs", False, 2),
            ),
            100_000,
            10_000,
            _by_family(_sync_map, _async_map),
        ),
        Workload(
            "roundtrip",
            (
                Metric("rt_p50_us", "round trip p50 (one work at a time)", "µs", False),
                Metric("rt_p99_us", "round trip p99", "µs", False),
            ),
            2_000,
            300,
            _by_family(_sync_roundtrip, _async_roundtrip),
        ),
        Workload(
            "payload",
            (
                Metric("payload_mb_s", "1 MiB payload echoed ×{size}", "MB/s", True),
                Metric("payload_cpu_us", "caller's CPU per work, payload", "µs", False),
            ),
            64,
            16,
            _by_family(_sync_payload, _async_payload),
        ),
        # Distinct bytes of 1 KiB to 16 MiB, then NumPy arrays ("n/a" without
        # numpy): each size moves about {size} MiB, in at most 64 works per MiB.
        Workload(
            "payloads",
            _payload_metrics("payloads", "bytes"),
            64,
            8,
            _payloads(_random_bytes, "payloads"),
        ),
        Workload(
            "payloads-numpy",
            _payload_metrics("payloads_np", "NumPy array"),
            64,
            8,
            _payloads(_random_array, "payloads_np"),
        ),
        Workload(
            "cpu",
            (Metric("cpu_speedup", "CPU-bound, 8 works: speed-up over serial", "×", True, 2),),
            2_000_000,
            500_000,
            _by_family(_sync_cpu, _async_cpu),
        ),
        Workload(
            "sleeps",
            (
                Metric("sleeps_s", "{size:,} coroutines × 0.2 s sleep", "s", False, 2),
                Metric("sleeps_cpu_us", "caller's CPU per work, sleeps", "µs", False, 1),
            ),
            20_000,
            2_000,
            _keyed("sleeps_s", "sleeps_cpu_us", _sleeps),
        ),
        Workload(
            "sleeps-large",
            (
                Metric("sleeps_large_s", "{size:,} coroutines × 0.2 s sleep", "s", False, 2),
                Metric(
                    "sleeps_large_cpu_us", "caller's CPU per work, sleeps ×{size:,}", "µs", False, 1
                ),
            ),
            100_000,
            10_000,
            _keyed("sleeps_large_s", "sleeps_large_cpu_us", _sleeps),
        ),
        Workload(
            "memory",
            (Metric("worker_rss_mib", "resident size of one worker", "MiB", False, 1),),
            1,
            1,
            _by_family(_sync_memory, _async_memory),
        ),
    ]
}
