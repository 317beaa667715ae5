"""liveimg.cancel: SIGINT, SIGTERM and SIGHUP raise Interrupt once, kill the children at once, and are restored."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from liveimg import cancel
from liveimg import run as runner

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


pytestmark = pytest.mark.usefixtures("default_signals")


def wait_for_signal() -> None:
    """Sleep until the pending signal's handler has run (it raises)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.01)
    pytest.fail("no Interrupt within 10 s")


@pytest.mark.parametrize("sig", SIGNALS)
def test_each_signal_raises_interrupt_and_the_handlers_are_restored(sig: signal.Signals) -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    with cancel.handling():
        assert all(signal.getsignal(s) is not before[s] for s in SIGNALS)
        with pytest.raises(cancel.Interrupt) as excinfo:
            os.kill(os.getpid(), sig)
            wait_for_signal()
        assert excinfo.value.signum == sig
        assert str(excinfo.value) == f"interrupted by {sig.name}"
        assert cancel.requested() == sig
    assert {s: signal.getsignal(s) for s in SIGNALS} == before
    assert cancel.requested() is None


def test_only_the_first_signal_raises_so_that_the_cleanup_finishes() -> None:
    cleaned = False
    with cancel.handling():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_signal()
        except cancel.Interrupt:
            os.kill(os.getpid(), signal.SIGINT)  # impatient: a second signal during the cleanup
            time.sleep(0.2)
            cleaned = True
        assert cancel.requested() == signal.SIGTERM
    assert cleaned


def test_a_signal_during_a_deferred_step_is_raised_when_it_ends() -> None:
    steps = []
    with cancel.handling():
        with pytest.raises(cancel.Interrupt), cancel.deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)
            steps.append("the step finished")
        assert steps == ["the step finished"]


def test_an_ignored_signal_stays_ignored() -> None:
    """nohup: SIGHUP ignored before, ignored during, ignored after."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with cancel.handling():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.2)
        assert cancel.requested() is None
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_a_callers_own_handler_stays_in_charge() -> None:
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    with runner.spawn(["sleep", "60"]) as proc, cancel.handling():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        assert seen == [signal.SIGTERM]
        assert proc.poll() is None  # not ours to cancel: the children live on
        assert cancel.requested() is None


def test_nested_handling_is_one() -> None:
    with cancel.handling():
        ours = signal.getsignal(signal.SIGTERM)
        with cancel.handling():
            assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGTERM) is ours  # the inner block restored nothing
        with pytest.raises(cancel.Interrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_signal()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def worker() -> None:
        with cancel.handling():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]


def test_children_die_at_once_while_the_main_thread_cannot_run_the_handler() -> None:
    """The main thread waits inside a C call, as in a libguestfs call: the helper thread kills the child meanwhile."""
    with cancel.handling(), runner.spawn(["sleep", "60"]) as proc:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # no EINTR for the main thread's wait
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()  # the timer inherits the mask
        started = time.monotonic()
        with pytest.raises(cancel.Interrupt):
            try:
                # Blocks in C until the child is gone: no Python handler runs in this thread meanwhile.
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
                wait_for_signal()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        assert time.monotonic() - started < 5
        assert proc.wait(5) == -signal.SIGKILL  # killed by the helper thread: this one was waiting in waitid
        assert cancel.requested() == signal.SIGTERM
