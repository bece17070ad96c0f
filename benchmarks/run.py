"""Run the benchmark suite and print one Markdown table.

Usage::

    python -m benchmarks.run                 # everything, 3 rounds
    python -m benchmarks.run --quick --rounds 1
    python -m benchmarks.run --systems aplex-process,cf-spawn --workloads tiny,map

Each (system, workload, round) runs in a fresh Python process, so no system
inherits another's warm caches, threads or imports. Rounds are interleaved:
every round runs every workload on every system before the next round
starts, with the systems in a rotated order, so slow drifts of a shared
machine spread over all systems. The table shows the median over rounds.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import faulthandler
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.systems import OPT_IN, PROCESS_PEERS, SYSTEMS, THREAD_PEERS, NotApplicable
from benchmarks.workloads import SLEEP_S, WORKLOADS, Metric

# Absolute imports: anyio.to_process re-runs this main module by path in its workers.
ROOT = Path(__file__).resolve().parent.parent

#: (target, metric key, aplex system, peers, comparison, bound): the
#: performance issue's targets first, then the earlier ones still held.
TARGETS = [
    ("tiny works per second ≥ 4× the fastest peer process pool",
     "tiny_per_s", "aplex-process", PROCESS_PEERS, ">=", 4.0),
    ("`map`, chunksize 256 ≥ 1.2× the fastest peer",
     "map_per_s", "aplex-process", PROCESS_PEERS, ">=", 1.2),
    ("round trip p50 ≤ 0.7× the fastest peer",
     "rt_p50_us", "aplex-process", PROCESS_PEERS, "<=", 0.7),
    ("distinct 1 MiB payloads ≥ 1.5× `concurrent.futures` with spawn",
     "payload_mb_s", "aplex-process", ["cf-spawn"], ">=", 1.5),
    ("start-up ≤ `concurrent.futures` with spawn",
     "startup_ms", "aplex-process", ["cf-spawn"], "<=", 1.0),
    ("coroutine sleeps ≤ 0.35× aiomultiprocess's time",
     "sleeps_s", "aplex-process", ["aiomultiprocess"], "<=", 0.35),
    ("CPU-bound speed-up ≥ 0.95× the best peer",
     "cpu_speedup", "aplex-process", PROCESS_PEERS, ">=", 0.95),
    ("thread executor, tiny works ≥ 1× `ThreadPoolExecutor`",
     "tiny_per_s", "aplex-thread", ["cf-thread"], ">=", 1.0),
    ("trio front end, tiny works via `run()` ≥ 3× trio-parallel",
     "tiny_per_s", "aplex-trio", ["trio-parallel"], ">=", 3.0),
]  # fmt: skip
#: The derived row: per-work cost of the large tiny-works run over the small one.
COST_KEY = "tiny_cost_ratio"
#: Environment variable: seconds after which a child dumps its stacks and exits.
_DUMP_AFTER = "BENCHMARKS_DUMP_AFTER"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="aplex against its peers; each run in a fresh process, rounds interleaved.",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--systems",
        default=",".join(name for name in SYSTEMS if name not in OPT_IN),
        help=f"comma-separated, of: {', '.join(SYSTEMS)} ({', '.join(OPT_IN)} only when named)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, of: {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 10×)")
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds per run before it counts as failed"
    )
    parser.add_argument("--output", type=Path, help="also write the Markdown to this file")
    parser.add_argument("--json", type=Path, help="also write every raw measurement here")
    parser.add_argument(
        "--child", nargs=3, metavar=("SYSTEM", "WORKLOAD", "SIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        return _child(*args.child)

    systems = _pick(args.systems, SYSTEMS, parser)
    workloads = _pick(args.workloads, WORKLOADS, parser)
    compile_as_installed()
    results: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
    notes: dict[tuple[str, str], str] = {}
    started = time.monotonic()
    total = args.rounds * len(systems) * len(workloads)
    done = 0
    for round_index in range(args.rounds):
        for workload_name in workloads:
            workload = WORKLOADS[workload_name]
            size = workload.quick_size if args.quick else workload.size
            shift = round_index % len(systems)
            for system in systems[shift:] + systems[:shift]:
                done += 1
                print(
                    f"\r[{done}/{total}] round {round_index + 1} {workload_name:<12} "
                    f"{system:<16} {time.monotonic() - started:6.0f} s ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                if (system, workload_name) in notes and notes[system, workload_name] == "n/a":
                    continue
                outcome = _run_child(system, workload_name, size, args.timeout)
                if isinstance(outcome, str):
                    notes[system, workload_name] = outcome
                    continue
                for key, value in outcome.items():
                    results[system].setdefault(key, []).append(value)
    print(file=sys.stderr)
    markdown = report(results, notes, systems, workloads, args.rounds, args.quick)
    print(markdown)
    if args.output:
        args.output.write_text(markdown + "\n")
    if args.json:
        raw = {"results": results, "notes": {" ".join(key): note for key, note in notes.items()}}
        args.json.write_text(json.dumps(raw, indent=1))
    return 0


def compile_as_installed() -> None:
    """Write the bytecode of aplex and of these benchmarks, as installing a
    package does: the peers come installed, compiled, and a checkout run with
    PYTHONDONTWRITEBYTECODE (or an editable install) would otherwise compile
    aplex from source in every process, its fork server included, and charge
    that to aplex's start-up."""
    import aplex

    for package in (Path(aplex.__file__).parent, ROOT / "benchmarks"):
        compileall.compile_dir(package, quiet=2)


