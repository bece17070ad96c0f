"""Backends: the event-loop libraries aplex runs on.

A backend names one event-loop library and says two things: how a worker
runs its loop, and how a caller on that library is woken from another thread
when a result arrives. Everything else, the worker's own loop included, is
written once on AnyIO. The built-in backends, ``"asyncio"`` and ``"trio"``,
are imported on first use, so trio stays optional; a third one is added with
:func:`register_backend` and needs no change to the executors.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import sniffio

__all__ = ["Backend", "get_backend", "register_backend", "current_backend"]


@runtime_checkable
class Backend(Protocol):
    """What aplex needs to know of an event-loop library."""

    #: The name users pass as ``worker_backend``, and that
    #: :func:`sniffio.current_async_library` reports inside its loops.
    name: str

    #: Whether :meth:`run` honours a ``loop_factory``.
    supports_loop_factory: bool

    def run(
        self,
        main: Callable[[], Awaitable[None]],
        *,
        loop_factory: Callable[[], Any] | None = None,
    ) -> None:
        """Run ``main`` on a new event loop in the calling thread, to its end."""

    def threadsafe_caller(self) -> Callable[[Callable[[], object]], object]:
        """Return a function that schedules a callback on the loop running now.

        Called inside a running loop; the function it returns may be called
        from any thread and must not block.
        """


_registry: dict[str, Backend] = {}
# Built-in backends, imported on first use.
_builtin = {
    "asyncio": ("aplex.backends._asyncio", "AsyncioBackend"),
    "trio": ("aplex.backends._trio", "TrioBackend"),
}


def register_backend(backend: Backend) -> None:
    """Make ``backend`` available under ``backend.name``.

    Raises:
        TypeError: ``backend`` does not have the members of :class:`Backend`.
    """
    if not isinstance(backend, Backend):
        raise TypeError(
            f"{backend!r} is not a Backend: it needs name, supports_loop_factory, "
            "run() and threadsafe_caller()"
        )
    _registry[backend.name] = backend


def get_backend(name: str) -> Backend:
    """Return the backend registered under ``name``.

    Raises:
        ValueError: No such backend, or its library is not installed (the
            message says what to install).
    """
    backend = _registry.get(name)
    if backend is not None:
        return backend
    builtin = _builtin.get(name)
    if builtin is None:
        known = ", ".join(sorted({*_registry, *_builtin}))
        raise ValueError(
            f"unknown backend {name!r}; known backends: {known}. For another event loop, "
            "install its library and add a backend with aplex.backends.register_backend()"
        )
    module, class_name = builtin
    try:
        backend = getattr(importlib.import_module(module), class_name)()
    except ImportError as exc:
        raise ValueError(
            f"backend {name!r} needs the {name} package: pip install 'aplex[{name}]'"
        ) from exc
    return _registry.setdefault(name, backend)


def current_backend() -> Backend:
    """Return the backend of the event loop running in this thread.

    Raises:
        RuntimeError: No event loop that aplex knows is running.
    """
    try:
        name = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError("this must be called from inside a running event loop") from None
    return get_backend(name)
