"""What runs in a Ray actor: one aplex worker, reached through actor calls.

The parent's side is :mod:`aplex._ray`. Each worker is one Ray *async actor*
of :class:`RayWorker`. Its methods run on the event loop Ray gives an async
actor, in a thread of Ray's; aplex's own worker loop, :func:`serve`, runs on
an event loop of the worker backend's (asyncio, a loop factory's such as
uvloop, or trio) in a thread of its own, started with the actor. The two
meet in an :class:`_ActorEndpoint`::

    parent ── push(seq, batch) ──> Ray's actor loop ── items ──> serve's loop
    parent <── pull() ───────────  Ray's actor loop <── results ── serve's loop

* ``push`` carries a pickled batch of items (works, cancellations, a stop).
  Ray may run an async actor's calls out of order, so each batch has a
  sequence number, and a batch that arrives early waits for those before it.
* ``pull`` is a long poll: it returns the result batches gathered since the
  last one as soon as there is one, and says when the worker has exited. The
  parent keeps one pull in flight per actor.

Running serve in its own thread, rather than on Ray's loop, lets any backend
and loop factory run it, and keeps the actor answering ``push`` while a
plain work blocks serve's loop: a cancellation or a stop still gets in.

This module, like the rest of :mod:`aplex._worker`, imports nothing of the
front end, and nothing of Ray: Ray makes an actor of the class it is given.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from functools import partial
from typing import Any

from .channel import ThreadChannel
from .messages import ABORT, WorkerFailure
from .pickling import dumps_results, loads
from .process import tune_collector
from .serve import serve


class _ActorEndpoint(ThreadChannel):
    """serve's channel, between Ray's actor loop and serve's own loop.

    Items go in from Ray's loop (:meth:`put`) and serve takes them
    (:meth:`receive`), as in a thread worker's channel; serve sends results
    (:meth:`send`), pickled on its own thread, and a pull on Ray's loop takes
    them (:meth:`take`), woken through Ray's loop only while it waits.
    """

    def __init__(self) -> None:
        # serve flags its loop blocked by a plain function here, where the
        # parent, maybe on another machine, cannot read it.
        super().__init__(self._send_results, memoryview(bytearray(1)))
        self._results: list[bytes] = []
        self._exited = False
        # Why the worker stopped, if not told to: a traceback, as text.
        self._failure: str | None = None
        # Set while a pull waits for results: the future it awaits.
        self._puller: asyncio.Future[None] | None = None

    def fail(self, exc: BaseException) -> None:
        """Stop the worker, for ``exc``: the parent breaks the pool."""
        with self._lock:
            if self._failure is None:
                self._failure = "".join(traceback.format_exception(exc))
        self.put([ABORT])

    async def take(self) -> tuple[list[bytes], bool, str | None]:
        """Wait for results or the worker's exit (on Ray's loop).

        Returns:
            The result batches; whether the worker has exited (nothing more
            will come); and why, if it was not told to.
        """
        while True:
            with self._lock:
                if self._results or self._exited:
                    results, self._results = self._results, []
                    return results, self._exited, self._failure
                self._puller = asyncio.get_running_loop().create_future()
                puller = self._puller
            await puller

    def _send_results(self, results: list[Any]) -> None:
        data = dumps_results(results)
        with self._lock:
            self._results.append(data)
            self._wake_puller()

    def _wake_puller(self) -> None:
        # Under the lock, from serve's thread.
        puller, self._puller = self._puller, None
        if puller is not None:
            puller.get_loop().call_soon_threadsafe(_set_result, puller)

    def close(self) -> None:
        super().close()
        with self._lock:
            self._exited = True
            self._wake_puller()


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RayWorker:
    """One aplex worker, as the class of a Ray async actor.

    Args:
        setup: The pickled ``(backend, loop_factory, initializer, initargs)``.
        name: The worker's name, for its thread.
    """

    def __init__(self, setup: bytes, name: str):
        # The actor's process runs nothing else: Ray starts one per actor.
        tune_collector()
        self._endpoint = _ActorEndpoint()
        self._next_seq = 0
        self._early: dict[int, bytes] = {}  # batches that overtook one before them
        self._thread = threading.Thread(
            target=self._run, args=(setup,), name=f"aplex-{name}", daemon=True
        )
        self._thread.start()

    async def push(self, seq: int, data: bytes) -> None:
        """Take batch number ``seq`` of items for serve, in order."""
        if seq != self._next_seq:
            self._early[seq] = data
            return
        endpoint = self._endpoint
        while True:
            try:
                items = loads(data)
            except BaseException as exc:
                # Its works cannot be told apart to answer them one by one:
                # as in a worker process, the worker stops and the pool
                # breaks, rather than leave their callers waiting.
                endpoint.fail(exc)
                return
            endpoint.put(items)
            self._next_seq += 1
            next_data = self._early.pop(self._next_seq, None)
            if next_data is None:
                return
            data = next_data

    async def pull(self) -> tuple[list[bytes], bool, str | None]:
        """Wait for result batches; see :meth:`_ActorEndpoint.take`."""
        return await self._endpoint.take()

    def _run(self, setup: bytes) -> None:
        endpoint = self._endpoint
        try:
            try:
                backend, loop_factory, initializer, initargs = loads(setup)
            except BaseException as exc:
                endpoint.send([WorkerFailure("initializer", exc)])
                return

            backend.run(partial(serve, endpoint, initializer, initargs), loop_factory=loop_factory)
        except BaseException as exc:  # a fault of the loop itself
            endpoint.fail(exc)
        finally:
            endpoint.close()