def _pick(text: str, known: dict, parser: argparse.ArgumentParser) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _run_child(system: str, workload: str, size: int, timeout: float) -> dict[str, float] | str:
    """Return the run's measurements, or the note its cell shows instead."""
    command = [sys.executable, "-m", "benchmarks.run", "--child", system, workload, str(size)]
    try:
        process = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, _DUMP_AFTER: str(max(1.0, timeout - 10))},
        )
    except subprocess.TimeoutExpired as timed_out:
        # The child dumped its threads' stacks just before (see _child): show them.
        stderr = timed_out.stderr or b""
        stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        print(f"\n{system} {workload}: timed out after {timeout} s", file=sys.stderr)
        print(stderr[-6000:], file=sys.stderr)
        return "timeout"
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        print(f"\n{system} {workload} failed:\n{process.stderr[-2000:]}", file=sys.stderr)
        return "error"
    outcome = json.loads(lines[-1])
    return outcome.get("metrics") or outcome["note"]


def _child(system_name: str, workload_name: str, size: str) -> int:
    if _DUMP_AFTER in os.environ:
        # A run that hangs dumps every thread's stack and exits, before the
        # parent's timeout: the parent shows the dump.
        faulthandler.dump_traceback_later(float(os.environ[_DUMP_AFTER]), exit=True)
    system = SYSTEMS[system_name]()
    system.load()  # as a program does at its start, before any clock
    try:
        metrics = WORKLOADS[workload_name].run(system, int(size))
    except NotApplicable:
        print(json.dumps({"note": "n/a"}))
    else:
        print(json.dumps({"metrics": metrics}))
    return 0


# -- the report ---------------------------------------------------------------------


