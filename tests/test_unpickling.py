"""What pickles but cannot be unpickled where it arrives fails one work.

SPEC: unpickling failures in either direction fail that one work; the
executor goes on serving. An argument whose class the worker cannot import,
or whose reconstructor raises there; a result or an exception the parent
cannot load. Batches are pickled whole for speed: the neighbours of the
failing item, in its batch, must not be lost with it.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from concurrent.futures import CancelledError
from multiprocessing import Pipe

import anyio
import pytest

import aplex
from tests import works
from tests.test_process_failures import TIMEOUT, assert_serves


@pytest.fixture
def phantom(monkeypatch):
    """An object of a class the parent imported and a worker cannot: the
    standard pickle sends it by reference to a module that exists only here."""
    module = types.ModuleType("aplex_phantom")

    class Phantom:
        pass

    Phantom.__module__ = module.__name__
    Phantom.__qualname__ = "Phantom"
    module.Phantom = Phantom
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return Phantom()


def unloadable_argument(kind, phantom):
    if kind == "unimportable class":
        return phantom, "No module named 'aplex_phantom'"
    return works.LoadsOnlyIn(os.getpid(), 1), f"refuses to load outside process {os.getpid()}"


KINDS = ["unimportable class", "raising reconstructor"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_argument_the_worker_cannot_load_fails_its_work_alone(kind, phantom):
    argument, reason = unloadable_argument(kind, phantom)
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        future = executor.submit(works.identity, argument)
        with pytest.raises(pickle.UnpicklingError) as caught:
            future.result(TIMEOUT)
        message = str(caught.value)
        assert "work tests.works.identity could not be loaded in its worker" in message
        assert reason in message
        if kind == "raising reconstructor":
            assert "_load_only_in" in message  # which reconstructor raised
        assert "Traceback" in str(caught.value.__cause__)  # the worker's
        assert_serves(executor)
        statistics = executor.statistics()
        assert (statistics.failed, statistics.completed) == (1, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_a_work_the_worker_cannot_load_among_others_of_its_batch_loses_none_of_them(
    kind, phantom, tmp_path
):
    """Guards against a batch that could not be loaded killing its worker:
    the pool broke and every work of the batch was lost. While the worker's
    loop is blocked, works, a cancel and the stop queue up and go to it
    together; each work that loads must run, the cancel and the stop must
    still take effect."""
    argument, reason = unloadable_argument(kind, phantom)
    started, release = tmp_path / "started", tmp_path / "release"
    executor = aplex.ProcessAsyncPoolExecutor(pool_size=1)
    try:
        blocker = executor.submit(works.plain_until_file, str(started), str(release), "blocker")
        while not started.exists():
            pass
        before = [executor.submit(works.add, i, y=100) for i in range(20)]
        to_cancel = executor.submit(works.async_sleep, 60, "not cancelled")
        bad = executor.submit(works.identity, argument)
        after = [executor.submit(works.add, i, y=200) for i in range(20)]
        assert to_cancel.cancel()
        executor.shutdown(wait=False)
        release.touch()
        assert blocker.result(TIMEOUT) == "blocker"
        assert [future.result(TIMEOUT) for future in before] == [i + 100 for i in range(20)]
        assert [future.result(TIMEOUT) for future in after] == [i + 200 for i in range(20)]
        with pytest.raises(pickle.UnpicklingError, match=reason):
            bad.result(TIMEOUT)
        with pytest.raises(CancelledError):
            to_cancel.result(TIMEOUT)
    finally:
        release.touch()
        executor.shutdown(wait=True)  # returns: the stop was not lost either
    assert executor.statistics().failed == 1


def test_a_chunk_of_map_with_an_argument_the_worker_cannot_load_fails_the_map():
    with aplex.ProcessAsyncPoolExecutor(pool_size=2) as executor:
        arguments = [works.LoadsOnlyIn(os.getpid(), i) if i == 7 else i for i in range(20)]
        results = executor.map(works.identity, arguments, chunksize=4)
        assert [next(results) for _ in range(4)] == [0, 1, 2, 3]
        with pytest.raises(pickle.UnpicklingError, match="refuses to load"):
            list(results)
        assert_serves(executor)


def test_a_result_the_parent_cannot_load_fails_its_work_alone(tmp_path):
    """Guards against a result batch that could not be loaded stopping the
    reader: the pool broke, and the results of the batch were lost. The
    works end together, so their results share batches."""
    release = tmp_path / "release"
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        futures = [
            executor.submit(
                works.async_loads_only_here_after_file if i == 5 else works.async_wait_for_file,
                str(release),
                i,
            )
            for i in range(20)
        ]
        release.touch()
        for i, future in enumerate(futures):
            if i == 5:
                with pytest.raises(pickle.UnpicklingError) as caught:
                    future.result(TIMEOUT)
                message = str(caught.value)
                assert (
                    "the result of work tests.works.async_loads_only_here_after_file "
                    "could not be loaded here"
                ) in message
                assert "refuses to load outside process" in message
                assert "_load_only_in" in message
            else:
                assert future.result(TIMEOUT) == i
        assert_serves(executor)


def test_an_exception_the_parent_cannot_load_comes_back_as_a_remote_error():
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        future = executor.submit(works.raise_error_that_loads_only_here, "deep trouble")
        with pytest.raises(aplex.RemoteError) as caught:
            future.result(TIMEOUT)
        error = caught.value
        assert error.type_name == "tests.works.LoadsOnlyInError"
        assert error.message == "deep trouble"
        assert "raise_error_that_loads_only_here" in error.traceback_text
        assert "could not be loaded here" in error.reason
        assert_serves(executor)


async def test_the_worker_asks_again_for_each_work_of_a_batch_it_cannot_load():
    """The worker's side, step by step over a real pipe: a batch of three
    works, one unloadable, then a cancel and a stop. The worker asks for the
    three again, holds the cancel and the stop until they are back, runs
    the two that load and fails the third alone."""
    from aplex._worker import messages, pickling
    from aplex._worker.process import _PipeEndpoint

    parent, child = Pipe(duplex=True)
    try:
        endpoint = _PipeEndpoint(child, memoryview(bytearray(1)))
        items = [
            messages.WorkItem(1, works.add, (1,), {}),
            messages.WorkItem(2, works.identity, (works.LoadsOnlyIn(-1),), {}),
            messages.WorkItem(3, works.add, (3,), {}),
        ]
        batch, failed = pickling.dumps_works(items)
        assert failed == []
        parent.send_bytes(batch)
        parent.send_bytes(pickling.dumps_controls([messages.CancelItem(3), messages.STOP]))
        with anyio.fail_after(TIMEOUT):
            assert await endpoint.receive() == []
        assert pickle.loads(parent.recv_bytes()) == messages.ReloadRequest((1, 2, 3))
        for item in items:
            parent.send_bytes(pickling.dumps_works([item])[0])
        received = []
        with anyio.fail_after(TIMEOUT):
            while len(received) < 4:
                received += await endpoint.receive()
        assert [item.work_id if type(item) is messages.WorkItem else item for item in received] == [
            1,
            3,
            messages.CancelItem(3),
            messages.STOP,
        ]
        [(work_id, status, failure)] = pickle.loads(parent.recv_bytes())
        assert (work_id, status, failure.what) == (2, messages.NOT_LOADED, "work")
        assert "refuses to load outside process -1" in failure.reason
    finally:
        parent.close()
        child.close()


pytestmark = pytest.mark.anyio
