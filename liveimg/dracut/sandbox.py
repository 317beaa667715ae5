"""Run a program of the guest, rootless, with a guest tree as its root directory.

The sandbox is a set of new namespaces made by ``unshare`` as the calling user -- user
(the caller is mapped to root inside, and only the caller: no privilege is gained), mount
(private: nothing is mounted on the host), PID, network (no network), IPC and UTS -- in
which :mod:`._nsinit` mounts ``/proc``, a minimal ``/dev``, a read-only ``/sys`` and the
requested directories into the tree, then ``pivot_root``\\ s into it.  This is how mkosi and
bubblewrap run tools, and it is safer than lorax's chroot as real root: the guest's code runs
with the caller's own rights, cannot reach the host's files, and cannot reach the network.

It works for unprivileged users wherever the kernel allows unprivileged user namespaces
(:func:`sandbox_available` checks once).  Images you do not trust at all belong in the
libguestfs appliance instead (:mod:`.appliance`): there the guest's code runs in a VM.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from liveimg import run as runner
from liveimg.dracut import _nsinit
from liveimg.dracut.tree import guest_mkdirs
from liveimg.errors import HostError, InvalidImage, ToolError

log = logging.getLogger(__name__)

#: The PATH a guest program gets.
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_UNSHARE = ("unshare", "--user", "--map-root-user", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork",
            "--kill-child")  # fmt: skip


@dataclass(frozen=True)
class Bind:
    """A host directory (or file) shown at ``target`` inside the tree."""

    source: Path
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """A fresh tmpfs at ``target`` inside the tree."""

    target: str
    options: str = "mode=0755"


@dataclass(frozen=True)
class SandboxResult:
    returncode: int
    seconds: float
    log: Path


@functools.cache
def sandbox_available() -> tuple[bool, str]:
    """Whether this user can build the sandbox here, and why not (checked once per process).

    The check builds the whole sandbox -- namespaces, /proc, /dev, /sys, pivot_root -- around an
    empty tree, because some hosts allow user namespaces but not the mounts (containers that
    mask /proc, for example).
    """
    if runner.which("unshare") is None:
        return False, "unshare is not installed (Debian package util-linux)"
    result = runner.run([*_UNSHARE, "--", "true"], check=False, timeout=60)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        return False, f"user namespaces are not available: {reason}"
    with tempfile.TemporaryDirectory(prefix="liveimg-probe-") as tmp:
        root = Path(tmp)
        for name in ("proc", "dev", "sys"):
            (root / name).mkdir()
        payload = {"root": tmp, "mounts": [], "argv": ["/liveimg-probe"], "env": {}, "cwd": "/",
                   "log": os.fspath(root / "log")}  # fmt: skip
        init = Path(_nsinit.__file__).resolve()
        command = [*_UNSHARE, "--", sys.executable, "-I", "-S", os.fspath(init), json.dumps(payload)]
        probe = runner.run(command, check=False, timeout=60)
    if probe.returncode != 127:  # the sandbox was built, then the (missing) program failed to start
        lines = probe.stderr.strip().splitlines()
        return False, f"the sandbox cannot be built here: {lines[-1] if lines else f'exit {probe.returncode}'}"
    return True, "user namespaces and the sandbox's mounts work"


def _target(root: Path, path: str) -> str:
    # Resolve inside the tree (guest symlinks cannot point the mount elsewhere) and create it.
    resolved = guest_mkdirs(root, path)
    if resolved.is_symlink():
        raise InvalidImage(f"mount point {path} in the guest tree is a symbolic link")
    return os.fspath(resolved)


def run_in_sandbox(
    root: Path,
    argv: Sequence[str],
    *,
    log_path: Path,
    mounts: Sequence[Bind | Tmpfs] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = 3600,
) -> SandboxResult:
    """Run ``argv`` (a guest program) with ``root`` as ``/``; its output is appended to ``log_path``.

    ``mounts`` are applied in order after ``/proc``, ``/dev`` and ``/sys``.  Their targets are
    created in the tree if missing (the tree must be a writable copy); a target below an
    earlier :class:`Tmpfs` is created inside that tmpfs instead, leaving the tree alone.
    Returns the program's exit status (not checked); a sandbox that cannot be set up is a
    :class:`~liveimg.errors.HostError`.
    """
    ok, reason = sandbox_available()
    if not ok:
        raise HostError(f"cannot run the rootless sandbox: {reason}", hint="use the libguestfs appliance instead")
    root = root.resolve()
    for needed in ("proc", "dev", "sys"):
        _target(root, needed)
    specs: list[dict[str, object]] = []
    tmpfs_at: list[str] = []
    for m in mounts:
        inner = "/" + m.target.strip("/")
        below_tmpfs = any(inner.startswith(t.rstrip("/") + "/") for t in tmpfs_at)
        # Inside a tmpfs of ours no guest symlink can be in the way: _nsinit creates it there.
        target = os.fspath(root) + inner if below_tmpfs else _target(root, inner)
        spec: dict[str, object] = {"target": target, "create": below_tmpfs}
        if isinstance(m, Tmpfs):
            spec.update(kind="tmpfs", options=m.options)
            tmpfs_at.append(inner)
        else:
            if not m.source.exists():
                raise HostError(f"cannot show {m.source} in the sandbox: it does not exist")
            spec.update(kind="bind", source=os.fspath(m.source.resolve()), readonly=m.readonly)
        specs.append(spec)
    full_env = {"PATH": GUEST_PATH, "LC_ALL": "C", "HOME": "/root", "TMPDIR": "/var/tmp", "TERM": "dumb"}
    if "SOURCE_DATE_EPOCH" in os.environ:
        full_env["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    full_env.update(env or {})
    payload = {
        "root": os.fspath(root),
        "mounts": specs,
        "argv": list(argv),
        "env": full_env,
        "cwd": "/",
        "log": os.fspath(log_path.resolve()),
    }
    init = Path(_nsinit.__file__).resolve()
    command = [*_UNSHARE, "--", sys.executable, "-I", "-S", os.fspath(init), json.dumps(payload)]
    log.info("sandbox: running %s in %s", " ".join(argv), root)
    result = runner.run(command, check=False, timeout=timeout)
    if result.returncode == _nsinit.SETUP_FAILED and "liveimg sandbox:" in result.stderr:
        raise HostError(f"cannot set up the sandbox: {result.stderr.strip().splitlines()[-1]}")
    if result.returncode != 0 and result.stderr.strip():
        log.debug("sandbox stderr: %s", result.stderr.strip())
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
