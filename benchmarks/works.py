"""The works every system runs.

Module-level functions in an importable module, so that every process pool
(pickle by reference, or cloudpickle) can send them to its workers. The
``async_*`` twins are for aiomultiprocess, which runs coroutine functions
only; everything else calls the plain ones.
"""

from __future__ import annotations

import asyncio
import os


def identity(x):
    return x


def echo(payload: bytes) -> bytes:
    return payload


def cpu_burn(iterations: int) -> int:
    """Pure-Python arithmetic: holds the GIL for the whole call."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def worker_pid(_: object = None) -> int:
    return os.getpid()


async def async_identity(x):
    return x


async def async_echo(payload: bytes) -> bytes:
    return payload


async def async_cpu_burn(iterations: int) -> int:
    return cpu_burn(iterations)


async def async_worker_pid(_: object = None) -> int:
    return os.getpid()


async def asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def trio_sleep(seconds: float) -> None:
    import trio

    await trio.sleep(seconds)


#: The coroutine twin of each plain work, for systems that run coroutines only.
ASYNC_TWINS = {
    identity: async_identity,
    echo: async_echo,
    cpu_burn: async_cpu_burn,
    worker_pid: async_worker_pid,
}
