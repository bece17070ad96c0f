"""What the floor experiments share: designs measured in interleaved rounds,
and a table of their medians.

Each floor experiment (``roundtrip_floor``, ``startup_floor``,
``sleeps_floor``) strips one workload down to what any design of its kind
must do, so that the table shows how much of aplex's figure is its own and
how much the floor under it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable


def interleaved_medians(designs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Measure every design once a round, round after round, so that the
    drifts of a shared machine spread over all of them; the median of each."""
    results: dict[str, list[float]] = {name: [] for name in designs}
    for _ in range(rounds):
        for name, measure in designs.items():
            results[name].append(measure())
    return {name: statistics.median(values) for name, values in results.items()}


def print_table(header: str, medians: dict[str, float], digits: int = 0) -> None:
    print(f"| design | {header} |")
    print("| --- | --- |")
    for name, value in medians.items():
        print(f"| {name} | {value:,.{digits}f} |")
