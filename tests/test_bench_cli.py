"""``python -m aplex``: the command line, and the quick benchmark users run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from aplex import _bench


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(
        [sys.executable, "-m", "aplex", *args], capture_output=True, timeout=timeout, check=False
    )
    # Decoded by hand: text mode would turn the progress line's "\r" into "\n".
    process.stdout = process.stdout.decode()
    process.stderr = process.stderr.decode()
    return process


def _rows(table: str) -> dict[str, list[str]]:
    """Map each body row's first cell to its cells."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith(("| workload", "| ---")):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def test_bench_quick_prints_every_row_with_numeric_ratios():
    """Guards the README's main-job command: it ends, prints the whole table on
    stdout with a ratio per pair, and its progress goes to stderr only."""
    process = _run("bench", "--quick", "--rounds", "1", timeout=50)
    assert process.returncode == 0, process.stderr

    out = process.stdout
    assert f"{os.cpu_count()} cores" in out
    assert f"Python {platform.python_version()}" in out
    header = next(line for line in out.splitlines() if line.startswith("| workload"))
    for label in ("aplex process", "ProcessPoolExecutor spawn", "aplex thread"):
        assert label in header
    assert header.count("aplex ÷ stdlib") == 2

    rows = _rows(out)
    expected = [w.title.format(size=w.quick_size) for w in _bench.WORKLOADS]
    assert sorted(rows) == sorted(expected)
    for title, cells in rows.items():
        # workload, unit, then per pair: aplex, stdlib, ratio.
        assert len(cells) == 8, cells
        for ratio in (cells[4], cells[7]):
            assert float(ratio) > 0, (title, ratio)
        assert float(cells[2].replace(",", "")) > 0, cells  # aplex process measured
        assert float(cells[5].replace(",", "")) > 0, cells  # aplex thread measured
    sleeps = next(cells for title, cells in rows.items() if "sleep" in title)
    assert sleeps[3] == sleeps[6] == "n/a"  # the standard library runs no coroutines

    # The live progress line is redrawn in place on stderr, never on stdout.
    assert "\r[" in process.stderr
    assert "\r" not in out


def test_help_lists_the_bench_command():
    process = _run("--help", timeout=20)
    assert process.returncode == 0, process.stderr
    assert "bench" in process.stdout

    process = _run("bench", "--help", timeout=20)
    assert process.returncode == 0, process.stderr
    assert "--rounds" in process.stdout and "--quick" in process.stdout


@pytest.mark.parametrize("args", [["bench", "--rounds", "0"], ["nonsense"], []])
def test_bad_command_lines_fail_with_usage(args):
    process = _run(*args, timeout=20)
    assert process.returncode == 2
    assert "usage:" in process.stderr
