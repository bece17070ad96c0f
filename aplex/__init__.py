"""aplex: asynchronous pool executors.

Run coroutines and plain functions in pools of worker threads or processes,
each worker running its own event loop with many works at once, through the
``concurrent.futures`` interface.

This package's own namespace is only re-exports, resolved on first use: a
worker process, which imports ``aplex._worker`` (and, started by spawn or a
fork server, the user's main module), loads none of the front end until it
asks for it. Where things live:

* :mod:`aplex.executor`: what every executor shares (run, shutdown,
  statistics), built from a worker kind and a worker backend;
* :mod:`aplex.backends.asyncio`: the asyncio-facing executors (the ones
  exported here); :mod:`aplex.backends.trio`: those for trio programs;
* :mod:`aplex.futures`: the futures handed to callers;
* :mod:`aplex.load_balancers`: which worker gets each work;
* :mod:`aplex.backends`: the event-loop libraries and their registry;
* private, in the order a work flows: ``_dispatch`` (the parent-side
  coordinator), ``_threads``, ``_processes`` and ``_ray`` (the worker kinds),
  ``_worker`` (what runs inside a worker: its loop, its process entry, the
  messages and how they are pickled); ``_exceptions`` holds every error.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._exceptions import AplexWorkerError, RemoteError, WorkerDiedError
    from .backends.asyncio import (
        ProcessAsyncPoolExecutor,
        RayAsyncPoolExecutor,
        ThreadAsyncPoolExecutor,
    )
    from .futures import AsyncioFuture, ConcurrentFuture, as_completed
    from .load_balancers import LoadBalancer

__all__ = [
    "AplexWorkerError",
    "AsyncioFuture",
    "ConcurrentFuture",
    "LoadBalancer",
    "ProcessAsyncPoolExecutor",
    "RayAsyncPoolExecutor",
    "RemoteError",
    "ThreadAsyncPoolExecutor",
    "WorkerDiedError",
    "__version__",
    "as_completed",
]

# Each exported name, and the module that defines it.
_exports = {
    "AplexWorkerError": "._exceptions",
    "RemoteError": "._exceptions",
    "WorkerDiedError": "._exceptions",
    "ProcessAsyncPoolExecutor": ".backends.asyncio",
    "RayAsyncPoolExecutor": ".backends.asyncio",
    "ThreadAsyncPoolExecutor": ".backends.asyncio",
    "AsyncioFuture": ".futures",
    "ConcurrentFuture": ".futures",
    "as_completed": ".futures",
    "LoadBalancer": ".load_balancers",
}


def __getattr__(name: str) -> Any:
    module = _exports.get(name)
    if module is None:
        raise AttributeError(f"module 'aplex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
