"""How liveimg stops when it is asked to: SIGINT, SIGTERM and SIGHUP end the work the same way.

While :func:`handling` is active -- the whole command line, and
:func:`liveimg.pipeline.build` called from the main thread -- each of the three signals:

1. kills every program liveimg runs (:func:`liveimg.run.kill_children`: the process group
   of each tool, and the libguestfs appliance's QEMU) at once, from a helper thread the
   signal wakes through :func:`signal.set_wakeup_fd`.  Python runs signal handlers in the
   main thread only, between bytecodes, so a main thread blocked in a libguestfs call (the
   appliance's start, a long copy) would otherwise hear of the signal only when that call
   returns; with its QEMU gone, the call returns at once;
2. raises :class:`Interrupt` in the main thread, where the ``finally`` blocks on the way out
   remove what the work made (a build's staging directory, see :mod:`liveimg.outdir`).

:class:`Interrupt` is a ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except
Exception`` on the way swallows it; :func:`~liveimg.pipeline.build` turns it into
:class:`~liveimg.errors.Cancelled` for its caller, and the command line exits with
``128 + signum`` (130, 143, 129).  Only the first signal raises: a second Ctrl-C must not
cut the cleanup short.  Steps that must not be cut in half (OUTDIR's swap, the cleanup
itself) run under :func:`deferred`: a signal during them is raised when they end.

A signal whose disposition is not the default is left alone: an ignored SIGHUP (``nohup``)
stays ignored, and a library caller's own handler stays in charge.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from liveimg import run as runner
from liveimg.errors import signal_name

log = logging.getLogger(__name__)

#: The signals that cancel the work.
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupt(BaseException):
    """Raised in the main thread by a cancelling signal; ``signum`` is the signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal_name(signum)}")


class _State:
    """What the handlers share; plain attributes, set under the GIL (a signal handler must take no lock)."""

    depth = 0  # nesting of handling(): only the outermost installs and resets
    ours: frozenset[int] = frozenset()  # the signals whose handler is ours
    requested: int | None = None  # the first cancelling signal received
    raised = False  # Interrupt has been raised for it
    deferring = 0  # nesting of deferred()


_state = _State()


def requested() -> int | None:
    """The first cancelling signal received while :func:`handling` is active, else None."""
    return _state.requested if _state.depth else None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state.requested is None:
        _state.requested = signum
    if _state.raised or _state.deferring:
        log.debug("%s received while stopping", signal_name(signum))
        return
    _state.raised = True
    raise Interrupt(_state.requested)


def _watch(fd: int) -> None:
    """Kill the children as soon as a cancelling signal arrives, whatever the main thread is doing."""
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum in _state.ours:
                if _state.requested is None:
                    _state.requested = signum
                runner.kill_children()


def _is_default(signum: int, handler: object) -> bool:
    return handler is signal.SIG_DFL or (signum == signal.SIGINT and handler is signal.default_int_handler)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Make SIGINT, SIGTERM and SIGHUP cancel the work while the block runs (see the module's docstring).

    Only from the main thread (elsewhere Python cannot install handlers: a no-op), and only
    for signals with the default disposition; the previous handlers are restored at the end.
    Nested use is a no-op, so the command line and :func:`~liveimg.pipeline.build` both use it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.depth:
        _state.depth += 1
        try:
            yield
        finally:
            _state.depth -= 1
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    ours = frozenset(int(sig) for sig, handler in previous.items() if _is_default(sig, handler))
    if not ours:
        yield
        return
    _state.depth, _state.ours, _state.requested, _state.raised, _state.deferring = 1, ours, None, False, 0
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)  # set_wakeup_fd needs it: a full pipe must not block the handler
    watcher: threading.Thread | None = None
    theirs = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if theirs == -1:
        watcher = threading.Thread(target=_watch, args=(read_fd,), name="liveimg-cancel", daemon=True)
        watcher.start()
    else:  # an asyncio loop owns the wakeup fd: it keeps it, and children die only on the way out
        signal.set_wakeup_fd(theirs)
    try:
        for sig in ours:
            signal.signal(sig, _on_signal)
        yield
    finally:
        for sig in ours:
            signal.signal(sig, previous[signal.Signals(sig)])
        if watcher is not None:
            signal.set_wakeup_fd(-1)
        os.close(write_fd)
        if watcher is not None:
            watcher.join()
        os.close(read_fd)
        _state.depth, _state.ours, _state.requested, _state.raised, _state.deferring = 0, frozenset(), None, False, 0


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a cancelling signal that arrives during the block until it ends, then raise :class:`Interrupt`.

    For steps that must not be cut in half: OUTDIR's swap and its bookkeeping, the removal
    of the staging directory.  If the first signal already raised, nothing is raised again.
    """
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.depth and _state.requested is not None and not _state.raised:
            _state.raised = True
            raise Interrupt(_state.requested)
