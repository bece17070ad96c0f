"""Helpers the tests share (the works that run inside workers are in works.py)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from aplex.load_balancers import LoadBalancer, RoundRobin

ROOT = Path(__file__).resolve().parents[1]
T = 10  # seconds to wait for what should take milliseconds: the machine is small and shared


def wait_until(predicate, timeout=T):
    """Wait for a state the test cannot be notified of (checked every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(0.005)


def worker_index(thread_name):
    """'aplex-pool3-ThreadWorker-1' -> 1."""
    return int(thread_name.rsplit("-", 1)[1])


T = 10


def new_threads(before):
    """The threads alive now that were not in ``before``."""
    return [thread for thread in threading.enumerate() if thread not in before]


def recording_balancer(base=RoundRobin):
    """A balancer class of the user's own that records every meta it is given."""
    seen = []

    class Recording(base):
        def get_proper_worker(self, load_balancing_meta):
            seen.append(load_balancing_meta)
            return super().get_proper_worker(load_balancing_meta)

    return Recording, seen


class Sticky(LoadBalancer):
    """Routes a work to the worker whose index is its load_balancing_meta."""

    def get_proper_worker(self, load_balancing_meta):
        return self.workers[load_balancing_meta]


# -- real processes: scripts run in a subprocess, and what they leave behind


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by whoever
    adopted it) counts as gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False
    return True


def wait_until_gone(pids: list[int], timeout: float = T) -> list[int]:
    """Return the pids still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def kill_leftovers(pids: list[int]) -> None:
    # Only when a test fails: the worker processes it started must not
    # outlive it.
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def start_script(source: str, path: Path | None = None) -> subprocess.Popen[bytes]:
    """Run ``source`` in a new Python: with ``-c``, or from the file ``path``
    (needed by multiprocessing's spawn, whose children import the main
    module again). It can import the tests' modules."""
    source = textwrap.dedent(source)
    if path is None:
        command = [sys.executable, "-c", source]
    else:
        path.write_text(source)
        command = [sys.executable, str(path)]
    # Its own session: a signal for its process group never reaches pytest.
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop_script(script: subprocess.Popen[bytes], pids: list[int]) -> None:
    """Leave nothing behind, whatever the test found (``with`` on the Popen
    then closes its pipes)."""
    if script.poll() is None:
        script.kill()
        script.wait(timeout=10)
    kill_leftovers(pids)


def read_line(process: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """Read one line of the script's output, or fail within ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line from the script; got {data!r}"
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            chunk = os.read(process.stdout.fileno(), 1)
            assert chunk, f"the script ended early: {process.communicate(timeout=10)}"
            data += chunk
    return data.decode()


def descendants(root: int | None = None) -> dict[int, str]:
    """The descendants of ``root`` (this process by default), pid to state letter."""
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces.
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        states[int(entry)], parents[int(entry)] = fields[0], int(fields[1])
    found: dict[int, str] = {}
    frontier = [os.getpid() if root is None else root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = states[pid]
                frontier.append(pid)
    return found
