"""Watch a guest's serial console, written to a log file, until the boot is decided.

:func:`watch_console` follows the log as it grows (it only reads it, and waits for it to
appear) and returns a :class:`BootResult` at the first of:

* a success pattern.  ``success`` is ordered best first: the first one ends the watch at
  once; a later one ends it after a grace period unless a better one shows up.  By default
  (:data:`DEFAULT_SUCCESS`) the sample images' marker line, then a login prompt, then
  systemd's multi-user target;
* a known failure, checked on every line (:data:`DEFAULT_FAILURES`: a kernel panic,
  dracut's emergency shell, "Could not boot" and FATAL, no root filesystem, a missing
  ostree root, a live image liveimg's livenetroot refused or could not fetch, curl and
  livenet download errors, no bootable device, a boot file that Secure Boot refuses
  (:data:`SECURE_BOOT_FAILURES`), and GRUB at its command line with no menu;
* the exit of the process given (QEMU): the lines written so far are read first;
* the timeout.

Patterns are searched in lines cleaned by :func:`clean_line` (no ANSI escapes, no control
characters); ``BootResult.last_lines`` keeps the last of them, to show where a boot stopped.
A cursor move to a row and column (``ESC [ row ; col H``) ends a line as a newline does: a
firmware's or shim's text screen (a dialog box waiting for a key) has no newlines at all.

The sample images' marker line (scripts/sample_image.py), whose fields :func:`parse_marker`
returns::

    LIVEIMG-SAMPLE-READY ostree-booted=<yes|no> root=<source of /> fstype=<type> hostname=<name>
"""

from __future__ import annotations

import enum
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO

MARKER = "LIVEIMG-SAMPLE-READY"
#: A cursor move to a row and column: a text screen's "new line".
_CURSOR_TO = re.compile(rb"\x1b\[\d+;\d+H")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


@dataclass(frozen=True)
class Pattern:
    """A named regular expression searched in each console line (ANSI escapes and CRs removed)."""

    name: str
    regex: str

    def search(self, line: str) -> re.Match[str] | None:
        return re.search(self.regex, line)


#: The sample images' marker line: the best success signal.
MARKER_PATTERN = Pattern("marker", rf"\b{MARKER}\b")
#: Userspace is up: getty's login prompt or systemd's multi-user target.
LOGIN_PATTERN = Pattern("login-prompt", r"^\S+ login: ?$")
MULTI_USER_PATTERN = Pattern("multi-user", r"Reached target .*Multi-User System")
#: Default success patterns, best first.
DEFAULT_SUCCESS: tuple[Pattern, ...] = (MARKER_PATTERN, LOGIN_PATTERN, MULTI_USER_PATTERN)

#: A boot file that Secure Boot refuses, as the firmware (OVMF: an unsigned or untrusted shim),
#: shim (a GRUB it cannot verify, in a dialog box) or GRUB (a kernel shim cannot verify) says it.
SECURE_BOOT_FAILURES: tuple[Pattern, ...] = (
    Pattern(
        "secure-boot",
        r"BdsDxe: failed to load .*: Access Denied|Verification failed: \(0x1A\) Security Violation"
        r"|error: bad shim signature",
    ),
)

#: Known ways a boot fails, checked on every line: the boot stops as soon as one matches.
DEFAULT_FAILURES: tuple[Pattern, ...] = (
    Pattern("kernel-panic", r"Kernel panic - not syncing"),
    Pattern("emergency-mode", r"Entering emergency mode|You are in emergency mode|Give root password for maintenance"),
    Pattern("dracut-could-not-boot", r"dracut-initqueue.*Could not boot"),
    Pattern("dracut-fatal", r"dracut(?:-[\w-]+)?(?:\[\d+\])?: FATAL:"),
    Pattern("no-root-filesystem", r"Failed to find a root filesystem"),
    Pattern("ostree-root-missing", r"ostree-prepare-root.*(?:Couldn't find specified OSTree root|No such file)"),
    # liveimg's livenetroot (liveimg.liveverify): before download-failed, whose curl pattern its lines may quote.
    Pattern(
        "image-verify",
        r"liveimg: (?:the server answered \d{3} for |the (?:download of|export) \S+ is short"
        r"|\S+ is not this build's live image|the network never came up|cannot (?:download|store|check|attach) "
        r"|this image needs \d+ MiB of RAM)",
    ),
    Pattern("download-failed", r"failed to download live image|Failed to download|curl: \(\d+\)"),
    Pattern("no-bootable-device", r"No bootable device|Could not boot from|PXE-E\d\d|Boot failed: could not read"),
    *SECURE_BOOT_FAILURES,
    # GRUB found no menu (its configuration unread) and waits at its command line or rescue shell.
    Pattern("grub-prompt", r"Minimal BASH-like line editing is supported|Entering rescue mode"),
)


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    EXITED = "exited"  # QEMU stopped before either


