"""The first process of a liveimg sandbox: it builds the mounts, switches root, runs the command.

Run by :mod:`liveimg.dracut.sandbox` as ``unshare --user --map-root-user --mount --pid
--net --ipc --uts --fork --kill-child -- python3 -I _nsinit.py SPEC`` -- that is, as root of
a new user namespace (mapped to the caller's own uid: no privilege is gained) and as PID 1
of a new PID namespace, in a private mount namespace whose mounts never reach the host.

It is a stand-alone script (standard library only, no liveimg import), because it runs
under ``python3 -I`` before anything else is set up.  ``SPEC`` is a JSON object::

    {"root": "/host/path/of/the/tree",
     "mounts": [{"kind": "bind"|"tmpfs", "source": "/host/path", "target": "/host/path/in/root",
                 "readonly": false, "create": false, "options": "mode=0755"}, ...],
     "argv": ["dracut", ...], "env": {"PATH": "..."}, "cwd": "/", "log": "/host/path/of/log"}

Targets are host paths already resolved inside the tree by the caller (guest symlinks can
not redirect them); ``create`` marks targets below a tmpfs mounted earlier in the list,
which this script creates.  Besides the listed mounts there are always ``/proc`` (a new
procfs of the PID namespace), ``/dev`` (a tmpfs holding only null, zero, full, random,
urandom and tty, bound from the host, plus ``/dev/shm``) and ``/sys`` (the host's, read-only).
The root is then switched with ``pivot_root`` and the old root detached, so -- unlike with a
plain chroot -- nothing of the host filesystem stays reachable.

The command's stdout and stderr go to the log file.  The exit status is the command's
(128 + N if it was killed by signal N); 125 means the sandbox itself could not be set up,
with the reason on stderr.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import sys
from typing import Any

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
ST_RELATIME = 4096

SETUP_FAILED = 125
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


class SetupError(Exception):
    pass


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {source or fstype} on {target}: {os.strerror(err)}")


def umount(target: str) -> None:
    if _libc.umount2(_b(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"umount {target}: {os.strerror(err)}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise SetupError(f"pivot_root: unknown system call number on {platform.machine()}")
    if _libc.syscall(number, _b(new_root), _b(put_old)) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"pivot_root {new_root}: {os.strerror(err)}")


def remount_readonly(target: str) -> None:
    # In a user namespace the flags of the original mount (nosuid, nodev...) are locked:
    # a remount must repeat them, or it fails with EPERM.
    have = os.statvfs(target).f_flag
    flags = have & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if have & ST_RELATIME:
        flags |= MS_RELATIME
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def setup_dev(dev: str) -> None:
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m")
    for name in DEVICES:
        node = os.path.join(dev, name)
        with open(node, "w"):
            pass
        mount(f"/dev/{name}", node, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):  # fmt: skip
        os.symlink(target, os.path.join(dev, name))
    for name in ("shm", "pts"):
        os.mkdir(os.path.join(dev, name), 0o755)
    mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


def setup(spec: dict[str, Any]) -> int:
    """Build the sandbox, start the command, wait for it; the command's exit status."""
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount(root, root, None, MS_BIND | MS_REC)
    mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    setup_dev(os.path.join(root, "dev"))
    sys_dir = os.path.join(root, "sys")
    mount("/sys", sys_dir, None, MS_BIND | MS_REC)
    remount_readonly(sys_dir)
    for m in spec["mounts"]:
        target = m["target"]
        if m.get("create"):
            os.makedirs(target, 0o755, exist_ok=True)
        if m["kind"] == "tmpfs":
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, m.get("options") or "mode=0755")
        elif m["kind"] == "bind":
            mount(m["source"], target, None, MS_BIND | MS_REC)
            if m.get("readonly"):
                remount_readonly(target)
        else:
            raise SetupError(f"unknown mount kind {m['kind']!r}")
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    os.chdir(root)
    pivot_root(".", ".")
    umount(".")
    os.chdir("/")

    child = os.fork()
    if child == 0:
        try:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.chdir(spec.get("cwd") or "/")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            argv = spec["argv"]
            os.execvpe(argv[0], argv, spec["env"])
        except OSError as exc:
            os.write(2, f"liveimg sandbox: cannot run {spec['argv'][0]}: {exc.strerror}\n".encode())
        os._exit(127)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    # As PID 1 we also inherit every orphan of the command: reap them all.
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return SETUP_FAILED
        if pid == child:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(argv[1])
        return setup(spec)
    except (SetupError, OSError, KeyError, ValueError, IndexError) as exc:
        print(f"liveimg sandbox: {exc}", file=sys.stderr)
        return SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
