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

An exception travels with its traceback as text, attached on arrival as its
``__cause__`` (as :mod:`concurrent.futures` does); its traceback objects are
dropped once formatted, so that the frames of the work, and whatever they
refer to, are freed with the work. One that cannot be pickled arrives as a
:class:`RemoteError` that keeps its type name, message and traceback text.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import cloudpickle

from .._exceptions import RemoteError, RemoteTraceback
from .messages import FAILED, Ready, ResultItem, TasksStarted, WorkerFailure, WorkItem

PROTOCOL = pickle.HIGHEST_PROTOCOL


def _rebuild_exception(exc: BaseException, text: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(text)
    return exc


class _ExceptionWithTraceback:
    """Pickles as its exception, with the traceback text as its cause."""

    def __init__(self, exc: BaseException):
        self.exc = exc
        self.formatted = "".join(traceback.format_exception(exc))
        self.text = '\n"""\n' + self.formatted + '"""'
        _drop_tracebacks(exc)

    def __reduce__(self) -> tuple[Callable[..., BaseException], tuple[Any, ...]]:
        return _rebuild_exception, (self.exc, self.text)


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


def dumps_works(items: list[Any], *, main: bool | None = None) -> tuple[bytes, list[ResultItem]]:
    """Pickle a batch for a worker.

    Args:
        items: The batch.
        main: Whether the worker has this process's main module (see
            :func:`dumps`).

    Returns:
        The pickled batch, and a failed result for each work that could not
        be pickled (left out of the batch).
    """
    data = dumps_works_or_none(items, main=main)
    if data is not None:
        return data, []
    sendable, failed = [], []
    for item in items:
        try:
            _cloudpickle(item, main)
        except Exception as exc:
            failed.append(ResultItem(item.work_id, FAILED, _work_pickling_error(item, exc)))
        else:
            sendable.append(item)
    return _cloudpickle(sendable, main), failed


def dumps_works_or_none(items: list[Any], *, main: bool | None = None) -> bytes | None:
    """Pickle a batch for a worker; None if some item cannot be pickled."""
    try:
        return dumps(items, main=main)
    except Exception:
        return None


def dumps(obj: Any, *, main: bool | None = None) -> bytes:
    """Pickle ``obj`` for a worker: with the standard pickle if it can be
    trusted to, else with cloudpickle (see the module doc).

    Args:
        obj: What to pickle.
        main: Whether the worker has this process's main module, so that
            its functions and classes may go by reference; None for a worker
            process's answer (:func:`workers_import_main`). A Ray actor has
            not: False.
    """
    if main is None:
        main = workers_import_main()
    try:
        data = pickle.dumps(obj)
        if main or b"__main__" not in data:
            return data
    except Exception:
        pass  # a lambda, a closure...: cloudpickle's work
    return _cloudpickle(obj, main)


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


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, except for the functions and classes of an importable
    main module, which it would send by value: they go by reference, so a
    lambda that calls one of them runs it in the worker's own module."""

    def __init__(self, file: Any, main: bool | None):
        super().__init__(file, protocol=PROTOCOL)
        self._main = main

    def reducer_override(self, obj: Any) -> Any:
        if _is_main_global(obj) and (workers_import_main() if self._main is None else self._main):
            return NotImplemented  # the standard pickle's save_global: by reference
        return super().reducer_override(obj)


def _is_main_global(obj: Any) -> bool:
    if not isinstance(obj, (types.FunctionType, type)) or obj.__module__ != "__main__":
        return False
    found: Any = sys.modules.get("__main__")
    for name in obj.__qualname__.split("."):
        found = getattr(found, name, None)
    return found is obj


def _cloudpickle(obj: Any, main: bool | None = None) -> bytes:
    with io.BytesIO() as file:
        _Pickler(file, main).dump(obj)
        return file.getvalue()


def _work_pickling_error(item: WorkItem, exc: Exception) -> pickle.PicklingError:
    name = getattr(item.fn, "__qualname__", repr(item.fn))
    culprit = "the work"
    candidates: list[tuple[str, Any]] = [("the work", item.fn)]
    arguments = [a for chunk in item.args for a in chunk] if item.chunk else list(item.args)
    candidates += [(f"argument {i} ({type(a).__name__})", a) for i, a in enumerate(arguments)]
    candidates += [
        (f"keyword argument {k!r} ({type(v).__name__})", v) for k, v in item.kwargs.items()
    ]
    for label, value in candidates:
        try:
            _cloudpickle(value)
        except Exception:
            culprit = label
            break
    error = pickle.PicklingError(
        f"cannot send work {name} to a worker: {culprit} could not be "
        f"pickled ({type(exc).__name__}: {exc})"
    )
    error.__cause__ = exc
    return error


def dumps_results(results: list[Any]) -> bytes:
    """Pickle a batch of results for the parent; what cannot be pickled
    becomes an error the parent can read."""
    results = [_with_traceback(result) for result in results]
    try:
        return pickle.dumps(results)
    except Exception:
        pass
    try:
        return _cloudpickle(results)
    except Exception:
        pass
    return _cloudpickle([_sendable_result(result) for result in results])


def _with_traceback(result: Any) -> Any:
    if type(result) is TasksStarted or type(result) is Ready:
        return result
    if type(result) is WorkerFailure:
        return WorkerFailure(result.where, _ExceptionWithTraceback(_round_trips(result.error)))  # type: ignore[arg-type]
    work_id, status, value = result
    if status == FAILED:
        return ResultItem(work_id, FAILED, _ExceptionWithTraceback(_round_trips(value)))
    return result


def _round_trips(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives pickling, else a RemoteError that
    describes it. Exceptions whose ``__init__`` takes other arguments than
    their ``args`` pickle fine and fail to unpickle: better found here, where
    the work is known, than in the parent."""
    try:
        pickle.loads(dumps(exc))
    except Exception as error:
        return _remote_error(exc, error)
    return exc


def _remote_error(
    exc: BaseException, pickling_error: Exception, formatted: str | None = None
) -> RemoteError:
    return RemoteError(
        f"{type(exc).__module__}.{type(exc).__qualname__}",
        str(exc),
        "".join(traceback.format_exception(exc)) if formatted is None else formatted,
        f"{type(pickling_error).__name__}: {pickling_error}",
    )


def _sendable_result(result: Any) -> Any:
    try:
        _cloudpickle(result)
        return result
    except Exception as exc:
        pickling_error = exc
    if type(result) is WorkerFailure:
        wrapped: _ExceptionWithTraceback = result.error  # type: ignore[assignment]  # see _with_traceback
        return WorkerFailure(
            result.where, _remote_error(wrapped.exc, pickling_error, wrapped.formatted)
        )
    work_id, status, value = result
    if status == FAILED:
        return ResultItem(
            work_id, FAILED, _remote_error(value.exc, pickling_error, value.formatted)
        )
    error = pickle.PicklingError(
        f"cannot send the result back from the worker: a {type(value).__name__} object "
        f"could not be pickled ({type(pickling_error).__name__}: {pickling_error})"
    )
    return ResultItem(work_id, FAILED, _ExceptionWithTraceback(error))


def loads(data: bytes) -> Any:
    return pickle.loads(data)


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
