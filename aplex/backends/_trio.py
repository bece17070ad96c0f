"""The trio backend: workers run trio.

Nothing of the front end is imported here: a worker process unpickles this
backend and must not load the executors with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import trio

__all__ = ["TrioBackend"]


class TrioBackend:
    """Run workers on trio; wake trio callers through their TrioToken."""

    name = "trio"
    supports_loop_factory = False

    def run(
        self,
        main: Callable[[], Awaitable[None]],
        *,
        loop_factory: Callable[[], Any] | None = None,
    ) -> None:
        anyio.run(main, backend="trio")

    def threadsafe_caller(self) -> Callable[[Callable[[], object]], object]:
        return trio.lowlevel.current_trio_token().run_sync_soon
