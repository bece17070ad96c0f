"""A program that never shuts its executor down still exits cleanly.

SPEC: an executor alive when the interpreter exits shuts down on its own;
the works already submitted run to their end (as with concurrent.futures)
and every future ends. Each test runs a real program in a subprocess whose
works cannot end before its last line has run: they wait for a gate file
that the last line creates, so they are still running or waiting when the
interpreter starts to exit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import os
    import sys
    import time

    import anyio

    from aplex import {executor_class}

    GATE = {gate!r}


    async def coroutine_work(i):
        while not os.path.exists(GATE):
            await anyio.sleep(0.005)
        await anyio.sleep(0.05)
        return i * 10


    def plain_work(i):
        while not os.path.exists(GATE):
            time.sleep(0.005)
        return i * 10


    def report(future):
        # One write per line: callbacks run on several threads at once.
        sys.stdout.write(f"result {{future.result()}}\\n")
        sys.stdout.flush()


    if __name__ == "__main__":
        # Two workers, one work each at a time: two works run, three wait.
        executor = {executor_class}(pool_size=2, max_works_per_worker=1)
        for i, work in enumerate([coroutine_work, plain_work] * 2 + [coroutine_work]):
            executor.submit(work, i).add_done_callback(report)
        print("main done", flush=True)
        # The last line: from here on the works may end. No shutdown().
        open(GATE, "w").close()
        {last_line}
    """
)


def run_program(tmp_path, executor_class, last_line=""):
    script = tmp_path / "program.py"
    gate = tmp_path / "gate"
    script.write_text(
        PROGRAM.format(executor_class=executor_class, gate=str(gate), last_line=last_line)
    )
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=40,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("executor_class", ["ThreadAsyncPoolExecutor", "ProcessAsyncPoolExecutor"])
def test_a_live_executor_finishes_its_works_at_interpreter_exit_and_exits_cleanly(
    tmp_path, executor_class
):
    finished = run_program(tmp_path, executor_class)
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == ""
    lines = finished.stdout.splitlines()
    # Every work ended after the program's last line, with its result.
    assert lines[0] == "main done"
    assert sorted(lines[1:]) == sorted(f"result {i * 10}" for i in range(5))


def test_a_program_ending_on_its_own_error_still_finishes_the_works_and_shows_only_its_error(
    tmp_path,
):
    finished = run_program(
        tmp_path, "ThreadAsyncPoolExecutor", 'raise RuntimeError("the program\'s own error")'
    )
    assert finished.returncode == 1
    assert finished.stderr.count("Traceback") == 1
    assert finished.stderr.rstrip().endswith("RuntimeError: the program's own error")
    lines = finished.stdout.splitlines()
    assert lines[0] == "main done"
    assert sorted(lines[1:]) == sorted(f"result {i * 10}" for i in range(5))
