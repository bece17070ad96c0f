"""How items cross a process boundary, and what happens when one cannot.

Works go to workers with the standard pickle where it can, else with
cloudpickle (lambdas, closures): the standard pickle is several times faster.
Functions and classes of ``__main__`` go by reference, as with
:mod:`concurrent.futures`, whenever a worker process has the main module:
multiprocessing's spawn and fork server import it in every worker (as
``__mp_main__``, aliased to ``__main__``), and a forked worker is a copy of
it. Module state then lives once per worker: what the initializer sets, a
counter, a cache, a lock. Only where a worker cannot import the main module
(``python -c``, standard input, the REPL, a notebook: it has no file, or is
a package's ``__main__``) are they sent by value, with cloudpickle, each
call getting fresh copies of what they refer to. Lambdas and closures always
go by value; the functions and classes of an importable main module that
they refer to still go by reference.

Results come back with the standard pickle first (they are mostly data, and
it is faster) and cloudpickle if that fails. A batch is pickled whole; only
when that fails is each item tried alone, so that the one that cannot be
sent fails alone, with an error that names what could not be pickled.

What pickles may still fail to unpickle on arrival (a class the other side
cannot import, a reconstructor that raises), and one item must not take its
batch down with it (see :class:`~aplex._worker.messages.LoadFailure`):

* a batch for a worker holds works only, or control items only, and ends
  with the ids of its works (``pickle.loads`` ignores what follows the
  pickle), read only when the batch cannot be loaded;
* a result that is not plain data is pickled on its own inside its batch,
  and loaded by :func:`load_result`, which turns a failure into that one
  work's error; an exception likewise, which becomes a :class:`RemoteError`.

Large buffers travel out of band (pickle protocol 5) on a process worker's
pipe (see :mod:`.wire`): a bytes, bytearray or memoryview that is an
argument or a result, a NumPy array anywhere in one, or the pickle of a
result pickled on its own, when it has at least :data:`OUT_OF_BAND_BYTES`.
The pickle refers to them, and the receiver passes them to
:func:`pickle.loads`. Ray's batches keep everything in band.

An exception travels with its traceback as text, attached on arrival as its
``__cause__`` (as :mod:`concurrent.futures` does); its traceback objects are
dropped once formatted, so that the frames of the work, and whatever they
refer to, are freed with the work. One that cannot be pickled arrives as a
:class:`RemoteError` that keeps its type name, message and traceback text.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import struct
import sys
import traceback
import types
from array import array
from collections.abc import Callable
from typing import Any, NamedTuple

from .._exceptions import RemoteError, RemoteTraceback, describe
from .messages import (
    CONTROLS,
    FAILED,
    NOT_LOADED,
    OUT_OF_BAND_BYTES,
    LoadFailure,
    Ready,
    ReloadRequest,
    ResultItem,
    TasksStarted,
    WorkerFailure,
    WorkItem,
)

PROTOCOL = pickle.HIGHEST_PROTOCOL


_COUNT = struct.Struct("<I")
_ONE_ID = struct.Struct("<qI")  # a work id, then the count: 1


def _rebuild_exception(data: bytes, text: str, type_name: str, message: str) -> BaseException:
    """Load an exception sent by a worker (in the parent)."""
    try:
        exc: BaseException = pickle.loads(data)
    except Exception as error:
        exc = RemoteError(
            type_name, message, text, f"it could not be loaded here: {_describe(error)}"
        )
    exc.__cause__ = RemoteTraceback(text)
    return exc


class _ExceptionWithTraceback:
    """Pickles as its exception, pickled on its own, with the traceback text
    as its cause on arrival."""

    def __init__(self, exc: BaseException):
        formatted = "".join(traceback.format_exception(exc))
        text = '\n"""\n' + formatted + '"""'
        type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        self._rebuild_args = (
            _dumps_exception(exc, formatted),
            text,
            type_name,
            describe(exc, str_of=True),
        )
        _drop_tracebacks(exc)

    def __reduce__(self) -> tuple[Callable[..., BaseException], tuple[Any, ...]]:
        return _rebuild_exception, self._rebuild_args


def _dumps_exception(exc: BaseException, formatted: str) -> bytes:
    """Pickle ``exc``, or a RemoteError that describes it if it does not
    survive pickling. Exceptions whose ``__init__`` takes other arguments
    than their ``args`` pickle fine and fail to unpickle: better found here,
    where the work is known, than in the parent."""
    try:
        data = dumps(exc)
        pickle.loads(data)
    except BaseException as error:  # see dumps_results
        return dumps(_remote_error(exc, error, formatted))
    return data


def _with_ids(data: bytes, ids: list[int]) -> bytes:
    # The ids of a batch's works go after its pickle, which pickle.loads()
    # ignores: read back only if the batch cannot be loaded (work_ids()).
    if len(ids) == 1:
        return data + _ONE_ID.pack(ids[0], 1)
    return data + array("q", ids).tobytes() + _COUNT.pack(len(ids))


def work_ids(data: bytes | memoryview) -> list[int]:
    """The ids of the works in a batch that :func:`dumps_works` made."""
    end = len(data) - _COUNT.size
    (count,) = _COUNT.unpack_from(data, end)
    ids = array("q")
    ids.frombytes(data[end - ids.itemsize * count : end])
    return ids.tolist()


def _drop_tracebacks(exc: BaseException) -> None:
    """Let go of the frames of ``exc`` and of the exceptions chained to it:
    they hold the work's locals (its arguments among them), and only the
    traceback's text crosses to the parent."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending += [current.__cause__, current.__context__]


