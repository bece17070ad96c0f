"""How items cross a process boundary, and what happens when one cannot.

Works go to workers with cloudpickle, so lambdas, closures and functions of
``__main__`` or a notebook can be sent. The standard pickle is tried first,
as it is several times faster: its result is kept unless it failed or names
``__main__``, whose functions and classes the standard pickle sends by a
reference that a worker may not resolve (a script run with ``-c``, a
notebook), where cloudpickle sends them by value. Results come back with the standard
pickle first (they are mostly data, and it is faster) and cloudpickle if
that fails. A batch is pickled whole; only when that fails is each item
tried alone, so that the one that cannot be sent fails alone, with an error
that names what could not be pickled.

An exception travels with its traceback as text, attached on arrival as its
``__cause__`` (as :mod:`concurrent.futures` does); one that cannot be pickled
arrives as a :class:`RemoteError` that keeps its type name, message and
traceback text.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._exceptions import RemoteError, RemoteTraceback
from .messages import FAILED, ResultItem, WorkerFailure, WorkItem

PROTOCOL = pickle.HIGHEST_PROTOCOL


def _rebuild_exception(exc: BaseException, text: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(text)
    return exc


class _ExceptionWithTraceback:
    """Pickles as its exception, with the traceback text as its cause."""

    def __init__(self, exc: BaseException):
        self.exc = exc
        self.text = '\n"""\n' + "".join(traceback.format_exception(exc)) + '"""'

    def __reduce__(self) -> tuple[Callable[..., BaseException], tuple[Any, ...]]:
        return _rebuild_exception, (self.exc, self.text)


def dumps_works(items: list[Any]) -> tuple[bytes, list[ResultItem]]:
    """Pickle a batch for a worker.

    Returns:
        The pickled batch, and a failed result for each work that could not
        be pickled (left out of the batch).
    """
    data = dumps_works_or_none(items)
    if data is not None:
        return data, []
    sendable, failed = [], []
    for item in items:
        try:
            _cloudpickle(item)
        except Exception as exc:
            failed.append(ResultItem(item.work_id, FAILED, _work_pickling_error(item, exc)))
        else:
            sendable.append(item)
    return _cloudpickle(sendable), failed


def dumps_works_or_none(items: list[Any]) -> bytes | None:
    """Pickle a batch for a worker; None if some item cannot be pickled."""
    try:
        return dumps(items)
    except Exception:
        return None


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for a worker: with the standard pickle if it can be
    trusted to, else with cloudpickle (see the module doc)."""
    try:
        data = pickle.dumps(obj)
        if b"__main__" not in data:
            return data
    except Exception:
        pass  # a lambda, a closure...: cloudpickle's work
    return _cloudpickle(obj)


def _cloudpickle(obj: Any) -> bytes:
    data: bytes = cloudpickle.dumps(obj, protocol=PROTOCOL)
    return data


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


def _remote_error(exc: BaseException, pickling_error: Exception) -> RemoteError:
    return RemoteError(
        f"{type(exc).__module__}.{type(exc).__qualname__}",
        str(exc),
        "".join(traceback.format_exception(exc)),
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
        return WorkerFailure(result.where, _remote_error(wrapped.exc, pickling_error))
    work_id, status, value = result
    if status == FAILED:
        return ResultItem(work_id, FAILED, _remote_error(value.exc, pickling_error))
    error = pickle.PicklingError(
        f"cannot send the result back from the worker: a {type(value).__name__} object "
        f"could not be pickled ({type(pickling_error).__name__}: {pickling_error})"
    )
    return ResultItem(work_id, FAILED, _ExceptionWithTraceback(error))


def loads(data: bytes) -> Any:
    return pickle.loads(data)
