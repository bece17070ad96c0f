"""aplex: asynchronous pool executors.

Run coroutines and plain functions in pools of worker threads or processes,
each worker running its own event loop with many works at once, through the
``concurrent.futures`` interface.

This package's own namespace is only re-exports. Where things live:

* :mod:`aplex.executor`: the front end (submit, map, run, shutdown);
* :mod:`aplex.futures`: the futures handed to callers;
* :mod:`aplex.load_balancers`: which worker gets each work;
* :mod:`aplex.backends`: the event-loop libraries (asyncio, trio), and the
  executors facing each (``aplex.backends.asyncio`` is what ``aplex``
  exports; ``aplex.backends.trio`` is for trio programs);
* private: ``_dispatch`` (the parent-side coordinator), ``_channels`` (how
  works reach thread and process workers), ``_worker`` (the loop inside
  every worker, written once on AnyIO), ``_messages`` (what travels between).
"""

from ._version import __version__
from .backends.asyncio import ProcessAsyncPoolExecutor, ThreadAsyncPoolExecutor
from .executor import AplexWorkerError, RemoteError
from .futures import AsyncioFuture, ConcurrentFuture
from .load_balancers import LoadBalancer

__all__ = [
    "AplexWorkerError",
    "AsyncioFuture",
    "ConcurrentFuture",
    "LoadBalancer",
    "ProcessAsyncPoolExecutor",
    "RemoteError",
    "ThreadAsyncPoolExecutor",
    "__version__",
]

# Pickled exceptions and the docs name them where users import them from.
for _name in __all__[:-1]:
    globals()[_name].__module__ = "aplex"
del _name
