"""The backend registry: looking backends up by name, adding one, and
running without trio installed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aplex
import aplex.backends
from aplex.backends import Backend, get_backend, register_backend
from tests import works

TIMEOUT = 20
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry(monkeypatch):
    """Backends registered in a test are forgotten after it."""
    monkeypatch.setattr(aplex.backends, "_registry", dict(aplex.backends._registry))


class WrappedAsyncio:
    """A custom backend: asyncio's, under another name, counting its loops.

    Module level, so that a process executor can pickle it by reference.
    """

    name = "wrapped-asyncio"
    supports_loop_factory = True

    def __init__(self):
        self.loop_factories = []

    def run(self, main, *, loop_factory=None):
        self.loop_factories.append(loop_factory)
        get_backend("asyncio").run(main, loop_factory=loop_factory)

    def threadsafe_caller(self):
        return get_backend("asyncio").threadsafe_caller()


@pytest.mark.parametrize("name", ["asyncio", "trio"])
def test_builtin_backends_by_name(name):
    backend = get_backend(name)
    assert isinstance(backend, Backend)
    assert backend.name == name
    assert get_backend(name) is backend
    # Only asyncio workers take a loop factory (uvloop, say).
    assert backend.supports_loop_factory == (name == "asyncio")


def test_unknown_backend_error_names_it_and_how_to_get_one():
    """Guards the issue's promise that an unknown backend's error says what
    to do: it names the backend, lists the known ones, and says how to add
    another (there is no package to name for a backend nobody wrote)."""
    with pytest.raises(ValueError, match="unknown backend 'curio'") as info:
        get_backend("curio")
    message = str(info.value)
    assert "asyncio" in message and "trio" in message
    assert "register_backend" in message


def test_unknown_worker_backend_fails_at_construction():
    with pytest.raises(ValueError, match="unknown backend 'curio'"):
        aplex.ThreadAsyncPoolExecutor(pool_size=1, worker_backend="curio")


def test_worker_loop_factory_is_for_asyncio_workers_only():
    with pytest.raises(ValueError, match="worker_loop_factory does not apply to the 'trio'"):
        aplex.ThreadAsyncPoolExecutor(
            pool_size=1, worker_backend="trio", worker_loop_factory=asyncio.new_event_loop
        )


def test_register_rejects_what_is_not_a_backend(registry):
    with pytest.raises(TypeError, match="is not a Backend"):
        register_backend(object())


@pytest.mark.parametrize(
    "executor_class",
    [aplex.ThreadAsyncPoolExecutor, aplex.ProcessAsyncPoolExecutor],
    ids=["thread", "process"],
)
def test_registered_backend_runs_the_workers(registry, executor_class, tmp_path):
    backend = WrappedAsyncio()
    register_backend(backend)
    assert get_backend("wrapped-asyncio") is backend
    with executor_class(
        pool_size=2, worker_backend="wrapped-asyncio", worker_loop_factory=asyncio.new_event_loop
    ) as executor:
        assert executor.submit(works.async_add, 2, y=3).result(TIMEOUT) == 5
        library, pid, _ = executor.submit(works.async_where).result(TIMEOUT)
    assert library == "asyncio"
    if executor_class is aplex.ThreadAsyncPoolExecutor:
        # One loop per worker, each made by the factory the executor was given.
        assert backend.loop_factories == [asyncio.new_event_loop] * 2
        assert pid == os.getpid()
    else:
        # Each process ran its own copy of the backend.
        assert pid != os.getpid()


# Blocks any import of trio, as if it were not installed.
_WITHOUT_TRIO = """
import sys

class BlockTrio:
    def find_spec(self, name, path=None, target=None):
        if name == "trio" or name.startswith("trio."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockTrio())
"""


def test_aplex_works_on_asyncio_without_trio():
    script = _WITHOUT_TRIO + textwrap.dedent(
        """
        import asyncio

        import aplex
        from aplex.backends import get_backend
        from tests import works

        with aplex.ThreadAsyncPoolExecutor(pool_size=1) as executor:
            assert executor.submit(works.async_add, 2, y=3).result(20) == 5

        async def main():
            async with aplex.ThreadAsyncPoolExecutor(pool_size=1, awaitable=True) as executor:
                assert await executor.submit(works.add, 1, y=1) == 2
                assert await executor.run(works.async_add, 1, y=2) == 3

        asyncio.run(main())
        # Nothing above needed trio.
        assert "trio" not in sys.modules, "trio was imported"

        for attempt in (
            lambda: get_backend("trio"),
            lambda: aplex.ThreadAsyncPoolExecutor(pool_size=1, worker_backend="trio"),
        ):
            try:
                attempt()
            except ValueError as exc:
                print(exc)
            else:
                raise AssertionError("the trio backend loaded without trio")
        try:
            import aplex.backends.trio
        except ImportError:
            print("aplex.backends.trio needs trio")
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    hint = "backend 'trio' needs the trio package: pip install 'aplex[trio]'"
    assert result.stdout.splitlines() == [hint, hint, "aplex.backends.trio needs trio"]
