"""Large payloads: buffers that cross a process worker's pipe out of band.

A bytes, bytearray or memoryview argument or result of 64 KiB or more (and
a NumPy array, anywhere in one) is written from its own memory after its
batch's pickle and read into an object of its own (see
:mod:`aplex._worker.wire`). What a user sees must not change: each value
arrives intact and of its own type, on every start method, alone or among
others in a batch; and what cannot be loaded still fails its own work only.
"""

from __future__ import annotations

import array
import hashlib
import os
import pickle
import threading
from multiprocessing import Pipe

import pytest

import aplex
from aplex._worker import pickling, wire
from aplex._worker.messages import OUT_OF_BAND_BYTES
from tests import works
from tests.support import wait_until
from tests.test_process_failures import TIMEOUT, assert_serves

LARGE = OUT_OF_BAND_BYTES
METHODS = ["forkserver", "spawn"]


def facts(value):
    """buffer_facts, computed here: what the worker must see."""
    return works.buffer_facts(value)


def payloads():
    """Buffers around the out-of-band threshold and well above it, of each kind."""
    return [
        os.urandom(LARGE - 1),  # in band
        os.urandom(LARGE),
        os.urandom(3 << 20),
        bytearray(os.urandom(LARGE + 7)),
        memoryview(array.array("d", range(LARGE // 8 * 3))),
        memoryview(bytearray(os.urandom(LARGE * 2))).cast("I", (LARGE // 8, 4)),
        memoryview(os.urandom(LARGE)).toreadonly(),
        memoryview(b"small"),
        b"",
    ]


@pytest.mark.parametrize("mp_context", METHODS)
def test_large_buffers_arrive_intact_and_of_their_type_both_ways(mp_context):
    """Guards against a buffer sent out of band arriving as another type
    (bytes as a memoryview, a bytearray as bytes), with another layout, or
    with its bytes out of order."""
    with aplex.ProcessAsyncPoolExecutor(pool_size=2, mp_context=mp_context) as executor:
        for value in payloads():
            assert executor.submit(works.buffer_facts, value).result(TIMEOUT) == facts(value)
            echoed = executor.submit(works.identity, value).result(TIMEOUT)
            assert facts(echoed) == facts(value)
        for kind in ("bytes", "bytearray", "memoryview"):
            made = executor.submit(works.make_buffer, kind, 5 << 20, 1).result(TIMEOUT)
            assert facts(made) == facts(works.make_buffer(kind, 5 << 20, 1))
        keywords = {"a": os.urandom(LARGE * 3), "b": bytearray(LARGE), "c": memoryview(b"c")}
        reported = executor.submit(works.buffers_of_kwargs, **keywords).result(TIMEOUT)
        assert reported == {key: facts(value) for key, value in keywords.items()}


def test_many_large_buffers_batched_together_each_reach_their_own_work(tmp_path):
    """Works queued while their worker is busy leave in batches of several
    buffers each: every buffer must go to its own work, and every result
    to its own future, through the map's chunks too."""
    started, release = tmp_path / "started", tmp_path / "release"
    values = [os.urandom(LARGE + i * 4099) for i in range(40)]
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        blocker = executor.submit(works.plain_until_file, str(started), str(release), "blocker")
        wait_until(started.exists)
        futures = [executor.submit(works.identity, value) for value in values]
        chunked = executor.map(works.buffer_facts, values, chunksize=6)
        release.touch()
        assert blocker.result(TIMEOUT) == "blocker"
        assert [future.result(TIMEOUT) for future in futures] == values
        assert list(chunked) == [facts(value) for value in values]


def test_small_memoryviews_batched_with_tiny_works_arrive_intact(tmp_path):
    """Guards the feeder's shortcut: a batch it knows holds no large buffer
    is pickled without a look at each work's arguments, and a memoryview,
    which only goes out of band, must still be seen whatever its size."""
    started, release = tmp_path / "started", tmp_path / "release"
    values = [memoryview(bytes([i]) * (i + 1)) if i % 3 == 0 else i for i in range(30)]
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        blocker = executor.submit(works.plain_until_file, str(started), str(release), "blocker")
        wait_until(started.exists)
        futures = [
            executor.submit(works.buffer_facts, value)
            for value in values
            if not isinstance(value, int)
        ]
        tiny = [
            executor.submit(works.identity, value) for value in values if isinstance(value, int)
        ]
        release.touch()
        assert blocker.result(TIMEOUT) == "blocker"
        views = [value for value in values if not isinstance(value, int)]
        assert [future.result(TIMEOUT) for future in futures] == [facts(view) for view in views]
        assert [future.result(TIMEOUT) for future in tiny] == [
            v for v in values if isinstance(v, int)
        ]


def test_a_large_buffer_argument_of_a_work_that_cannot_load_fails_that_work_alone(tmp_path):
    """Guards against a batch whose buffers travelled out of band being
    lost, or leaving the pipe out of step, when its pickle cannot be loaded:
    the buffers must still be read, the neighbours of the work that cannot
    load must run, with their own buffers, once asked for again."""
    started, release = tmp_path / "started", tmp_path / "release"
    values = [os.urandom(LARGE * 2 + i) for i in range(12)]
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        blocker = executor.submit(works.plain_until_file, str(started), str(release), "blocker")
        wait_until(started.exists)
        futures = [executor.submit(works.buffer_facts, value) for value in values]
        bad = executor.submit(works.add, os.urandom(LARGE * 3), works.LoadsOnlyIn(os.getpid()))
        # Text: the pickle is large itself, and goes out of band whole.
        bad_text = executor.submit(works.add, "t" * LARGE * 3, works.LoadsOnlyIn(os.getpid()))
        after = [executor.submit(works.identity, value) for value in values]
        release.touch()
        assert blocker.result(TIMEOUT) == "blocker"
        assert [future.result(TIMEOUT) for future in futures] == [facts(v) for v in values]
        for future in (bad, bad_text):
            with pytest.raises(pickle.UnpicklingError, match="refuses to load outside process"):
                future.result(TIMEOUT)
        assert [future.result(TIMEOUT) for future in after] == values
        assert_serves(executor)


def test_large_text_and_lists_arrive_intact_both_ways(tmp_path):
    """A large pickle with no buffer in it (text, a long list) is itself
    sent out of band, inside a small one: what it holds must load whole,
    alone or beside large buffers, on its way to the worker and back."""
    started, release = tmp_path / "started", tmp_path / "release"
    values = [
        os.urandom(LARGE).hex(),
        list(range(LARGE)),
        ["é" * LARGE, os.urandom(LARGE * 2), bytearray(LARGE)],
        {"text": "x" * LARGE, "nested": [os.urandom(LARGE)]},
    ]
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        for value in values:
            assert executor.submit(works.identity, value).result(TIMEOUT) == value
        # Queued together: one batch for several of them.
        blocker = executor.submit(works.plain_until_file, str(started), str(release), "blocker")
        wait_until(started.exists)
        futures = [executor.submit(works.identity, value) for value in values * 3]
        release.touch()
        assert blocker.result(TIMEOUT) == "blocker"
        assert [future.result(TIMEOUT) for future in futures] == values * 3


def test_a_large_result_the_parent_cannot_load_fails_its_work_alone(tmp_path):
    """A result pickled on its own, its pickle large enough to travel out
    of band: if the parent cannot load it, that work fails and the large
    results beside it in the batch arrive intact."""
    release = tmp_path / "release"
    big = os.urandom(LARGE * 2)
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        futures = [
            executor.submit(
                works.async_loads_only_here_after_file if i == 3 else works.async_wait_for_file,
                str(release),
                big if i == 3 else bytearray(big[i:]),
            )
            for i in range(8)
        ]
        release.touch()
        for i, future in enumerate(futures):
            if i == 3:
                with pytest.raises(pickle.UnpicklingError, match="could not be loaded here"):
                    future.result(TIMEOUT)
            else:
                assert future.result(TIMEOUT) == bytearray(big[i:])
        assert_serves(executor)


def test_a_memoryview_that_cannot_be_sent_fails_its_work_alone_and_names_it():
    """A memoryview pickles now, if its memory is contiguous; one that is
    not fails its own work with an error naming it, and its neighbours in
    the batch, a contiguous memoryview among them, still go."""
    strided = memoryview(os.urandom(LARGE * 2))[::2]
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        error = executor.submit(works.identity, strided).exception(TIMEOUT)
        assert isinstance(error, pickle.PicklingError)
        assert "argument 0 (memoryview)" in str(error)
        batch = [memoryview(os.urandom(LARGE)), strided, memoryview(b"abc")]
        futures = [executor.submit(works.buffer_facts, value) for value in batch]
        assert futures[0].result(TIMEOUT) == facts(batch[0])
        assert isinstance(futures[1].exception(TIMEOUT), pickle.PicklingError)
        assert futures[2].result(TIMEOUT) == facts(batch[2])
        assert_serves(executor)


def test_numpy_arrays_travel_intact():
    numpy = pytest.importorskip("numpy")
    arrays = [
        numpy.arange(LARGE, dtype=numpy.float64).reshape(64, -1),
        numpy.asfortranarray(numpy.arange(LARGE, dtype=numpy.int32).reshape(128, -1)),
        numpy.arange(LARGE * 2, dtype=numpy.uint8)[::3],  # not contiguous: in band
    ]
    readonly = numpy.arange(LARGE, dtype=numpy.int64)
    readonly.flags.writeable = False
    arrays.append(readonly)
    with aplex.ProcessAsyncPoolExecutor(pool_size=1) as executor:
        for value in arrays:
            echoed = executor.submit(works.identity, value).result(TIMEOUT)
            assert echoed.dtype == value.dtype and echoed.shape == value.shape
            assert numpy.array_equal(echoed, value)
            assert echoed.flags.writeable == value.flags.writeable
        nested = executor.submit(works.identity, {"x": arrays}).result(TIMEOUT)
        assert all(numpy.array_equal(a, b) for a, b in zip(nested["x"], arrays, strict=True))


# -- the wire, over a real pipe ----------------------------------------------------


def _pickled_with_buffers(values):
    """A pickle whose buffers all go out of band, and the buffers."""
    buffers: list = []
    data = pickling.dumps([pickle.PickleBuffer(value) for value in values], buffers=buffers)
    assert len(buffers) == len(values) and len(data) < LARGE
    return data, buffers


def test_the_wire_carries_several_buffers_larger_than_the_pipe_in_one_batch():
    """A batch far larger than the pipe's buffer is written in many partial
    writes while the other end reads: the writer must go on exactly where
    each write stopped."""
    parent, child = Pipe(duplex=True)
    values = [os.urandom(LARGE), bytearray(os.urandom(4 << 20)), os.urandom(LARGE * 5 + 3)]
    data, buffers = _pickled_with_buffers(values)
    try:
        writer = threading.Thread(target=wire.send, args=(parent, data, buffers))
        writer.start()
        received, received_buffers = wire.receive(child)
        writer.join(TIMEOUT)
        assert [type(b) for b in received_buffers] == [bytes, bytearray, bytes]
        loaded = pickling.loads(received, received_buffers)
        assert [memoryview(v).readonly for v in loaded] == [True, False, True]
        assert [hashlib.sha256(v).digest() for v in loaded] == [
            hashlib.sha256(v).digest() for v in values
        ]
    finally:
        parent.close()
        child.close()


def test_the_wire_reports_end_of_file_in_the_middle_of_a_batch():
    """A worker that dies while writing a batch: the reader sees end of
    file (reported as the worker's exit), not a short buffer taken for a
    whole one."""
    data, buffers = _pickled_with_buffers([os.urandom(LARGE * 2)])
    # The batch as it goes on the wire, taken from a first pipe...
    sender, capture = Pipe(duplex=True)
    writer = threading.Thread(target=wire.send, args=(sender, data, buffers))
    writer.start()
    wanted = 4 + len(data) + 5 + 9 + LARGE * 2  # length, descriptor, pickle, buffer
    written = bytearray()
    while len(written) < wanted:
        written += os.read(capture.fileno(), wanted - len(written))
    writer.join(TIMEOUT)
    sender.close()
    capture.close()
    # ...and only its first part on a second, whose writer then goes away.
    parent, child = Pipe(duplex=True)
    try:
        os.write(parent.fileno(), written[: wanted - LARGE])
        parent.close()
        with pytest.raises(EOFError):
            wire.receive(child)
    finally:
        child.close()
