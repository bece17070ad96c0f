"""The asyncio backend: workers run asyncio (or a loop such as uvloop's).

Nothing of the front end is imported here: a worker process unpickles this
backend and must not load the executors with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["AsyncioBackend"]


class AsyncioBackend:
    """Run workers on asyncio; wake asyncio callers with call_soon_threadsafe."""

    name = "asyncio"
    supports_loop_factory = True

    def run(
        self,
        main: Callable[[], Awaitable[None]],
        *,
        loop_factory: Callable[[], Any] | None = None,
    ) -> None:
        options = {} if loop_factory is None else {"loop_factory": loop_factory}
        anyio.run(main, backend="asyncio", backend_options=options)

    def threadsafe_caller(self) -> Callable[[Callable[[], object]], object]:
        return asyncio.get_running_loop().call_soon_threadsafe
