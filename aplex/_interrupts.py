"""Ctrl-C inside aplex: held back until aplex's own state is whole again.

Python runs signal handlers in the main thread only, between two bytecodes:
with the default SIGINT handler, a ``KeyboardInterrupt`` can be raised
anywhere in the main thread, inside a ``with lock:`` body or a ``finally``
block alike. The main thread is where a program submits, cancels and shuts
down, so a Ctrl-C could land half-way through the dispatcher's bookkeeping:
a work taken off the FIFO and never placed, a batch of futures taken to be
settled and only half settled, a sending flag never cleared.

The main thread's sections of aplex therefore run *deferred*
(:class:`Deferred`): on entry, the program's SIGINT handler is swapped for
one that only records the signal, and on exit it is put back and called
for each signal recorded meanwhile. The section ends whole, then the
``KeyboardInterrupt`` is raised, as if the signal had come just after it.
The program's handler is never changed outside a section. Only the main
thread pays for it (two ``sigaction`` calls, about a microsecond); the other
threads never receive a signal's exception, and pass through at the cost of
one comparison.

User code that aplex runs from such a section (a done callback, a
``__reduce__`` pickling an argument, a ``__del__``) is not deferred: it runs
through :func:`interruptible`, with the program's handler back in place, so
that Ctrl-C interrupts a callback or a pickling that blocks. What it raises
beyond an ``Exception`` is kept and raised when the outermost section ends,
after aplex has finished what it was doing.

Why a swap and not the alternatives: masking SIGINT with ``pthread_sigmask``
holds it back from the main thread only, and the kernel then hands it to
another thread, whose C handler trips the flag that the main thread checks
anyway; making every step idempotent leaves the handlers that repair a
half-done step exposed to the next Ctrl-C. Swapping the handler needs
nothing of the signal itself: a signal that arrives while the handler is
being swapped is handled by whichever handler is in place once the swap is
done (CPython checks for pending signals after the call, not before).
Installing the recording handler for the life of a pool would be cheaper,
but visible: ``asyncio.run`` installs its own Ctrl-C handling only when it
finds the default handler in place.
"""

from __future__ import annotations

# The signal module's own functions, without the wrappers that turn their
# arguments and results into enums (several microseconds a call).
import _signal  # type: ignore[import-not-found]  # no stub: signal's C half
import os
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Final, TypeVar

R = TypeVar("R")

_SIGINT: Final = 2  # signal.SIGINT; the enum costs a lookup per call
_swap: Callable[[int, Any], Any] = _signal.signal
_current: Callable[[int], Any] = _signal.getsignal
_get_ident = threading.get_ident
_main_ident = threading.main_thread().ident


def _forked() -> None:
    # The thread that forked is the child's main thread, and the one that
    # receives its signals; no section of the parent's is open in it.
    global _main_ident, _deferring, _interrupt, _received
    _main_ident = _get_ident()
    _deferring = False
    _interrupt = None
    _opened.clear()
    _received = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)

# The main thread's state (no other thread reads or writes it): whether the
# recording handler is the SIGINT handler now; the program's handler it
# stands in for; one entry per open section, True for those that swapped
# the handler in; the signals recorded; the first exception that
# interruptible user code raised beyond an Exception.
_deferring = False
_program_handler: Any = None
_opened: list[bool] = []
_received: list[tuple[int, FrameType | None]] = []
_interrupt: BaseException | None = None


def _record(signum: int, frame: FrameType | None) -> None:
    _received.append((signum, frame))


class Deferred:
    """A section of the main thread that Ctrl-C does not cut short; a
    no-op on other threads. Reentrant. Use the module's :data:`deferred`."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _deferring, _program_handler
        if _get_ident() != _main_ident:
            return
        if _deferring:
            _opened.append(False)
            return
        # An interrupt until the swap below is done leaves before the
        # section begins: nothing is half done yet.
        handler = _current(_SIGINT)
        if not callable(handler):
            # SIG_IGN or SIG_DFL: Ctrl-C raises nothing in Python here.
            _opened.append(False)
            return
        _program_handler = handler
        _swap(_SIGINT, _record)
        _deferring = True
        _opened.append(True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _deferring, _interrupt, _received
        if _get_ident() != _main_ident:
            return
        swapped = _opened.pop()
        interrupt = None
        if not _opened:
            interrupt, _interrupt = _interrupt, None
        if swapped:
            # No call from here to the swap, so no signal handled in between:
            # the ones recorded so far are all in ``received``, and the flag
            # is right when an interrupt comes just after the swap.
            handler = _program_handler
            received, _received = _received, []
            _deferring = False
            _swap(_SIGINT, handler)
            for signum, frame in received:
                handler(signum, frame)
        if interrupt is not None:
            raise interrupt


#: The section itself: ``with deferred: ...``.
deferred = Deferred()

#: What :func:`interruptible` returns when the call did not return.
INTERRUPTED: Final[Any] = object()


def interruptible(call: Callable[..., R], *args: Any) -> R:
    """Call user code from a deferred section, letting Ctrl-C interrupt it.

    Outside a section, or on a thread other than the main one, just calls.
    Inside one, the program's SIGINT handler is back while ``call`` runs; an
    ``Exception`` it raises propagates, anything else (Ctrl-C, SystemExit)
    is kept and raised when the outermost section ends, and
    :data:`INTERRUPTED` is returned: the caller finishes its own work first.
    """
    global _deferring, _interrupt
    if not _deferring or _get_ident() != _main_ident:
        return call(*args)
    # Flag first, as in Deferred.__exit__.
    _deferring = False
    try:
        _swap(_SIGINT, _program_handler)
        return call(*args)
    except Exception:
        raise
    except BaseException as exc:
        # No call between here and the swap below: nothing can interrupt
        # this handler (the next check for signals is after that call).
        if _interrupt is None:
            _interrupt = exc
        return INTERRUPTED  # type: ignore[no-any-return]
    finally:
        _swap(_SIGINT, _record)
        _deferring = True


def keep(exc: BaseException) -> bool:
    """Keep ``exc`` (raised by user code that aplex ran, beyond an
    Exception) to raise when the main thread's outermost section ends;
    False, and nothing kept, outside a section or on another thread."""
    global _interrupt
    if not _opened or _get_ident() != _main_ident:
        return False
    if _interrupt is None:
        _interrupt = exc
    return True