def report(
    results: dict[str, dict[str, list[float]]],
    notes: dict[tuple[str, str], str],
    systems: list[str],
    workloads: list[str],
    rounds: int,
    quick: bool,
) -> str:
    labels = {name: SYSTEMS[name]().label for name in systems}
    medians = {
        system: {key: statistics.median(values) for key, values in keyed.items()}
        for system, keyed in results.items()
    }
    for keyed in medians.values():
        if "tiny_per_s" in keyed and "tiny_large_per_s" in keyed:
            keyed[COST_KEY] = keyed["tiny_per_s"] / keyed["tiny_large_per_s"]
    rows: list[tuple[Metric, str]] = []
    for name in workloads:
        workload = WORKLOADS[name]
        size = workload.quick_size if quick else workload.size
        rows.extend((metric, name) for metric in workload.metrics)
        if name == "tiny-large" and "tiny" in workloads:
            cost = Metric(COST_KEY, "per-work cost, large ÷ small run", "×", False, 2)
            rows.append((cost, name))
        del size

    header = (
        ["workload", "unit"]
        + [labels[s] for s in systems]
        + ["fastest process peer", "aplex process ÷ it", "fastest thread peer", "aplex thread ÷ it"]
    )
    lines = [
        f"Date {datetime.date.today().isoformat()}; {os.cpu_count()} cores; "
        f"Python {platform.python_version()} ({platform.system()} {platform.machine()}); "
        f"pool of 2; median of {rounds} round(s){'; --quick sizes' if quick else ''}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for metric, workload_name in rows:
        workload = WORKLOADS[workload_name]
        size = workload.quick_size if quick else workload.size
        cells = [metric.title.format(size=size), metric.unit]
        for system in systems:
            value = medians[system].get(metric.key)
            note = notes.get((system, workload_name), "n/a")
            cells.append(note if value is None else _format(value, metric))
        for aplex, peers in (("aplex-process", PROCESS_PEERS), ("aplex-thread", THREAD_PEERS)):
            best = _best(medians, metric, [p for p in peers if p in systems])
            mine = medians.get(aplex, {}).get(metric.key)
            if best is None or metric.key == COST_KEY:
                cells += ["", ""]
                continue
            cells.append(f"{labels[best[0]]} {_format(best[1], metric)}")
            cells.append("" if mine is None or not best[1] else f"{mine / best[1]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_targets(medians, labels)]
    return "\n".join(lines)


def _best(medians: dict, metric: Metric, peers: list[str]) -> tuple[str, float] | None:
    values = [(peer, medians[peer][metric.key]) for peer in peers if metric.key in medians[peer]]
    if not values:
        return None
    pick = max if metric.higher_is_better else min
    return pick(values, key=lambda item: item[1])


def _targets(medians: dict, labels: dict[str, str]) -> list[str]:
    lines = ["| target | measured | met |", "| --- | --- | --- |"]
    for title, key, aplex, peers, comparison, bound in TARGETS:
        metric = next(m for w in WORKLOADS.values() for m in w.metrics if m.key == key)
        mine = medians.get(aplex, {}).get(key)
        best = _best(medians, metric, [p for p in peers if p in medians])
        if mine is None or best is None:
            lines.append(f"| {title} | not measured | |")
            continue
        ratio = mine / best[1]
        met = ratio >= bound if comparison == ">=" else ratio <= bound
        lines.append(
            f"| {title} | {ratio:.2f}× ({labels[aplex]} {_format(mine, metric)} vs "
            f"{labels[best[0]]} {_format(best[1], metric)} {metric.unit}) | "
            f"{'met' if met else 'not met'} |"
        )
    cost = medians.get("aplex-process", {}).get(COST_KEY)
    if cost is not None:
        lines.append(
            f"| 200,000 vs 20,000 tiny works: per-work cost ≤ 1.1× | {cost:.2f}× | "
            f"{'met' if cost <= 1.1 else 'not met'} |"
        )
    sleeps = medians.get("aplex-process", {}).get("sleeps_s")
    if sleeps is not None:
        lines.append(
            f"| 20,000 coroutine sleeps ≤ 0.3 s (ideal {SLEEP_S} s) | {sleeps:.2f} s "
            f"({sleeps / SLEEP_S:.2f}× the ideal) | {'met' if sleeps <= 0.3 else 'not met'} |"
        )
    return lines


def _format(value: float, metric: Metric) -> str:
    return f"{value:,.{metric.digits}f}"


if __name__ == "__main__":
    sys.exit(main())
