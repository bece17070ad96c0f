"""Ray workers, the parent's side: one Ray async actor per worker.

Each worker is an actor of :class:`aplex._worker.ray_actor.RayWorker`, which
runs aplex's own worker loop; the Dispatcher above is the same as for threads
and processes, so balancing, ``max_works_per_worker``, the waiting queue and
the statistics stay here, in the parent. Works travel the way they travel to
a worker process, pickled in batches (see :mod:`aplex._worker.pickling`), as
the arguments and results of actor calls:

* a *feeder* thread pickles what :meth:`RayWorkers.put` left for each worker
  and sends it with ``push(seq, batch)``, numbered per worker, since Ray may
  run an async actor's calls out of order. Calls go out from this thread, not
  the caller's: an actor call costs a fraction of a millisecond, and the
  Dispatcher calls ``put`` under its lock. A work that cannot be pickled
  fails alone, there;
* a *reader* thread keeps one ``pull()`` in flight per actor (a long poll,
  answered with the result batches gathered since the last one), waits on
  all of them at once with ``ray.wait``, and hands the results to the
  Dispatcher. A pull that fails because its actor died (``ray.kill``, its
  node lost, ``os._exit`` in a work) is that worker's death.

Two threads per pool, not per worker: an actor call does not block, and one
``ray.wait`` watches every actor. Cancelling a work is aplex's own
``CancelItem``, pushed like a work, never ``ray.cancel``.

Ray is imported only when a Ray executor is made; ``import aplex`` never
imports it. A Ray instance aplex starts itself (``address`` given, or none
initialised in this process) is shut down when the last pool using it has
stopped; one the program initialised is left alone.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ._dispatch import OnExit, OnResults
from ._exceptions import RemoteTraceback
from ._worker.messages import CONTROLS, KILL, RESTART
from ._worker.pickling import dumps, dumps_controls, dumps_works, loads
from ._worker.ray_actor import RayWorker
from .backends import Backend

INSTALL = 'pip install "aplex[ray]"'

# Actor options aplex sets itself, and why a user's other value would break it.
_ENFORCED = {
    "max_restarts": (
        0,
        "a restarted actor would have lost the works it ran: aplex treats an "
        "actor's death as its worker's death",
    ),
    "max_task_retries": (
        0,
        "a retried call would deliver a batch of works or results twice",
    ),
}
# Actor options aplex cannot run with, and why.
_REJECTED = {
    "max_concurrency": (
        "each actor must take the parent's batches while a long poll for its "
        "results waits; Ray's default for async actors lets it"
    ),
    "concurrency_groups": "aplex's actor calls must share one concurrency group",
    "name": "aplex names each worker's actor itself",
    "get_if_exists": "each pool starts actors of its own",
}


def import_ray() -> Any:
    """Import Ray, or say how to install it.

    Raises:
        ImportError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"Ray executors need Ray: {INSTALL}") from exc
    return ray


def check_actor_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the actor options to use, given the user's.

    Raises:
        TypeError: ``options`` is not a mapping.
        ValueError: An option aplex cannot run with (the message says why).
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"ray_actor_options must be a mapping, got {options!r}")
    for key, why in _REJECTED.items():
        if key in options:
            raise ValueError(f"ray_actor_options may not set {key!r}: {why}")
    if options.get("lifetime") == "detached":
        raise ValueError(
            "ray_actor_options may not set lifetime='detached': a detached actor "
            "would outlive its pool and this program; aplex stops its workers itself"
        )
    checked = dict(options)
    for key, (value, why) in _ENFORCED.items():
        if checked.setdefault(key, value) != value:
            raise ValueError(f"ray_actor_options must leave {key!r} at {value}: {why}")
    # Spread the workers over the cluster's nodes, unless told otherwise:
    # that is what a pool of actors is for.
    checked.setdefault("scheduling_strategy", "SPREAD")
    return checked