def dumps_works(
    items: list[Any],
    *,
    main: bool | None = None,
    buffers: list[Any] | None = None,
    large: bool = True,
) -> tuple[bytes | None, list[ResultItem]]:
    """Pickle a batch of works for a worker, on a thread that no signal
    reaches (the feeder): whatever a ``__reduce__`` raises, even beyond an
    Exception, fails its work alone.

    Args:
        items: The batch.
        main: Whether the worker has this process's main module (see
            :func:`dumps`).
        buffers: Where to put the buffers that go out of band (see
            :func:`dumps`); None to keep them in band.
        large: Whether an argument may be a large buffer, as far as
            :func:`~.messages.work_size_hint` tells (see
            :func:`dumps_works_or_none`).

    Returns:
        The pickled batch (None if no work could be pickled), and a failed
        result for each work that could not be (left out of the batch).
    """
    try:
        data = dumps_works_or_none(items, main=main, buffers=buffers, large=large)
    except BaseException:  # tried again item by item, below
        data = None
    if data is not None:
        return data, []
    collect = None
    if buffers is not None:
        buffers.clear()  # of the attempt that failed
        collect = _OutOfBand(buffers)
    sendable, failed = [], []
    for item in items:
        try:
            _cloudpickle(item if collect is None else _with_buffers(item), main)
        except BaseException as exc:  # fails the work, named
            error = _work_pickling_error(item, exc, out_of_band=collect is not None)
            failed.append(ResultItem(item.work_id, FAILED, error))
        else:
            sendable.append(item)
    if not sendable:
        return None, failed
    if collect is not None:
        sendable = [_with_buffers(item) for item in sendable]
    data = _cloudpickle(sendable, main, collect)
    if buffers is not None:
        data = _pickle_out_of_band(data, buffers)
    return _with_ids(data, [item.work_id for item in sendable]), failed


def dumps_works_or_none(
    items: list[Any],
    *,
    main: bool | None = None,
    buffers: list[Any] | None = None,
    large: bool = True,
) -> bytes | None:
    """Pickle a batch for a worker: of works, or of control items; None if
    some item cannot be pickled, or if the batch holds both (see the module
    doc: a control item must not be lost with a work that fails to load).
    With ``buffers``, large buffers go there, out of band (see :func:`dumps`):
    a NumPy array wherever it is; a bytes, bytearray or memoryview argument
    only if ``large``. The feeder knows from the batch's size hint that none
    is (see :func:`~.messages.work_size_hint`), which spares it a look at each
    work's arguments that cost as much as pickling a tiny work."""
    if len(items) == 1:
        ids = [] if isinstance(items[0], CONTROLS) else [items[0].work_id]
    else:
        ids = [item.work_id for item in items if not isinstance(item, CONTROLS)]
        if ids and len(ids) != len(items):
            return None
    if buffers is not None and ids and large:
        items = [_with_buffers(item) for item in items]
    try:
        return _with_ids(dumps(items, main=main, buffers=buffers), ids)
    except Exception:
        # Anything more (a KeyboardInterrupt, a __reduce__'s SystemExit) is
        # for the caller: put() on the main thread raises it once its
        # section is whole, the feeder fails the work (see dumps_works).
        return None


