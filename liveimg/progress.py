"""One progress protocol for every long step.

Library code reports through a :class:`Progress`: ``with progress.stage("squashfs", total=n)
as st: st.advance(k)``.  What becomes of the events depends on the sink the caller chose:

* nothing (the default for library callers);
* any callable taking an :class:`Event` (build tools embedding liveimg);
* :class:`TerminalBar`, a one-line bar redrawn on a terminal (the CLI on a tty);
* :class:`StageLines`, one plain line per finished stage and per message (the CLI when its
  output is piped or logged: nothing is redrawn, and a long step still shows it is alive);
* :class:`JsonLines`, one JSON object per line (``--progress=json``), for build systems.

JSON-lines format (one object per line, keys always present)::

    {"event": "begin"|"progress"|"end"|"message", "stage": "rootfs", "done": 123,
     "total": 456, "unit": "bytes", "seconds": 1.25, "message": ""}

``done``/``total`` are null when unknown; ``seconds`` is the time since the stage began.
Progress events are throttled (at most ``rate`` per second per stage); begin, end and
message events are never dropped.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import IO, Literal

log = logging.getLogger(__name__)

EventKind = Literal["begin", "progress", "end", "message"]


@dataclass(frozen=True)
class Event:
    """One progress report."""

    event: EventKind
    stage: str
    done: int | None = None
    total: int | None = None
    unit: str = ""
    seconds: float = 0.0
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False, separators=(",", ":"))


Sink = Callable[[Event], None]


class StageProgress:
    """The handle of one running stage: call :meth:`advance` or :meth:`update` as work is done."""

    def __init__(self, owner: Progress, name: str, total: int | None, unit: str) -> None:
        self._owner = owner
        self.name = name
        self.total = total
        self.unit = unit
        self.done = 0
        self.started = time.monotonic()
        self._last_emit = 0.0
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def advance(self, amount: int) -> None:
        """Count ``amount`` more units of work as done (thread-safe)."""
        with self._lock:
            self.done += amount
            done = self.done
        self._maybe_emit(done)

    def update(self, done: int, total: int | None = None) -> None:
        """Set the amount done (and, if it became known, the total)."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
        self._maybe_emit(done)

    def message(self, text: str) -> None:
        self._owner.emit(Event("message", self.name, seconds=self.seconds, message=text))

    def _maybe_emit(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last_emit < 1.0 / self._owner.rate and done != self.total:
            return
        self._last_emit = now
        self._owner.emit(Event("progress", self.name, done, self.total, self.unit, now - self.started))


class Progress:
    """Where a run's progress goes.  ``Progress()`` discards everything."""

    def __init__(self, sink: Sink | None = None, *, rate: float = 10.0) -> None:
        self.sink = sink
        self.rate = rate
        #: Wall time of each finished stage, in seconds, in the order they ended.
        self.timings: dict[str, float] = {}

    def emit(self, event: Event) -> None:
        if self.sink is not None:
            self.sink(event)

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "") -> Iterator[StageProgress]:
        """Report a stage's beginning, its progress and its end (also when it fails)."""
        handle = StageProgress(self, name, total, unit)
        log.info("%s ...", name)
        self.emit(Event("begin", name, 0, total, unit))
        ok = False
        try:
            yield handle
            ok = True
        finally:
            seconds = handle.seconds
            self.timings[name] = seconds
            log.info("%s %s after %.1f s", name, "done" if ok else "failed", seconds)
            self.emit(Event("end", name, handle.done, handle.total, unit, seconds, "" if ok else "failed"))


class JsonLines:
    """A sink that writes each event as one JSON line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.stream.write(event.to_json() + "\n")
            self.stream.flush()


class StageLines:
    """A sink for logs and pipes: one line when a stage ends (with its amount and time) and one
    per message; progress events are dropped, so the output has no carriage returns."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.event == "message":
            line = f"{event.stage}: {event.message}"
        elif event.event == "end":
            state = "failed" if event.message == "failed" else "done"
            amount = f", {_human(event.done, event.unit)}" if event.done and event.unit == "bytes" else ""
            line = f"{event.stage}: {state} in {event.seconds:.1f} s{amount}"
        else:
            return
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _human(amount: float, unit: str) -> str:
    if unit != "bytes":
        return f"{amount:.0f}"
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or suffix == "GiB":
            return f"{amount:.0f} {suffix}" if suffix == "B" else f"{amount:.1f} {suffix}"
        amount /= 1024
    raise AssertionError("unreachable")


class TerminalBar:
    """A sink that draws one line per stage on a terminal: a bar, the amounts and the time."""

    def __init__(self, stream: IO[str] | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            if event.event == "message":
                self.stream.write(f"\r\x1b[K{event.stage}: {event.message}\n")
            elif event.event == "end":
                state = "failed" if event.message == "failed" else "done"
                self.stream.write(f"\r\x1b[K{event.stage}: {state} in {event.seconds:.1f} s\n")
            else:
                self.stream.write("\r\x1b[K" + self.render(event))
            self.stream.flush()

    def render(self, event: Event) -> str:
        done = event.done or 0
        if event.total:
            frac = min(1.0, done / event.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            amounts = f"{_human(done, event.unit)} / {_human(event.total, event.unit)}"
            return f"{event.stage} [{bar}] {frac * 100:5.1f}% {amounts} {event.seconds:.0f} s"
        return f"{event.stage} {_human(done, event.unit)} {event.seconds:.0f} s"