class RayKind:
    """Ray actors as workers, as an executor is composed of them.

    Args:
        address: The Ray cluster to connect to, as for ``ray.init``; None
            uses the Ray instance this process has initialised, if any, and
            else calls ``ray.init()``, which joins the cluster of
            ``RAY_ADDRESS`` or starts a local instance.
        ray_actor_options: Options for each worker's actor, as for Ray's
            ``.options()`` (resources, ``runtime_env``, a scheduling
            strategy...).

    Raises:
        ImportError: Ray is not installed.
        TypeError, ValueError: Options aplex cannot run with, or that Ray
            rejects.
    """

    #: What the worker handles are called: "RayWorker-0", ...
    name = "Ray"
    in_process = False

    def __init__(self, *, address: str | None, ray_actor_options: Mapping[str, Any] | None):
        ray = import_ray()
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a string or None, got {address!r}")
        self._address = address
        self._options = check_actor_options(ray_actor_options)
        # Ray checks the options' names and values now, before anything starts.
        _actor_class(ray).options(**self._options)

    def start(
        self,
        names: list[str],
        *,
        backend: Backend,
        loop_factory: Callable[[], Any] | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        on_results: OnResults,
        on_exit: OnExit,
    ) -> RayWorkers:
        """Connect to Ray, and start one actor per name."""
        ray = import_ray()
        # Pickled once, as works are: they may be lambdas or closures. An
        # actor has not this program's main module: what it defines goes by
        # value, and so do initargs (a multiprocessing Queue or Lock cannot
        # reach another machine).
        setup = dumps((backend, loop_factory, initializer, initargs), main=False)
        _runtime.acquire(ray, self._address)
        try:
            return RayWorkers(
                ray,
                self._options,
                names,
                setup,
                on_results=on_results,
                on_exit=on_exit,
            )
        except BaseException:
            _runtime.release(ray)
            raise


_actor_classes: dict[int, Any] = {}


def _actor_class(ray: Any) -> Any:
    """The Ray actor class of RayWorker, made once per Ray module."""
    actor_class = _actor_classes.get(id(ray))
    if actor_class is None:
        actor_class = _actor_classes.setdefault(id(ray), ray.remote(RayWorker))
    return actor_class