def dumps_controls(items: list[Any]) -> bytes:
    """Pickle a batch of control items (cancel, stop) for a worker."""
    return _with_ids(pickle.dumps(items), [])


def dumps_reload(ids: list[int]) -> bytes:
    """Pickle a worker's request for the works ``ids`` again, each alone."""
    return pickle.dumps(ReloadRequest(tuple(ids)))


def dumps(obj: Any, *, main: bool | None = None, buffers: list[Any] | None = None) -> bytes:
    """Pickle ``obj`` for a worker: with the standard pickle if it can be
    trusted to, else with cloudpickle (see the module doc).

    Args:
        obj: What to pickle.
        main: Whether the worker has this process's main module, so that
            its functions and classes may go by reference; None for a worker
            process's answer (:func:`workers_import_main`). A Ray actor has
            not: False.
        buffers: Where to put, in order, the buffers of at least
            :data:`OUT_OF_BAND_BYTES` that the pickle leaves out of band
            (:class:`pickle.PickleBuffer` objects, for
            :func:`~aplex._worker.wire.send`); None to keep them in band.
    """
    collect = None if buffers is None else _OutOfBand(buffers)
    try:
        data: bytes | None = pickle.dumps(obj, PROTOCOL, buffer_callback=collect)
    except Exception:
        data = None  # a lambda, a closure...: cloudpickle's work
    if data is not None and main is None and len(data) >= OUT_OF_BAND_BYTES:
        # Asking costs about a microsecond; scanning a pickle for the main
        # module's name, some 0.4 ms a MiB.
        main = workers_import_main()
    if data is None or (not main and b"__main__" in data):
        if main is None:
            main = workers_import_main()
        if data is None or not main:
            if buffers is not None:
                buffers.clear()  # the standard pickle's, if it got that far
            data = _cloudpickle(obj, main, collect)
    # else the common case, without asking about the main module
    return data if buffers is None else _pickle_out_of_band(data, buffers)


def _pickle_out_of_band(data: bytes, buffers: list[Any]) -> bytes:
    """``data``, a pickle whose own out-of-band buffers are ``buffers``; if
    it is large itself (text, a long list), a small pickle that has it
    loaded, with them, and sends it out of band too: it is then written
    from where it is, instead of copied to append a batch's ids and read
    back in pieces."""
    if len(data) < OUT_OF_BAND_BYTES:
        return data
    inner = buffers[:]
    buffers.clear()
    return pickle.dumps(_Pickle(data, inner), PROTOCOL, buffer_callback=_collect_all(buffers))


class _Pickle:
    """A pickle, and its out-of-band buffers, that pickle as buffers (see
    :func:`_pickle_out_of_band`) and load as what they pickled."""

    __slots__ = ("data", "buffers")

    def __init__(self, data: bytes, buffers: list[Any]):
        self.data = data
        self.buffers = buffers

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return _load_pickle, (pickle.PickleBuffer(self.data), tuple(self.buffers))


def _load_pickle(data: Any, buffers: tuple[Any, ...]) -> Any:
    return pickle.loads(data, buffers=buffers)


class _OutOfBand:
    """A pickler's buffer callback: keeps the large buffers out of band, in
    ``buffers``, and lets the small ones go in band."""

    __slots__ = ("buffers",)

    def __init__(self, buffers: list[Any]):
        self.buffers = buffers

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        with buffer.raw() as raw:
            if raw.nbytes < OUT_OF_BAND_BYTES:
                return True
        self.buffers.append(buffer)
        return False


def _collect_all(buffers: list[Any]) -> Callable[[pickle.PickleBuffer], bool]:
    # For a pickle nested in another (a result pickled on its own): all its
    # buffers are handed to the outer one, which decides which go out of band.
    def collect(buffer: pickle.PickleBuffer) -> bool:
        buffers.append(buffer)
        return False

    return collect


