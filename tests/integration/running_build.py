"""A `liveimg build` running in the background, watched through its ``--progress json`` events.

For the tests that stop builds on purpose (tests/integration/test_kill.py, test_outdir.py):
:class:`RunningBuild` starts the command line, reads its JSON lines in a thread, and says
which stage runs; :func:`descendants` and :func:`still_running` find the processes of a
build (its tools, the appliance's QEMU and libguestfs's recovery process, the dracut
sandbox) and whether any outlived it; :func:`tree_digest` fingerprints a directory tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Seen:
    """An event of the build, with when the test saw it (``time.monotonic()``)."""

    at: float
    event: dict[str, Any]


class RunningBuild:
    """``python -m liveimg [--progress json] ARGS...`` in its own session; its stdout read as events."""

    def __init__(self, *args: str, wrap: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "liveimg", "--progress", "json", *args]
        env = {**os.environ, "PYTHONPATH": str(REPO), "LIVEIMG_ACCEL": "tcg", **(env or {})}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*(wrap or []), *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
        self.events: queue.Queue[Seen | None] = queue.Queue()
        self.seen: list[Seen] = []
        self.other_lines: list[str] = []  # what a wrapper printed after the build
        self.stage: str | None = None  # the stage that began last
        self.ended = False  # the output ended
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr: list[str] = []
        self._err_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self.other_lines.append(line.rstrip("\n"))
                continue
            self.events.put(Seen(time.monotonic(), event))
        self.events.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.extend(self.proc.stderr)

    def next_event(self, timeout: float) -> Seen | None:
        """The next event within ``timeout`` s; None when none came, or at the end (then ``ended``)."""
        if self.ended:
            return None
        try:
            seen = self.events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if seen is None:
            self.ended = True
            return None
        self.seen.append(seen)
        if seen.event.get("event") == "begin":
            self.stage = str(seen.event["stage"])
        return seen

    def wait_for(self, event: str, stage: str, timeout: float = 600) -> Seen:
        """Read events until ``event`` of ``stage`` (e.g. "begin", "dracut")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.ended:
            seen = self.next_event(deadline - time.monotonic())
            if seen is not None and seen.event.get("event") == event and seen.event.get("stage") == stage:
                return seen
        raise AssertionError(f"no {event} of {stage}: exit {self.proc.poll()}, stderr {self.stderr()[-2000:]!r}")

    def finish(self, timeout: float = 600) -> int:
        """Wait for the end; the exit status (negative: killed by that signal)."""
        status = self.proc.wait(timeout)
        self._reader.join(10)
        self._err_reader.join(10)
        while self.next_event(0) is not None:
            pass
        return status

    def stderr(self) -> str:
        return "".join(self._stderr)

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr().splitlines() if line.strip()]

    def kill_all(self) -> None:
        """Make sure nothing of the build survives a failed test."""
        for pid, _ in descendants(self.proc.pid) | {(self.proc.pid, 0)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ... (proc(5))."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> set[tuple[int, int]]:
    """Every process below ``root`` now, as (pid, start time): the start time tells a reused pid apart."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None:
                children.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[19])))
    found: set[tuple[int, int]] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def alive(process: tuple[int, int]) -> bool:
    """Whether that process still runs (a zombie does not: it only waits for its reaper)."""
    fields = _stat(process[0])
    return fields is not None and int(fields[19]) == process[1] and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def mentioning(text: str) -> list[int]:
    """The running processes whose command line mentions ``text`` (a test's unique temporary path)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid() and text in cmdline(int(entry.name)):
            fields = _stat(entry.name)
            if fields is not None and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def still_running(processes: set[tuple[int, int]], marker: str, within: float = 15.0) -> list[str]:
    """Which of ``processes``, or which process mentioning ``marker``, is still running after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        left = [p for p in processes if alive(p)]
        pids = {pid for pid, _ in left} | set(mentioning(marker))
        if not pids or time.monotonic() > deadline:
            return [f"{pid}: {cmdline(pid)[:300]}" for pid in sorted(pids)]
        time.sleep(0.2)


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` with its type, mode and content hash (a symlink's target)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if path.is_symlink():
            digest[rel] = f"link {os.readlink(path)}"
        elif path.is_dir():
            digest[rel] = f"dir {st.st_mode:o}"
        else:
            digest[rel] = f"file {st.st_mode:o} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return digest
