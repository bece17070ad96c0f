"""Every program in examples/ runs, as a user would run it, and says what it should.

The examples are found by glob, so a new one is run too, and fails until its
expected line is added to EXPECTED: the docs link to these programs, and a
program that no longer runs or no longer prints what the docs say must fail
the suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# A line each example prints when it did its job (a substring of its output).
EXPECTED = {
    "quickstart.py": "5,000 coroutine works of 0.2 s each: total 24995000",
    "crawler.py": "crawled 200 pages in",
    "cpu_fanout.py": "primes below 600,000: 49098",
    "trio_program.py": "timed out and cancelled: True",
    "library_run.py": "asyncio and trio got the same digests: True",
    "sticky_balancer.py": "StickyByKey: 5 profile loads for 60 works",
}

# Each runs in a few seconds alone; the bound is generous because the suite
# shares two cores with other jobs.
TIMEOUT = 50


def test_examples_are_found():
    """Guards against the glob silently finding nothing (a moved folder)."""
    assert {path.name for path in EXAMPLES} >= set(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(path: Path):
    expected = EXPECTED.get(path.name)
    assert expected is not None, (
        f"examples/{path.name} has no expected line: add one to EXPECTED in {__file__}"
    )
    # -W error: an example must not leave a never-awaited coroutine or an
    # executor that is not shut down (a ResourceWarning) behind.
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"examples/{path.name} failed:\n{output}"
    assert expected in completed.stdout, f"examples/{path.name} printed:\n{output}"
    assert "Traceback" not in completed.stderr, output