@dataclass(frozen=True)
class BootResult:
    """How a boot went.

    ``seconds`` runs from the start of watching to the deciding line (or the timeout);
    ``reason`` is the name of the pattern that decided (``marker``, ``kernel-panic``, ...),
    ``timeout`` or ``qemu-exited``; ``line`` the console line that decided; ``marker`` the
    fields of the marker line, if one was seen; ``last_lines`` the last meaningful console
    lines, to show where the boot stopped.
    """

    outcome: Outcome
    reason: str
    seconds: float
    console_log: Path
    line: str | None = None
    marker: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    last_lines: tuple[str, ...] = ()
    exit_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        text = f"{self.outcome} ({self.reason}) after {self.seconds:.0f} s"
        if self.line:
            text += f": {self.line}"
        return text

    def explain(self) -> str:
        """Summary plus the last console lines, for a failing test."""
        tail = "\n".join(f"  | {line}" for line in self.last_lines)
        return f"{self.summary()}\nconsole log: {self.console_log}\n{tail}"


def parse_marker(line: str) -> dict[str, str]:
    """The ``key=value`` fields after the marker word; ``{}`` if the line has no marker."""
    where = line.find(MARKER)
    if where < 0:
        return {}
    fields: dict[str, str] = {}
    for token in line[where + len(MARKER) :].split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def clean_line(raw: str) -> str:
    """A console line without ANSI escapes, control characters and undecodable bytes (a CR becomes a space).

    Undecodable bytes are a firmware's box drawing (code page 437), not text.
    """
    text = _ANSI.sub("", raw).replace("\r", " ").replace("\ufffd", "")
    return "".join(ch for ch in text if ch == "\t" or ch >= " ").strip()


class ConsoleReader:
    """Yields complete lines of a growing log file (cleaned with :func:`clean_line`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._partial = b""

    def read_lines(self) -> list[str]:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 -- kept open while the log grows
            except FileNotFoundError:
                return []
        data = _CURSOR_TO.sub(b"\n", self._partial + self._file.read())
        *complete, self._partial = data.split(b"\n")
        return [clean_line(chunk.decode("utf-8", "replace")) for chunk in complete]

    def pending(self) -> str:
        """The unterminated last line read so far."""
        return clean_line(self._partial.decode("utf-8", "replace"))

    def flush(self) -> list[str]:
        """Lines so far, plus the unterminated last one (a login prompt ends without a newline)."""
        lines = self.read_lines()
        if self._partial:
            lines.append(clean_line(self._partial.decode("utf-8", "replace")))
            self._partial = b""
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def watch_console(
    console_log: Path,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    success: Sequence[Pattern] = DEFAULT_SUCCESS,
    failures: Sequence[Pattern] = DEFAULT_FAILURES,
    grace: float = 30.0,
    poll: float = 0.25,
    tail: int = 20,
    on_line: Callable[[str], None] | None = None,
) -> BootResult:
    """Follow ``console_log`` until a success or failure pattern, QEMU's exit, or ``timeout`` seconds.

    ``success`` is ordered best first: the first one ends the watch at once; a later one
    (a login prompt, say) ends it after ``grace`` seconds unless a better one shows up.
    A line matching a failure pattern ends the watch at once.  ``on_line`` is given every
    non-empty console line as it is read (for progress reports).
    """
    started = time.monotonic()
    reader = ConsoleReader(console_log)
    recent: list[str] = []
    fallback: tuple[int, Pattern, str, float] | None = None  # (rank, pattern, line, seconds)
    marker: dict[str, str] = {}

    def result(
        outcome: Outcome, reason: str, line: str | None, seconds: float, status: int | None = None
    ) -> BootResult:
        return BootResult(
            outcome=outcome,
            reason=reason,
            seconds=round(seconds, 1),
            console_log=console_log,
            line=line,
            marker=MappingProxyType(dict(marker)),
            last_lines=tuple(recent[-tail:]),
            exit_status=status,
        )

    try:
        while True:
            exited = process.poll() if process is not None else None
            now = time.monotonic() - started
            lines = reader.read_lines() if exited is None else reader.flush()
            if exited is None and fallback is None and LOGIN_PATTERN in success:
                # A login prompt ends without a newline: look at the unterminated line too.
                pending = reader.pending()
                if pending and LOGIN_PATTERN.search(pending):
                    lines += reader.flush()
            for line in lines:
                if not line:
                    continue
                recent.append(line)
                del recent[: -tail * 4]
                if on_line is not None:
                    on_line(line)
                for pattern in failures:
                    if pattern.search(line):
                        return result(Outcome.FAILURE, pattern.name, line, now)
                for rank, pattern in enumerate(success):
                    if pattern.search(line):
                        if pattern is MARKER_PATTERN or MARKER in pattern.regex:
                            marker.update(parse_marker(line))
                        if rank == 0:
                            return result(Outcome.SUCCESS, pattern.name, line, now)
                        if fallback is None or rank < fallback[0]:
                            fallback = (rank, pattern, line, now)
                        break
            if fallback is not None and (now - fallback[3] >= grace or exited is not None):
                return result(Outcome.SUCCESS, fallback[1].name, fallback[2], fallback[3])
            if exited is not None:
                return result(Outcome.EXITED, "qemu-exited", f"QEMU exited with status {exited}", now, exited)
            if now >= timeout:
                return result(Outcome.TIMEOUT, "timeout", None, now)
            time.sleep(poll)
    finally:
        reader.close()