class _Buffer:
    """A bytes, bytearray or memoryview that pickles as a
    :class:`pickle.PickleBuffer`, so that it may go out of band: the
    standard pickle copies a bytes object into the stream whatever the
    buffer callback, and pickles no memoryview at all."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray | memoryview):
        self.value = value

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        value = self.value
        if type(value) is bytes:
            return _as_bytes, (pickle.PickleBuffer(value),)
        if type(value) is bytearray:
            return _as_bytearray, (pickle.PickleBuffer(value),)
        assert isinstance(value, memoryview)
        return _as_memoryview, (pickle.PickleBuffer(value), value.format, value.shape)


# What a _Buffer loads as. In band, the standard pickle gives a read-only
# buffer as bytes and a writable one as a bytearray; out of band, a bytearray
# that wire.receive() read (as a read-only memoryview of it when read-only).


def _as_bytes(buffer: Any) -> bytes:
    return buffer if type(buffer) is bytes else bytes(buffer)


def _as_bytearray(buffer: Any) -> bytearray:
    return buffer if type(buffer) is bytearray else bytearray(buffer)


def _as_memoryview(buffer: Any, format: str, shape: tuple[int, ...]) -> memoryview[Any]:
    view: memoryview[Any] = memoryview(buffer)
    if view.format == format and view.shape == shape:
        return view
    # The stubs list each format literally; this one is the sender's own.
    return view.cast(format, shape)  # type: ignore[call-overload, no-any-return]


_BUFFER_TYPES = frozenset({bytes, bytearray, memoryview})


def _is_large_buffer(value: Any) -> bool:
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value) >= OUT_OF_BAND_BYTES
    return kind is memoryview  # pickled as a _Buffer whatever its size


def _with_buffers(item: Any) -> Any:
    """``item``, or for a work with large buffer arguments a copy of it in
    which they pickle as :class:`_Buffer` (the parent's record is left as
    it is)."""
    if type(item) in CONTROLS:
        return item
    args, kwargs = item.args, item.kwargs
    if not kwargs and not item.chunk and _BUFFER_TYPES.isdisjoint(map(type, args)):
        return item  # most works, told at C speed
    if item.chunk:
        if not any(_is_large_buffer(value) for chunk in args for value in chunk):
            args = None
    elif not any(_is_large_buffer(value) for value in args):
        args = None
    if not any(_is_large_buffer(value) for value in kwargs.values()):
        kwargs = None
    if args is None and kwargs is None:
        return item
    if args is not None:
        if item.chunk:
            args = [tuple(map(_wrap, chunk)) for chunk in args]
        else:
            args = tuple(map(_wrap, args))
    if kwargs is not None:
        kwargs = {key: _wrap(value) for key, value in kwargs.items()}
    return WorkItem(
        item.work_id,
        item.fn,
        item.args if args is None else args,
        item.kwargs if kwargs is None else kwargs,
        item.chunk,
    )


def _wrap(value: Any) -> Any:
    return _Buffer(value) if _is_large_buffer(value) else value


def workers_import_main() -> bool:
    """Whether a worker process has this process's main module, so that its
    functions and classes can be sent by reference.

    The rule is multiprocessing's own (``spawn.get_preparation_data`` and
    ``_fixup_main_*``): a worker imports the main module by its name when it
    was run with ``-m`` (but not a package's ``__main__``), else by its path
    when it has one (but not IPython's launcher, nor standard input's
    ``"<stdin>"``); a forked worker is a copy of it, which these same
    conditions keep to the cases the other start methods share.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name != "__main__" and not name.endswith(".__main__")
    path: str | None = getattr(main, "__file__", None)
    if path is None or path.startswith("<"):  # no file: "<stdin>"
        return False
    return os.path.splitext(os.path.basename(path))[0] != "ipython"


@functools.cache
def _pickler_class() -> type[Any]:
    """cloudpickle's Pickler, but for the functions and classes of an
    importable main module, which it would send by value: they go by
    reference, so a lambda that calls one of them runs it in the worker's
    own module.

    Made on first use: importing cloudpickle is a large share of a worker's
    (and the fork server's) start-up, and most programs' works pickle
    without it. A worker loading cloudpickle's output imports it then.
    """
    import cloudpickle

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
        def __init__(
            self,
            file: Any,
            main: bool | None,
            buffer_callback: Callable[[pickle.PickleBuffer], bool] | None,
        ):
            super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
            self._main = main

        def reducer_override(self, obj: Any) -> Any:
            if _is_main_global(obj) and (
                workers_import_main() if self._main is None else self._main
            ):
                return NotImplemented  # the standard pickle's save_global: by reference
            return super().reducer_override(obj)

    return Pickler


def _is_main_global(obj: Any) -> bool:
    if not isinstance(obj, (types.FunctionType, type)) or obj.__module__ != "__main__":
        return False
    found: Any = sys.modules.get("__main__")
    for name in obj.__qualname__.split("."):
        found = getattr(found, name, None)
    return found is obj


def _cloudpickle(
    obj: Any,
    main: bool | None = None,
    buffer_callback: Callable[[pickle.PickleBuffer], bool] | None = None,
) -> bytes:
    with io.BytesIO() as file:
        _pickler_class()(file, main, buffer_callback).dump(obj)
        return file.getvalue()


def _work_pickling_error(
    item: WorkItem, exc: BaseException, *, out_of_band: bool = False
) -> pickle.PicklingError:
    name = _work_name(item.fn)
    culprit = "the work"
    candidates: list[tuple[str, Any]] = [("the work", item.fn)]
    arguments = [a for chunk in item.args for a in chunk] if item.chunk else list(item.args)
    candidates += [(f"argument {i} ({type(a).__name__})", a) for i, a in enumerate(arguments)]
    candidates += [
        (f"keyword argument {k!r} ({type(v).__name__})", v) for k, v in item.kwargs.items()
    ]
    for label, value in candidates:
        try:
            _cloudpickle(_wrap(value) if out_of_band else value)
        except BaseException:  # found the culprit
            culprit = label
            break
    error = pickle.PicklingError(
        f"cannot send work {name} to a worker: {culprit} could not be "
        f"pickled ({type(exc).__name__}: {describe(exc, str_of=True)})"
    )
    error.__cause__ = exc
    return error


# Results of these types travel inline in their batch: their pickle loads
# wherever aplex does. Any other is pickled on its own (one more pickle call
# and copy), so that it alone fails if the parent cannot load it.
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
# None of them a buffer; and a failed work's value is an exception, never one.
_SCALARS = _PLAIN - {bytes, bytearray}


def dumps_results(results: list[Any], buffers: list[Any] | None = None) -> bytes:
    """Pickle a batch of results for the parent; what cannot be pickled
    becomes an error the parent can read. With ``buffers``, large buffers go
    there, out of band (see :func:`dumps`)."""
    if buffers is None:
        return pickle.dumps([_sendable(result) for result in results])
    data = pickle.dumps(
        [_sendable_out_of_band(result) for result in results],
        PROTOCOL,
        buffer_callback=_OutOfBand(buffers),
    )
    return _pickle_out_of_band(data, buffers)


def _sendable_out_of_band(result: Any) -> Any:
    """:func:`_sendable`, its large buffers ready to go out of band."""
    if type(result) is tuple:
        work_id, status, value = result
        if type(value) in _SCALARS:
            return result  # most results (a number, a short text, None), at once
        if status != FAILED and (
            type(value) is bytes or type(value) is bytearray or type(value) is memoryview
        ):
            if type(value) is memoryview:
                # Its shape may not load (see _as_memoryview): on its own.
                return _pickled_result(work_id, status, _Buffer(value), out_of_band=True)
            if len(value) >= OUT_OF_BAND_BYTES:
                return (work_id, status, _Buffer(value))
        elif status != FAILED and type(value) not in _PLAIN:
            return _pickled_result(work_id, status, value, out_of_band=True)
    return _sendable(result)


def _sendable(result: Any) -> Any:
    if type(result) is TasksStarted or type(result) is Ready:
        return result
    if type(result) is WorkerFailure:
        return WorkerFailure(result.where, _ExceptionWithTraceback(result.error))  # type: ignore[arg-type]
    work_id, status, value = result
    if status == FAILED:
        return (work_id, FAILED, _ExceptionWithTraceback(value))
    if type(value) in _PLAIN:
        return result
    return _pickled_result(work_id, status, value)


def _pickled_result(work_id: int, status: int, value: Any, *, out_of_band: bool = False) -> Any:
    """The result, pickled on its own (see :class:`_PickledResult`); with
    ``out_of_band``, its buffers, and the pickle itself when large, are left
    for the batch's pickle to send out of band."""
    buffers: list[Any] = []
    collect = _collect_all(buffers) if out_of_band else None
    # Whatever a result's __reduce__ raises, even beyond an Exception, fails
    # that work alone: no signal reaches a worker's pickling (a process
    # worker ignores SIGINT, a thread worker is not the main thread).
    try:
        try:
            data: Any = pickle.dumps(value, PROTOCOL, buffer_callback=collect)
        except BaseException:
            buffers.clear()
            data = _cloudpickle(value, None, collect)
    except BaseException as exc:
        kind = type(value.value if type(value) is _Buffer else value)
        error = pickle.PicklingError(
            f"cannot send the result back from the worker: a {kind.__name__} object "
            f"could not be pickled ({_describe(exc)})"
        )
        error.__cause__ = exc
        return (work_id, FAILED, _ExceptionWithTraceback(error))
    if out_of_band and len(data) >= OUT_OF_BAND_BYTES:
        data = pickle.PickleBuffer(data)
    return _PickledResult(work_id, status, data, tuple(buffers))


class _PickledResult:
    """A result whose value is pickled on its own: loads as the result, or
    as that work's failure to load (:func:`load_result`). Its buffers, if
    its pickle left them out, are pickled with the batch, as buffers too."""

    __slots__ = ("work_id", "status", "data", "buffers")

    def __init__(self, work_id: int, status: int, data: Any, buffers: tuple[Any, ...] = ()):
        self.work_id = work_id
        self.status = status
        self.data = data
        self.buffers = buffers

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if self.buffers:
            return load_result, (self.work_id, self.status, self.data, self.buffers)
        return load_result, (self.work_id, self.status, self.data)


def load_result(
    work_id: int, status: int, data: Any, buffers: tuple[Any, ...] | None = None
) -> tuple[int, int, Any]:
    """Load a result's value (in the parent); if it cannot be, the result
    says so, for the dispatcher to fail that work alone."""
    try:
        return work_id, status, pickle.loads(data, buffers=buffers)
    except Exception as exc:
        return work_id, NOT_LOADED, load_failure("result", exc)


def load_failure(what: str, exc: BaseException) -> LoadFailure:
    """Describe why a work or a result could not be loaded."""
    return LoadFailure(what, _describe(exc), "".join(traceback.format_exception(exc)))


def _describe(exc: BaseException) -> str:
    """The error, and the function that raised it when that is not the
    unpickler's own machinery: for a reconstructor that raises, which class
    would not load."""
    description = f"{type(exc).__name__}: {describe(exc, str_of=True)}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        frame = frames[-1]
        if not frame.filename.startswith("<frozen") and frame.filename != __file__:
            description += f" (raised in {frame.name}, {frame.filename}:{frame.lineno})"
    return description


def load_error(failure: LoadFailure, fn: Callable[..., Any]) -> pickle.UnpicklingError:
    """The error a work fails with when it, or its result, could not be loaded."""
    name = _work_name(fn)
    if failure.what == "work":
        message = (
            f"work {name} could not be loaded in its worker (the function or one of "
            f"its arguments): {failure.reason}"
        )
    else:
        message = f"the result of work {name} could not be loaded here: {failure.reason}"
    error = pickle.UnpicklingError(message)
    error.__cause__ = RemoteTraceback(failure.traceback)
    return error


def _work_name(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str):
        return describe(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and module else qualname


def _remote_error(
    exc: BaseException, pickling_error: BaseException, formatted: str | None = None
) -> RemoteError:
    return RemoteError(
        f"{type(exc).__module__}.{type(exc).__qualname__}",
        describe(exc, str_of=True),
        "".join(traceback.format_exception(exc)) if formatted is None else formatted,
        _describe(pickling_error),
    )


def loads(data: bytes | memoryview, buffers: list[Any] | None = None) -> Any:
    """Load what :func:`dumps` or its kin pickled; ``buffers`` are those it
    left out of band, as :func:`~aplex._worker.wire.receive` read them."""
    return pickle.loads(data, buffers=buffers or None)


class Pickled(NamedTuple):
    """Something already pickled (with :func:`dumps`), among things that
    are not."""

    data: bytes


def dumps_initargs(initargs: tuple[Any, ...]) -> bytes | tuple[Any, ...]:
    """The initializer's arguments, for a worker process to receive at its
    start: pickled as works are (lambdas and closures may be among them),
    except those that only a starting process may be given (a
    multiprocessing Queue, Lock or Event: pickling them here raises), which
    are left as they are, for multiprocessing to pass on as the standard
    library does. See :func:`loads_initargs`."""
    try:
        return dumps(initargs)
    except Exception:
        pass
    sent: list[Any] = []
    for argument in initargs:
        try:
            sent.append(Pickled(dumps(argument)))
        except Exception:
            sent.append(argument)
    return tuple(sent)


def loads_initargs(initargs: bytes | tuple[Any, ...]) -> tuple[Any, ...]:
    """The initializer's arguments, as :func:`dumps_initargs` sent them."""
    if isinstance(initargs, bytes):
        arguments: tuple[Any, ...] = loads(initargs)
        return arguments
    return tuple(loads(a.data) if type(a) is Pickled else a for a in initargs)
