"""Works that the tests run inside workers.

They live in one importable module so that process workers can unpickle
them by reference.
"""

from __future__ import annotations

import os
import threading
import time

import anyio
import anyio.lowlevel


def identity(x):
    return x


def add(x, y=0):
    return x + y


async def async_add(x, y=0):
    await anyio.lowlevel.checkpoint()
    return x + y


async def async_sleep(seconds, value=None):
    await anyio.sleep(seconds)
    return value


def raise_value_error(message="boom"):
    raise ValueError(message)


async def async_raise_value_error(message="boom"):
    await anyio.lowlevel.checkpoint()
    raise ValueError(message)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


async def async_raise_system_exit():
    await anyio.lowlevel.checkpoint()
    raise SystemExit(3)


def thread_name():
    return threading.current_thread().name


def pid():
    return os.getpid()


def sleep_sync(seconds, value=None):
    time.sleep(seconds)
    return value


def wait_event(event, timeout=30):
    """A plain work that runs until the test sets ``event``."""
    if not event.wait(timeout):
        raise TimeoutError("the test never set the event")
    return "released"


async def async_wait_event(event, timeout=30):
    """A coroutine work that runs until the test sets ``event`` (a
    threading.Event), checking it without blocking its loop."""
    with anyio.fail_after(timeout):
        while not event.is_set():
            await anyio.sleep(0.005)
    return "released"


async def async_wait_then_mark(started, cleaned_up, timeout=30):
    """Set ``started``, then wait to be cancelled; on cancellation set
    ``cleaned_up`` (the work's own cleanup, which the test observes)."""
    started.set()
    try:
        await anyio.sleep(timeout)
    finally:
        cleaned_up.set()
    return "not cancelled"
