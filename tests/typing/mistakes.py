"""Mistakes a user's type checker must catch in code using aplex.

tests/test_typing.py runs ``mypy --strict`` on this file against aplex as
installed from its wheel. Each line ending in ``# E: <codes>`` is a planted
mistake: mypy must report an error on exactly those lines, with one of the
error codes listed, and on no other line. ``|`` separates the codes a correct
typing may give: ``call-overload`` where an overloaded method or constructor
matches no variant, which is also what mypy says of a wrong assignment from an
overloaded call (it infers the call's type from the variable's). Type-checked
only, never run.
"""

from __future__ import annotations

import asyncio

from aplex import ConcurrentFuture, ProcessAsyncPoolExecutor, ThreadAsyncPoolExecutor
from aplex.backends import trio as aplex_trio
from aplex.load_balancers import RoundRobin


def add(x: int, y: int) -> int:
    return x + y


async def async_add(x: int, y: int) -> int:
    return x + y


def square(x: int) -> int:
    return x * x


def constructors() -> None:
    ThreadAsyncPoolExecutor(pool_size="two")  # E: arg-type|call-overload
    ThreadAsyncPoolExecutor(pool_sise=2)  # E: call-arg|call-overload
    ThreadAsyncPoolExecutor(2)  # E: misc|call-arg|call-overload
    ProcessAsyncPoolExecutor(load_balancer=RoundRobin())  # E: arg-type|call-overload
    ProcessAsyncPoolExecutor(max_works_per_worker=1.5)  # E: arg-type|call-overload
    loop = asyncio.new_event_loop()
    ThreadAsyncPoolExecutor(worker_loop_factory=loop)  # E: arg-type|call-overload
    ThreadAsyncPoolExecutor(mp_context="spawn")  # E: call-arg|call-overload
    ProcessAsyncPoolExecutor(mp_context=3)  # E: arg-type|call-overload
    ProcessAsyncPoolExecutor(initializer=42)  # E: arg-type|call-overload
    aplex_trio.ThreadAsyncPoolExecutor(awaitable=True)  # E: call-arg|arg-type|call-overload
    aplex_trio.ProcessAsyncPoolExecutor(future_loop=loop)  # E: call-arg|arg-type|call-overload
    ProcessAsyncPoolExecutor(max_works_per_child=0.5)  # E: arg-type|call-overload
    ThreadAsyncPoolExecutor(max_works_per_child=5)  # E: arg-type|call-overload
    ThreadAsyncPoolExecutor(kill_on_cancel=True)  # E: arg-type|call-overload
    ThreadAsyncPoolExecutor().terminate_workers()  # E: attr-defined


def submit_and_map() -> None:
    pool = ThreadAsyncPoolExecutor()
    pool.submit(add, "x", "y")  # E: arg-type|call-overload
    pool.submit(add, 1)  # E: call-arg|call-overload
    pool.submit(add, 1, 2, 3)  # E: call-arg|call-overload
    pool.submit(add, 1, y=2, z=3)  # E: call-arg|call-overload
    pool.submit(async_add, 1, "2")  # E: arg-type|call-overload
    pool.submit(42)  # E: arg-type|call-overload
    pool.map(square, ["a", "b"])  # E: arg-type|call-overload|misc
    text: str = pool.submit(add, 1, 2).result()  # E: assignment|call-overload
    pool.submit(add, 1, 2).result().upper()  # E: attr-defined
    future: ConcurrentFuture[str] = pool.submit(add, 1, 2)  # E: assignment|call-overload


async def awaiting() -> None:
    pool = ThreadAsyncPoolExecutor()
    await pool.submit(add, 1, 2)  # E: misc
    wrong: str = await pool.run(add, 1, 2)  # E: assignment|call-overload
    await pool.run(add, 1, "2")  # E: arg-type|call-overload
    await pool.run(square)  # E: call-arg|call-overload

    awaitable = ThreadAsyncPoolExecutor(awaitable=True)
    sync_view: ConcurrentFuture[int] = awaitable.submit(add, 1, 2)  # E: assignment|call-overload
    for value in awaitable.map(square, [1, 2]):  # E: attr-defined|misc
        print(value)
    text: str = await awaitable.submit(async_add, 1, 2)  # E: assignment|call-overload

    trio_pool = aplex_trio.ThreadAsyncPoolExecutor()
    for item in trio_pool.map(square, [1, 2]):  # E: attr-defined|misc
        print(item)
    name: str = await trio_pool.submit(add, 1, 2)  # E: assignment|call-overload


async def context_managers() -> None:
    # `with` and `async with` give the executor itself, not Any.
    with ThreadAsyncPoolExecutor() as pool:
        pool.sumbit(add, 1, 2)  # E: attr-defined
    async with aplex_trio.ProcessAsyncPoolExecutor() as trio_pool:
        trio_pool.submit(add, "1", 2)  # E: arg-type|call-overload
