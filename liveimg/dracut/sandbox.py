"""Run a program of the guest with a guest tree as its root directory, in :mod:`liveimg.sandbox`.

The guest tree is ``/``, read-only; the program gets a fresh ``/proc``, a minimal ``/dev``, the
read-only parts of ``/sys`` that hold no mount, and the mounts the caller lists (a tmpfs for
``/run`` and ``/tmp``, the output directory, ``/var/tmp``, the physical ``/boot``).  It is root
only inside its own user namespace, with the few capabilities of :data:`GUEST_CAPS`; on the
host it is the caller, or the unprivileged sandbox user when liveimg runs as root.  It has no
network, a seccomp filter, resource limits and a time limit (see :mod:`liveimg.sandbox`).

Mount points are made in the tree by liveimg before the sandbox starts, each resolved inside
the tree the way a process chrooted into it would (:func:`liveimg.dracut.tree.guest_mkdirs`):
a guest symlink (``/var -> /home/you``) cannot send a mount, or a directory liveimg makes,
out of the tree.  The tree must therefore be a writable copy.  A target below an earlier
:class:`Tmpfs` is made inside that tmpfs instead, leaving the tree alone.

Images you trust even less can run their dracut in the libguestfs appliance instead
(:mod:`.appliance`): there the guest's code runs in a virtual machine.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from liveimg import sandbox
from liveimg.dracut.tree import guest_mkdirs
from liveimg.errors import InvalidImage, InvalidOptions, ToolError

log = logging.getLogger(__name__)

#: The PATH a guest program gets.
GUEST_PATH = sandbox.SANDBOX_PATH
#: Capabilities a guest program keeps inside its own user namespace: ``ldconfig -r`` (dracut)
#: chroots, and dracut copies files of any mode, as real root would.  They reach only files whose
#: owner is mapped in that namespace: the sandbox's own (the tree, its output), no host file.
GUEST_CAPS = ("CAP_SYS_CHROOT", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER")
#: Mount points every guest tree gets (bwrap mounts /proc, /dev and /sys there).
_ALWAYS = ("proc", "dev", "sys")


@dataclass(frozen=True)
class Bind:
    """A host directory (or file) shown at ``target`` inside the tree, writable unless ``readonly``."""

    source: Path
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """A fresh tmpfs at ``target`` inside the tree; ``options`` as for mount(8): ``mode=`` and ``size=``."""

    target: str
    options: str = "mode=0755"

    def parsed(self) -> sandbox.Tmpfs:
        mode, size = 0o755, None
        for option in self.options.split(","):
            key, _, value = option.partition("=")
            try:
                if key == "mode":
                    mode = int(value, 8)
                elif key == "size":
                    size = int(value)
                else:
                    raise ValueError(key)
            except ValueError:
                raise InvalidOptions(f"tmpfs option {option!r} is not mode=OCTAL or size=BYTES") from None
        return sandbox.Tmpfs(self.target, mode, size)


@dataclass(frozen=True)
class SandboxResult:
    returncode: int
    seconds: float
    log: Path


def sandbox_available() -> tuple[bool, str]:
    """Whether sandboxes can be made here, and why not (checked once per process)."""
    return sandbox.available()


def _target(root: Path, path: str) -> str:
    """``path`` resolved inside the tree and made there if missing; its path inside the tree."""
    resolved = guest_mkdirs(root, path)
    if resolved.is_symlink():
        raise InvalidImage(f"mount point {path} in the guest tree is a symbolic link")
    inner = resolved.relative_to(root).as_posix()
    return "/" + inner if inner != "." else "/"


def run_in_sandbox(
    root: Path,
    argv: Sequence[str],
    *,
    log_path: Path,
    mounts: Sequence[Bind | Tmpfs] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = 3600,
    limits: sandbox.Limits | None = None,
) -> SandboxResult:
    """Run ``argv`` (a guest program) with ``root`` as ``/``; its output is appended to ``log_path``.

    Writable :class:`Bind` sources are given to the sandbox user (:func:`liveimg.sandbox.hand_over`).
    Returns the program's exit status (not checked).  ``limits`` default to
    :class:`liveimg.sandbox.Limits` with ``timeout`` as the time limit.  Going past a limit is
    a :class:`liveimg.sandbox.LimitExceeded` or :class:`~liveimg.errors.ToolTimeout`; a
    sandbox that cannot be set up is a :class:`~liveimg.errors.HostError`.
    """
    sandbox.require()
    root = root.resolve()
    system_dirs = {name: _target(root, name) for name in _ALWAYS}
    converted: list[sandbox.Bind | sandbox.Tmpfs] = []
    tmpfs_at: list[str] = []
    for m in mounts:
        inner = "/" + m.target.strip("/")
        # Inside a tmpfs of ours no guest symlink can be in the way: bwrap makes the directory there.
        if not any(inner.startswith(t.rstrip("/") + "/") for t in tmpfs_at):
            inner = _target(root, inner)
        if isinstance(m, Tmpfs):
            tmpfs = m.parsed()
            converted.append(sandbox.Tmpfs(inner, tmpfs.mode, tmpfs.size))
            tmpfs_at.append(inner)
        else:
            if not m.readonly and m.source.exists():
                sandbox.hand_over(m.source)  # as root, the sandbox user must be able to write it
            converted.append(sandbox.Bind(m.source, inner, writable=not m.readonly))
    full_env = {"PATH": GUEST_PATH, "LC_ALL": "C", "HOME": "/root", "TMPDIR": "/var/tmp", "TERM": "dumb"}
    full_env.update(env or {})
    if limits is None:
        limits = sandbox.Limits(seconds=timeout or sandbox.Limits.seconds)
    log.info("sandbox: running %s in %s", " ".join(argv), root)
    result = sandbox.run(
        argv, what=os.path.basename(argv[0]) if argv else "?", root=root, mounts=converted, env=full_env,
        log_path=log_path, caps=GUEST_CAPS, limits=limits, system_dirs=system_dirs, check=False,
    )  # fmt: skip
    return SandboxResult(returncode=result.returncode, seconds=result.seconds, log=log_path)


def check_sandbox_result(result: SandboxResult, argv: Sequence[str], *, what: str) -> None:
    """Raise :class:`ToolError` with the log's tail unless ``result`` succeeded."""
    if result.returncode == 0:
        return
    tail = log_tail(result.log, 20)
    raise ToolError(argv, result.returncode, tail, message=f"{what} failed with exit status {result.returncode}: "
                    f"{tail.splitlines()[-1] if tail else 'no output'} (log: {result.log})")  # fmt: skip


# A line of shell tracing (set -x), which dracut --debug writes for every command it runs:
# "+ cmd", or "/usr/bin/dracut@123(func): cmd" with dracut's PS4.
_TRACE = re.compile(r"^(\++ |\S*@\d+\([^)]*\): )")


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` messages of a (possibly huge) log file, shell tracing left out."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 1024 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip() and not _TRACE.match(line)]
    return "\n".join(kept[-lines:])
