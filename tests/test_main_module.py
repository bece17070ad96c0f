"""Functions and classes of ``__main__`` in worker processes.

SPEC ("State"): they go by reference whenever a worker process has the main
module, so that module state lives once per worker, as with
``concurrent.futures``; by value (cloudpickle) only where the main module
cannot be imported. Each test runs a real script in a subprocess, as a user
would, with the fork server and with spawn.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import functools
    import json
    import sys
    import threading

    import aplex

    STATE = "unset"
    COUNTER = 0
    # Unpicklable: a function pickled by value would drag it along and fail.
    LOCK = threading.Lock()


    def initialize(value):
        global STATE
        STATE = value


    def read_state():
        return STATE


    async def async_read_state():
        return STATE


    def bump():
        global COUNTER
        with LOCK:
            COUNTER += 1
            return COUNTER


    @functools.lru_cache(maxsize=None)
    def square(x):
        return x * x


    def cache_hits(x):
        square(x)
        return square.cache_info().hits


    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y


    def mirror(point):
        return Point(point.y, point.x)


    def bump_after_reading(text):
        return len(text), bump()


    def fail():
        raise ValueError("raised in the script")  # FAIL LINE


    if __name__ == "__main__":
        with aplex.ProcessAsyncPoolExecutor(
            pool_size=1, mp_context=sys.argv[1], initializer=initialize, initargs=("w",)
        ) as pool:
            found = {
                "state": pool.submit(read_state).result(30),
                "async state": pool.submit(async_read_state).result(30),
                "counter": [pool.submit(bump).result(30) for _ in range(3)],
                "cache hits": [pool.submit(cache_hits, 3).result(30) for _ in range(3)],
                # A lambda goes by value, but the function it calls is the module's.
                "lambda": pool.submit(lambda: bump()).result(30),
                # A pickle large enough to go out of band: by reference still.
                "large": pool.submit(bump_after_reading, "x" * (1 << 20)).result(30),
                "map": list(pool.map(cache_hits, [3, 3], chunksize=2)),
            }
            point = pool.submit(mirror, Point(1, 2)).result(30)
            # The class came back as this module's own, not a copy of it.
            found["point"] = [type(point) is Point, point.x, point.y]
            found["traceback"] = str(pool.submit(fail).exception(30).__cause__)
        found["parent counter"] = COUNTER
        print(json.dumps(found))
    """
)


def run_script(tmp_path, method, run_as):
    module = tmp_path / "state_script.py"
    module.write_text(SCRIPT)
    command = [str(module)] if run_as == "file" else ["-m", "state_script"]
    done = subprocess.run(
        [sys.executable, *command, method],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), module


@pytest.mark.parametrize("run_as", ["file", "-m"])
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_main_module_state_lives_once_per_worker_as_with_concurrent_futures(
    tmp_path, method, run_as
):
    found, module = run_script(tmp_path, method, run_as)
    # What the initializer set is what the works see.
    assert found["state"] == found["async state"] == "w"
    # One module per worker: its globals persist from one work to the next,
    # and a module-level lock does not stop the function from being sent.
    assert found["counter"] == [1, 2, 3]
    assert found["lambda"] == 4
    assert found["large"] == [1 << 20, 5]
    # The cache is the worker's own, and it is hit.
    assert found["cache hits"] == [0, 1, 2]
    assert found["map"] == [3, 4]
    assert found["point"] == [True, 2, 1]
    assert found["parent counter"] == 0
    # The worker ran the script's own code: its traceback names the file and line.
    line = next(n for n, text in enumerate(SCRIPT.splitlines(), 1) if "# FAIL LINE" in text)
    assert f'File "{module}", line {line}, in fail' in found["traceback"]
    assert "ValueError: raised in the script" in found["traceback"]


FALLBACK_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import aplex

    STATE = "unset"
    COUNTER = 0


    def initialize(value):
        global STATE
        STATE = value


    def read_state():
        return STATE


    def bump():
        global COUNTER
        COUNTER += 1
        return COUNTER


    def bump_after_reading(text):
        return len(text), bump()


    if __name__ == "__main__":
        with aplex.ProcessAsyncPoolExecutor(
            pool_size=1, mp_context=sys.argv[1], initializer=initialize, initargs=("w",)
        ) as pool:
            found = {
                "state": pool.submit(read_state).result(30),
                "counter": [pool.submit(bump).result(30) for _ in range(3)],
                # A pickle large enough to go out of band: by value still.
                "large": pool.submit(bump_after_reading, "x" * (1 << 20)).result(30),
            }
        print(json.dumps(found))
    """
)


@pytest.mark.parametrize(
    ("run_as", "method"),
    # multiprocessing cannot start a spawn or fork server worker for a script
    # read from standard input (it looks for a file named "<stdin>").
    [("-c", "forkserver"), ("-c", "spawn"), ("stdin", "fork")],
)
def test_without_an_importable_main_module_functions_go_by_value(tmp_path, run_as, method):
    """``python -c`` and a script read from standard input have no main
    module a worker could import: their functions still run, by value, each
    call on fresh copies of the globals it uses (the documented fallback)."""
    command = ["-c", FALLBACK_SCRIPT] if run_as == "-c" else ["-"]
    done = subprocess.run(
        [sys.executable, *command, method],
        input=None if run_as == "-c" else FALLBACK_SCRIPT,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    # The initializer set its own copy of the globals, not the works'.
    assert found["state"] == "unset"
    assert found["counter"] == [1, 1, 1]
    assert found["large"] == [1 << 20, 1]
