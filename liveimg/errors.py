"""The exceptions liveimg raises, split by who is at fault.

Every error the library raises on purpose is a :class:`LiveImgError`.  The subclasses say who
has to act:

* :class:`InvalidOptions` -- the caller asked for something impossible or contradictory;
* :class:`InvalidImage` -- the input image (or guest content) is bad, hostile or unsupported;
* :class:`ToolError` -- an external program failed (command, exit status, tail of stderr);
  :class:`ToolNotFound` and :class:`ToolTimeout` are its special cases;
* :class:`HostError` -- the machine we run on: no space, an unwritable directory, no KVM;
* :class:`InternalError` -- a bug in liveimg itself;
* :class:`Cancelled` -- nobody's fault: a signal asked liveimg to stop, and it cleaned up.

Where a builtin exception fits as well they inherit it too (``ImageNotFound`` is a
``FileNotFoundError``), so callers that already catch builtins keep working.

The CLI prints ``str(error)`` as one line; messages therefore never contain newlines of
their own (the stderr tail of a :class:`ToolError` is kept in an attribute, and only
its last line goes into the message).
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence


class LiveImgError(Exception):
    """Root of every error liveimg raises on purpose.

    ``hint`` says what to do about it, when there is something to say; it is appended to
    the one-line message.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = " ".join(message.split("\n"))
        self.hint = hint
        super().__init__(self.message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class InvalidOptions(LiveImgError, ValueError):
    """The caller's options are wrong: unknown values, conflicts, sizes too small."""


class InvalidImage(LiveImgError):
    """The input image, or something inside it, is unusable, unsupported or hostile."""


class ImageNotFound(InvalidImage, FileNotFoundError):
    """The input file does not exist."""


class GuestPathEscapes(InvalidImage):
    """A path inside the guest resolves (through symlinks) to outside the guest root."""


class HostError(LiveImgError, OSError):
    """A problem with the machine liveimg runs on: space, permissions, devices."""


class InternalError(LiveImgError):
    """An invariant of liveimg itself does not hold: a bug, please report it."""


class OutdirBusy(HostError):
    """Another liveimg build holds OUTDIR's lock: two builds never write the same OUTDIR."""


class Cancelled(LiveImgError):
    """The work was interrupted by a signal (SIGINT, SIGTERM, SIGHUP) and cleaned up.

    ``signum`` is the signal; the command line exits with ``128 + signum`` (130, 143, 129),
    as a shell reports a program killed by it.
    """

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = signum
        super().__init__(message or f"interrupted by {signal_name(signum)}")


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 64`` for a number without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _tail(text: str, lines: int) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class ToolError(LiveImgError):
    """An external program failed.

    ``argv`` is the command, ``returncode`` its exit status (negative: killed by that
    signal), ``stderr`` the tail of what it wrote to stderr (up to 20 lines).
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str = "",
        *,
        message: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = _tail(stderr, 20)
        if message is None:
            last = _tail(stderr, 1)
            message = f"{self.program} failed with exit status {returncode}"
            if returncode is not None and returncode < 0:
                message = f"{self.program} was killed by signal {-returncode}"
            if last:
                message += f": {last}"
        super().__init__(message, hint=hint)

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else "?"

    @property
    def command(self) -> str:
        """The command line, quoted for a shell, for logs and bug reports."""
        return shlex.join(self.argv)


class ToolNotFound(ToolError, FileNotFoundError):
    """A required program is not installed; ``package`` names the Debian package."""

    def __init__(self, program: str, package: str | None) -> None:
        self.package = package
        hint = f"install the Debian package {package}" if package else "install it or put it on PATH"
        super().__init__((program,), None, message=f"{program}: command not found", hint=hint)


class ToolTimeout(ToolError, TimeoutError):
    """A program ran longer than its time limit and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, stderr: str = "") -> None:
        self.timeout = timeout
        program = argv[0] if argv else "?"
        super().__init__(argv, None, stderr, message=f"{program} timed out after {timeout:g} s and was killed")
