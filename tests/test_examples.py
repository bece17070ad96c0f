"""Every program in examples/ runs, as a user would run it, and says what it should;
so does every code block of the docs marked to be run.

The examples are found by glob, so a new one is run too, and fails until its
expected line is added to EXPECTED: the docs link to these programs, and a
program that no longer runs or no longer prints what the docs say must fail
the suite. In docs/*.md, a ``python`` code block right after a ``% test: run``
line (a MyST comment, which readers do not see) is a whole program, run the
same way.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
RUN_MARK = re.compile(r"^% test: run\n```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _doc_programs() -> list[tuple[str, str]]:
    programs = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        for match in RUN_MARK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # the fence's line
            programs.append((f"{page.name}:{line}", match.group(1)))
    return programs


DOC_PROGRAMS = _doc_programs()

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
    """Guards against the globs silently finding nothing (a moved folder, a
    changed mark)."""
    assert {path.name for path in EXAMPLES} >= set(EXPECTED)
    assert len(DOC_PROGRAMS) >= 10


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    # -W error: a program must not leave a never-awaited coroutine or an
    # executor that is not shut down (a ResourceWarning) behind.
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(path: Path):
    expected = EXPECTED.get(path.name)
    assert expected is not None, (
        f"examples/{path.name} has no expected line: add one to EXPECTED in {__file__}"
    )
    completed = _run([str(path)])
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"examples/{path.name} failed:\n{output}"
    assert expected in completed.stdout, f"examples/{path.name} printed:\n{output}"
    assert "Traceback" not in completed.stderr, output


@pytest.mark.parametrize(
    "source", [source for _, source in DOC_PROGRAMS], ids=[where for where, _ in DOC_PROGRAMS]
)
def test_doc_program_runs(source: str, tmp_path: Path):
    # From a file, not -c: process workers import the main module.
    program = tmp_path / "program.py"
    program.write_text(source)
    completed = _run([str(program)])
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"failed:\n{source}\n{output}"
    assert "Traceback" not in completed.stderr, output