class _Runtime:
    """The Ray instance the pools of this process use, and who started it.

    aplex shuts down a Ray instance it started, once the last pool using it
    has stopped; a Ray instance initialised by the program is left alone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._started: str | None = None  # the address aplex passed to ray.init

    def acquire(self, ray: Any, address: str | None) -> None:
        with self._lock:
            if ray.is_initialized():
                if address is not None and address != self._started:
                    raise RuntimeError(
                        "Ray is already initialised in this process; pass address=None "
                        f"to use it rather than connect to {address!r}"
                    )
            else:
                ray.init(address=address)
                self._started = "" if address is None else address
            self._users += 1

    def release(self, ray: Any) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._started is not None:
                self._started = None
                if ray.is_initialized():
                    ray.shutdown()


_runtime = _Runtime()


class RayWorkers:
    """A pool of Ray actors, each running an aplex worker; see the module doc."""

    def __init__(
        self,
        ray: Any,
        actor_options: dict[str, Any],
        names: list[str],
        setup: bytes,
        *,
        on_results: OnResults,
        on_exit: OnExit,
    ):
        self._ray = ray
        self._on_results = on_results
        self._on_exit = on_exit
        # Actor names are unique in their Ray namespace, which other programs
        # connected to the cluster may share.
        token = secrets.token_hex(4)
        actor_class = _actor_class(ray)
        self._actors = [
            actor_class.options(**actor_options, name=f"aplex-{name}-{token}").remote(setup, name)
            for name in names
        ]
        # An actor's loop may be on another machine: no flag says when a plain
        # function runs on it; the balancer sees it blocked only while plain
        # functions sent to it have not ended (counted by the dispatcher).
        self.blocked = memoryview(bytearray(len(names)))
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._outboxes: list[list[Any]] = [[] for _ in names]
        self._to_feed: list[int] = []  # workers whose outbox has items, in order
        self._exited = [False] * len(names)
        self._aborting = False
        self._closing = False
        self._failure: BaseException | None = None  # what stopped the feeder
        prefix = f"aplex-{names[0].rsplit('-', 1)[0]}" if names else "aplex-Ray"
        self._feeder = threading.Thread(target=self._feed, name=f"{prefix}-feeder")
        self._reader = threading.Thread(target=self._read, name=f"{prefix}-reader")
        self._feeder.start()
        self._reader.start()

    # -- the Dispatcher's side ---------------------------------------------

    def put(self, index: int, items: list[Any]) -> None:
        if RESTART in items or KILL in items:
            # The Ray executors offer none of the options that replace or
            # kill one worker (on_worker_death, max_works_per_child,
            # kill_on_cancel): a dead actor breaks the pool.
            raise NotImplementedError(
                "Ray actors are not replaced one by one: a dead actor breaks the pool"
            )
        with self._lock:
            if self._exited[index] or self._aborting:
                return  # the worker is gone: the dispatcher learns it from on_exit
            outbox = self._outboxes[index]
            if not outbox:
                self._to_feed.append(index)
                self._ready.notify()
            outbox.extend(items)

    def abort(self) -> None:
        # Called under the Dispatcher's lock: the feeder kills the actors,
        # as each kill is a call to Ray's control store.
        with self._lock:
            self._aborting = True
            self._ready.notify()

    def stop_now(self, busy: Collection[int]) -> None:
        # Ctrl-C: an actor may be on another machine, and is stopped the
        # surest way, coroutine works or not.
        self.abort()

    def kill_remaining(self) -> None:
        self.abort()

    def signal_all(self, *, kill: bool) -> None:
        # Ray executors do not offer terminate_workers() or kill_workers().
        raise NotImplementedError("a Ray actor is not a process of this machine to signal")

    def join(self, timeout: float | None = None) -> bool:
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout)
        return not self._reader.is_alive() or threading.current_thread() is self._reader

    def runs_current_thread(self) -> bool:
        return threading.current_thread() in (self._feeder, self._reader)

    # -- the feeder --------------------------------------------------------

    def _feed(self) -> None:
        sequences = [0] * len(self._actors)
        while True:
            with self._lock:
                while not (self._to_feed or self._aborting or self._closing):
                    self._ready.wait()
                if self._aborting or self._closing:
                    break
                batches = [(index, self._outboxes[index]) for index in self._to_feed]
                for index in self._to_feed:
                    self._outboxes[index] = []
                self._to_feed = []
            try:
                for index, items in batches:
                    for data in self._pickle(index, items):
                        self._actors[index].push.remote(sequences[index], data)
                        sequences[index] += 1
            except BaseException as exc:
                # Works that cannot be sent any more must not leave their
                # callers waiting: the reader breaks the pool with this cause.
                self._failure = exc
                break
        if not self._closing:
            self._kill_all()

    def _pickle(self, index: int, items: list[Any]) -> list[bytes]:
        """Works and control items in batches of their own, the works first
        (see dumps_works_or_none): a control item is for a work sent before
        it, or the last word (stop)."""
        works = [item for item in items if not isinstance(item, CONTROLS)]
        controls = [item for item in items if isinstance(item, CONTROLS)]
        batches = []
        if works:
            data, failed = dumps_works(works, main=False)
            if failed:
                self._on_results(index, failed)
            if data is not None:
                batches.append(data)
        if controls:
            batches.append(dumps_controls(controls))
        return batches

    def _kill_all(self) -> None:
        for actor in self._actors:
            self._kill(actor)

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:
            pass  # dead already, or Ray is gone: either way it runs nothing more

    # -- the reader --------------------------------------------------------

    def _read(self) -> None:
        ray = self._ray
        pending = {actor.pull.remote(): index for index, actor in enumerate(self._actors)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                index = pending.pop(ref)
                try:
                    batches, exited, failure = ray.get(ref)
                    for data in batches:
                        self._on_results(index, loads(data))
                except BaseException as exc:
                    # The actor died (a RayActorError says how), or a batch
                    # could not be unpickled (its works cannot be told apart
                    # any more): the worker is lost, and the pool breaks.
                    self._worker_exited(index, self._failure or exc)
                    continue
                if exited:
                    self._worker_exited(
                        index, None if failure is None else RemoteTraceback(failure)
                    )
                else:
                    pending[self._actors[index].pull.remote()] = index
        with self._lock:
            self._closing = True
            self._ready.notify()
        self._feeder.join()
        self._actors.clear()
        _runtime.release(ray)

    def _worker_exited(self, index: int, error: BaseException | None) -> None:
        with self._lock:
            self._exited[index] = True
            self._outboxes[index] = []
        # Its process would otherwise stay, idle, until this program ends.
        self._kill(self._actors[index])
        self._on_exit(index, error)
