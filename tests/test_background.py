"""liveimg.background: a job's result and errors reach the main thread; cancelling it kills its programs only."""

from __future__ import annotations

import threading
import time

import pytest

from liveimg import run as runner
from liveimg import sandbox
from liveimg.background import Job
from liveimg.errors import Cancelled, InternalError, ToolError
from liveimg.progress import Event, Progress

pytestmark = pytest.mark.unit


def _sleep(seconds: float) -> None:
    runner.run(["sleep", str(seconds)], timeout=120)


def test_the_result_and_the_stages_progress_reach_the_caller() -> None:
    events: list[Event] = []

    def work(progress: Progress) -> int:
        with progress.stage("dracut", total=3) as st:
            for _ in range(3):
                st.advance(1)
                time.sleep(0.01)
        return 42

    job = Job("dracut", work, Progress(events.append, rate=1000))
    assert job.result() == 42
    # Beginnings and ends only: the terminal's bar stays the main thread's.
    assert [(e.event, e.stage) for e in events] == [("begin", "dracut"), ("end", "dracut")]


def test_the_jobs_exception_is_raised_by_result() -> None:
    def work(progress: Progress) -> int:
        raise ToolError(["dracut"], 1, "dracut failed")

    job = Job("dracut", work, Progress())
    with pytest.raises(ToolError, match="dracut failed"):
        job.result()


def test_a_job_that_returns_nothing_is_an_internal_error() -> None:
    job: Job[int] = Job("dracut", lambda progress: None, Progress())  # type: ignore[arg-type,return-value]
    with pytest.raises(InternalError):
        job.result()


def test_cancel_kills_the_jobs_program_and_waits_for_its_thread() -> None:
    started = threading.Event()

    def work(progress: Progress) -> int:
        started.set()
        _sleep(60)
        return 1

    job = Job("dracut", work, Progress())
    assert started.wait(10)
    deadline = time.monotonic() + 10
    while not runner.running_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    job.cancel()
    assert time.monotonic() - began < 10, "cancel waited for the program instead of killing it"
    assert not job._thread.is_alive()
    assert runner.running_children() == []
    job.cancel()  # twice is harmless


def test_cancel_spares_the_programs_of_other_threads() -> None:
    other_done = threading.Event()
    other_error: list[BaseException] = []

    def other() -> None:
        try:
            _sleep(1.5)
        except BaseException as exc:  # pragma: no cover - what the test checks does not happen
            other_error.append(exc)
        other_done.set()

    outside = threading.Thread(target=other)
    outside.start()
    job = Job("dracut", lambda progress: _sleep(60) or 1, Progress())
    deadline = time.monotonic() + 10
    while len(runner.running_children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancel()
    outside.join()
    assert other_done.is_set() and other_error == [], f"the other thread's program was killed: {other_error}"


def test_a_program_started_in_a_killed_scope_dies_at_once() -> None:
    scope = runner.Scope()
    scope.kill()
    began = time.monotonic()
    with runner.scoped(scope), pytest.raises(Cancelled):
        _sleep(30)
    assert time.monotonic() - began < 10


def test_a_program_its_scope_killed_is_cancelled_not_failed() -> None:
    # A probe run with check=False must not read the scope's SIGKILL as its own verdict
    # (it once made the sandbox check report "bwrap cannot make a sandbox here: exit -9").
    scope = runner.Scope()
    result: list[object] = []

    def probe() -> None:
        with runner.scoped(scope):
            try:
                result.append(runner.run(["sleep", "60"], check=False))
            except BaseException as exc:
                result.append(exc)

    thread = threading.Thread(target=probe)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.running_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    scope.kill()
    thread.join(10)
    assert len(result) == 1 and isinstance(result[0], Cancelled), result


def test_the_sandbox_check_cancelled_is_not_remembered_as_a_verdict() -> None:
    sandbox.available.cache_clear()
    scope = runner.Scope()
    scope.kill()
    try:
        with runner.scoped(scope), pytest.raises(Cancelled):
            sandbox.available()
        ok, reason = sandbox.available()
        assert ok, reason
    finally:
        sandbox.available.cache_clear()
