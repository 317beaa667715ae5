"""Run programs on guest bytes, and programs of the guest, where they cannot touch the host.

The rule this module holds (the README's security section states it): guest bytes are parsed
on the host only by memory-safe code that never follows a guest path outside its root, or by
a tool in this sandbox, which can write nothing of the host but its own output; guest
programs run only in this sandbox (or in the libguestfs appliance), where they cannot write
host files, reach the network or outlive a time limit -- whoever runs liveimg.

Two kinds of sandbox, one mechanism (:func:`run`):

* **host tools on guest bytes** (``root=None``): e2fsprogs on ``rootfs.img``, ``qemu-img``,
  ``blkid`` and ``sfdisk`` on the input.  ``/`` is an empty tmpfs with the host's ``/usr``
  (and the ``/bin``, ``/lib``... links or directories next to it) and ``/etc/ld.so.cache``
  read-only; a fresh ``/proc``, a minimal ``/dev``, a small ``/tmp``; no ``/sys``, no ``/home``,
  no other ``/etc``.  Files reach the tool as open descriptors (:class:`File`), never by a
  host path: ``/proc/self/fd/N`` for one it writes, a read-only bind of the descriptor for one
  it reads (an open file can be opened again for writing through ``/proc/self/fd`` by whoever
  may write it); directories it must write (``rdump``'s destination) are bound at a path of
  their own.
* **guest programs** (``root=TREE``): the guest tree is ``/`` (read-only unless asked), with a
  fresh ``/proc``, a minimal ``/dev``, read-only parts of ``/sys`` that hold no mount
  (``class``, ``devices``, ``bus``, ``module``, ``firmware``, ``dev``, ``block``: the cgroup,
  debug and security filesystems stay out of sight), and the mounts the caller lists.

Both are made by bubblewrap (``bwrap``), the sandbox Flatpak and osbuild run untrusted code in:

* namespaces: user, mount, PID, network (only a loopback of its own), IPC, UTS, cgroup;
  ``--disable-userns`` (no nested user namespace), ``--die-with-parent`` (if liveimg dies, so
  does the sandbox), ``--new-session`` (no ``TIOCSTI`` into liveimg's terminal);
* **never host uid 0**.  Run by an unprivileged user, the sandbox is that user.  Run as root,
  liveimg drops to the sandbox user -- ``nobody`` (65534:65534) unless
  ``$LIVEIMG_SANDBOX_USER`` names another ``uid[:gid]`` -- before bwrap starts, so the
  kernel checks every access as that user: no capability on the host, ``/proc/sys`` and every
  root-owned file read-only whatever the mounts say, ``RLIMIT_NPROC`` enforced (it never is
  for uid 0).  bwrap resolves the paths it binds as that user, so root's work directories
  (below ``/root``, mode 0700) are first bound into a private mount namespace by
  :mod:`liveimg._portal`; files and directories the sandbox must write are given to the
  sandbox user with :func:`hand_over` (root reads them back, as root reads anything).  Root
  of a user namespace is who it is outside: the sandbox is that user, or, for the host's
  root where the sandbox user does not exist, a one-line :class:`~liveimg.errors.HostError`;
* capabilities: none (a guest program keeps a few inside its own user namespace, where they
  reach only the sandbox's files: see :data:`liveimg.dracut.sandbox.GUEST_CAPS`);
* a seccomp filter (libseccomp, passed with ``--seccomp``) that refuses with ``EPERM`` the
  system calls a build never needs and sandbox escapes use: ``mount`` and the new mount API,
  ``unshare``/``setns`` and ``clone`` with namespace flags (``clone3``: ``ENOSYS``, so that libc
  falls back to ``clone``), ``ptrace``, ``process_vm_*``, ``keyctl``/``add_key``/``request_key``,
  ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, module loading, ``kexec``,
  ``reboot``, ``swapon``, ``acct``, ``quotactl``, ``open_by_handle_at``, the clock setters,
  ``personality`` other than ``PER_LINUX``, ``ioctl(TIOCSTI/TIOCLINUX)``, and ``chroot`` /
  ``pivot_root`` (``chroot`` stays allowed to a guest's dracut); the 32-bit ABIs get the same
  rules;
* resource limits (:class:`Limits`), set inside the namespaces before the command starts (by the
  host's ``prlimit`` for a host tool; on the sandbox's first process, which bwrap holds back,
  for a guest program): processes and threads at once (``RLIMIT_NPROC``, which then counts
  the sandbox's own processes only), address space per process, the largest file it may
  write, open files, no core dumps;
* a watchdog in liveimg while it runs: a wall-clock limit (the sandbox's first process is
  killed, and the kernel ends its whole PID namespace before :func:`run` returns), what it
  writes to every host filesystem it can write (at most ``Limits.disk`` bytes, and none once
  the filesystem is down to its reserve, :data:`DISK_RESERVE`), and the size of what it
  prints.  Exceeding one is a one-line :class:`LimitExceeded` or
  :class:`~liveimg.errors.ToolTimeout`.

A sandbox costs a few milliseconds to start (two more programs, namespaces, mounts); a stage that
runs many tools on the same file (the rootfs stage: ten e2fsprogs calls) runs them in one
:class:`Session`, where a small worker of the host's python3 starts each.

Why bubblewrap rather than liveimg's own namespace code (the ``unshare`` + ``_nsinit.py`` it
replaces): it does the same user/mount/PID/net namespaces and ``pivot_root``, and also what
that code did not -- every submount read-only under a read-only bind (the cgroup mounts below
``/sys/fs/cgroup`` stayed writable), a cgroup namespace, ``/proc/sys`` covered read-only,
seccomp loading, dying with its parent, no nested user namespaces -- in C that Flatpak's and
osbuild's users exercise every day, with no Python start-up inside.  What bwrap does not do
(the resource limits, the watchdog, running as another user than root) is small and here.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import resource
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from liveimg import _portal
from liveimg import run as runner
from liveimg.errors import Cancelled, HostError, InternalError, InvalidOptions, LiveImgError, ToolError, ToolTimeout

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024**2
GiB = 1024**3

#: The user the sandbox runs as when liveimg runs as root (nobody:nogroup), unless
#: ``$LIVEIMG_SANDBOX_USER`` (``uid`` or ``uid:gid``, never 0) says otherwise.
DEFAULT_SANDBOX_ID = 65534
SANDBOX_USER_ENV = "LIVEIMG_SANDBOX_USER"
#: Free space a sandbox never lets a filesystem it can write go below, whatever its limits: a
#: twentieth of the filesystem, at most this much.
DISK_RESERVE = 1 * GiB
#: Free inodes a sandbox never takes from a filesystem it can write.
INODE_RESERVE = 4096
#: The PATH programs get inside.
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Parts of /sys a guest program sees (read-only): none of them holds a mount.
SYS_PARTS = ("block", "bus", "class", "dev", "devices", "firmware", "module")
#: Where :class:`File` descriptors are numbered from inside (above stdin/out/err and bwrap's own).
_PROC_FD = "/proc/self/fd/"
#: Where read-only :class:`File`\\ s are bound inside.
_FILES = "/.liveimg-files"


class LimitExceeded(ToolError):
    """A sandboxed program went past one of its :class:`Limits` and the sandbox was killed."""


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use.  ``disk`` None means: anything but :data:`DISK_RESERVE`."""

    seconds: float = 3600.0
    tasks: int = 256  # processes and threads at once (RLIMIT_NPROC)
    memory: int = 4 * GiB  # address space of each process (RLIMIT_AS)
    file_size: int = 4 * GiB  # largest file it may write (RLIMIT_FSIZE)
    open_files: int = 1024  # RLIMIT_NOFILE
    disk: int | None = None  # bytes it may take from the filesystems it can write
    output: int = 64 * MiB  # what it may print (stdout and stderr each)
    tmpfs: int = 64 * MiB  # size of each tmpfs (/tmp, /run...)

    def __post_init__(self) -> None:
        for name in ("seconds", "tasks", "memory", "file_size", "open_files", "output", "tmpfs"):
            if getattr(self, name) <= 0:
                raise InvalidOptions(f"sandbox limit {name} must be positive, not {getattr(self, name)}")


@dataclass(frozen=True)
class Bind:
    """A host directory (or file) shown at ``target`` inside; read-only unless ``writable``."""

    source: Path
    target: str
    writable: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """A fresh tmpfs at ``target`` inside, of ``size`` bytes (default: ``Limits.tmpfs``)."""

    target: str
    mode: int = 0o755
    size: int | None = None


@dataclass(frozen=True)
class File:
    """A host file handed to the program as an open descriptor, which it names ``/proc/self/fd/N``.

    Put it in ``argv`` where the program expects the file's path (``template`` puts that path
    inside a longer argument: ``"file.filename={}"``).  No host path is shown, and the file is
    opened once, here (``O_NOFOLLOW``: a symbolic link is refused), unless ``path`` is
    ``/proc/self/fd/N`` of a file liveimg holds open, whose open file is passed on as it is.
    Unless ``writable``, the program cannot write it, whoever owns it.
    """

    path: Path
    writable: bool = False
    template: str = "{}"


# --- who the sandbox runs as -------------------------------------------------------------


def _configured_ids() -> tuple[int, int] | None:
    """The sandbox user asked for (``$LIVEIMG_SANDBOX_USER`` or nobody) when liveimg runs as root."""
    if os.geteuid() != 0:
        return None
    text = os.environ.get(SANDBOX_USER_ENV, "").strip()
    if not text:
        return DEFAULT_SANDBOX_ID, DEFAULT_SANDBOX_ID
    uid_text, _, gid_text = text.partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else uid
    except ValueError:
        raise InvalidOptions(f"${SANDBOX_USER_ENV} must be uid or uid:gid, not {text!r}") from None
    if uid <= 0 or gid <= 0 or uid >= 2**32 - 1 or gid >= 2**32 - 1:
        raise InvalidOptions(f"${SANDBOX_USER_ENV} must name an unprivileged uid and gid, not {text!r}")
    return uid, gid


def sandbox_ids() -> tuple[int, int] | None:
    """The (uid, gid) sandboxes drop to when liveimg runs as root; None when they run as the caller,
    who is unprivileged.  Root of a user namespace where the sandbox user does not exist is either
    another user of the host (the sandbox is then that user) or the host's root, which must not
    run a sandbox as itself: :class:`HostError`."""
    ids = _configured_ids()
    if ids is None:
        return None
    maps = _id_maps()
    if all(any(start <= i < start + count for start, _, count in table) for i, table in zip(ids, maps, strict=True)):
        return ids
    outside = next((out for start, out, count in maps[0] if start == 0 and count >= 1), 0)
    if outside != 0:
        return None  # uid 0 here is an unprivileged user of the host: the sandbox is that user
    raise HostError(
        f"liveimg runs as root of a user namespace that is the host's root, where its sandbox user (uid {ids[0]}) "
        "does not exist: it cannot run tools on guest content as an unprivileged user",
        hint="run liveimg as real root or as an unprivileged user",
    )


@functools.cache
def _id_maps() -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    tables = []
    for name in ("uid_map", "gid_map"):
        try:
            with open(f"/proc/self/{name}") as f:
                tables.append([tuple(int(x) for x in line.split()[:3]) for line in f if line.strip()])
        except OSError:
            tables.append([(0, 0, 2**32 - 1)])
    return tables[0], tables[1]  # type: ignore[return-value]


def hand_over(*paths: Path, recursive: bool = False) -> None:
    """Give ``paths`` (liveimg's own work files and directories) to the sandbox user, when
    liveimg runs as root; otherwise they already are the caller's.  Links are not followed."""
    ids = sandbox_ids()
    if ids is None:
        return
    for path in paths:
        os.lchown(path, *ids)
        if recursive and path.is_dir() and not path.is_symlink():
            for top, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.lchown(os.path.join(top, name), *ids)


def take_back(*paths: Path) -> None:
    """Make ``paths`` the caller's again after a sandbox made them (a no-op unless liveimg runs as root)."""
    if sandbox_ids() is None:
        return
    for path in paths:
        os.lchown(path, os.getuid(), os.getgid())


def _may_write(st: os.stat_result, ids: tuple[int, int]) -> bool:
    """Whether the sandbox user could open a file with this stat for writing (mode bits only)."""
    uid, gid = ids
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


def can_read(st: os.stat_result, ids: tuple[int, int] | None) -> bool:
    """Whether the sandbox user may open a file with this stat for reading (mode bits only)."""
    if ids is None:
        return True  # the caller's own sandbox: it opened the file itself
    uid, gid = ids
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


@functools.cache
def available() -> tuple[bool, str]:
    """Whether sandboxes can be made here, and why not (checked once per process)."""
    for program in ("bwrap", "prlimit"):
        if runner.which(program) is None:
            return False, f"{program} is not installed (Debian package {runner.PACKAGES[program]})"
    try:
        _seccomp_program(guest=False)
    except HostError as exc:
        return False, str(exc)
    try:
        result = run(["true"], what="the sandbox check", limits=Limits(seconds=60), check=False)
    except Cancelled:
        raise  # not a verdict on this host, and functools.cache keeps no exception
    except LiveImgError as exc:
        return False, str(exc)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return False, f"bwrap cannot make a sandbox here: {lines[-1] if lines else f'exit {result.returncode}'}"
    return True, "bubblewrap makes sandboxes here"


def require() -> None:
    """Raise :class:`HostError` unless sandboxes can be made here."""
    ok, reason = available()
    if not ok:
        raise HostError(
            f"cannot run tools on guest content in a sandbox: {reason}",
            hint="install bubblewrap and allow unprivileged user namespaces (kernel.unprivileged_userns_clone=1)",
        )


# --- seccomp -----------------------------------------------------------------------------

#: Refused with EPERM in every sandbox.
_DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "adjtimex", "settimeofday", "delete_module",
    "finit_module", "init_module", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kexec_file_load", "kexec_load", "keyctl",
    "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev",
    "ptrace", "quotactl", "quotactl_fd", "reboot", "request_key", "setns", "swapoff", "swapon", "syslog",
    "umount", "umount2", "unshare", "uselib", "userfaultfd", "vm86", "vm86old",
)  # fmt: skip
_CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_OTHER_ABIS = {"x86_64": ("X86", "X32"), "aarch64": ("ARM",)}


@functools.cache
def _seccomp_program(*, guest: bool) -> bytes:
    """The BPF program bwrap loads before it runs the command (see the module docstring)."""
    try:
        import seccomp  # type: ignore[import-not-found]  # noqa: PLC0415  # Debian python3-seccomp
    except ImportError:
        raise HostError(
            "the libseccomp Python bindings are missing",
            hint="install the Debian package python3-seccomp and use a venv made with --system-site-packages",
        ) from None
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    for arch in _OTHER_ABIS.get(os.uname().machine, ()):
        with contextlib.suppress(RuntimeError, AttributeError):  # an ABI libseccomp or the kernel lacks
            f.add_arch(getattr(seccomp.Arch, arch))
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in (*_DENIED, *(() if guest else ("chroot",))):
        with contextlib.suppress(RuntimeError):  # a call this architecture does not have
            f.add_rule(eperm, name)
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags are out of a filter's reach: libc falls back
    bit = 1
    while bit <= _CLONE_NAMESPACES:
        if _CLONE_NAMESPACES & bit:
            f.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, bit, bit))
        bit <<= 1
    for request in (_TIOCSTI, _TIOCLINUX):
        f.add_rule(eperm, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    f.add_rule(eperm, "personality", seccomp.Arg(0, seccomp.NE, 0))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


# --- the sandbox ---------------------------------------------------------------------------


def _host_root() -> list[str]:
    """bwrap arguments for a root made of the host's programs and libraries, read-only."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    if os.path.isfile("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def _dev(limits: Limits, at: str) -> list[str]:
    """bwrap's /dev (null, zero, full, random, urandom, tty, pts), read-only but for a bounded /dev/shm:
    /dev is a tmpfs as large as half the RAM, which a program could otherwise fill."""
    return ["--dev", at, "--size", str(limits.tmpfs), "--perms", "1777", "--tmpfs", f"{at}/shm",
            "--remount-ro", at]  # fmt: skip


def _check_target(root: Path, target: str, tmpfs_at: Sequence[str]) -> None:
    """A mount point in a guest tree must be a real directory reached through real directories:
    bwrap follows symlinks in it, and a guest symlink could send a mount, or a directory bwrap
    makes, out of the tree.  Below a tmpfs of ours there is nothing of the guest's."""
    if any(target == t or target.startswith(t.rstrip("/") + "/") for t in tmpfs_at):
        return
    current = root
    for part in [p for p in target.split("/") if p]:
        if part in (".", ".."):
            raise InvalidOptions(f"mount point {target!r} must be a plain path")
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise HostError(f"mount point {target} does not exist in the guest tree {root}") from None
        if not stat.S_ISDIR(st.st_mode) and not (
            stat.S_ISREG(st.st_mode) and current.name == target.rsplit("/", maxsplit=1)[-1]
        ):
            raise HostError(f"mount point {target} in the guest tree {root} is not a directory (a symbolic link?)")


@dataclass
class _Fs:
    paths: list[str]  # what the sandbox can write on this filesystem
    free: int  # bytes free when the sandbox started, or when its own use was last measured
    floor: int  # free bytes it never takes
    start_use: int  # bytes its paths took when it started
    inodes: int


def _use(paths: Sequence[str]) -> int:
    """Bytes the files below ``paths`` take (hard links once), walked without following links."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in paths:
        todo = [path]
        while todo:
            current = todo.pop()
            try:
                st = os.lstat(current)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    todo += [os.path.join(current, name) for name in os.listdir(current)]
    return total


class _Watchdog:
    """Stops the sandbox when it writes more than its share of a host filesystem, or prints too much.

    Each look costs a ``statvfs``: the free space says at once when the filesystem loses more than
    ``Limits.disk``.  Others may write there too, so only then are the sandbox's own files
    measured: it is stopped if they are past the limit, else the rest is counted as the others'.
    Whoever wrote it, a filesystem is never let go below its reserve (:data:`DISK_RESERVE`, at
    most a twentieth of it).
    """

    def __init__(self, what: str, argv: Sequence[str], writable: Sequence[str], outputs: Sequence[IO[bytes]],
                 limits: Limits) -> None:  # fmt: skip
        self.what = what
        self.argv = argv
        self.limits = limits
        self.outputs = outputs
        self.filesystems: dict[int, _Fs] = {}
        for path in writable:
            dev = os.stat(path).st_dev
            if dev in self.filesystems:
                self.filesystems[dev].paths.append(path)
                continue
            st = os.statvfs(path)
            floor = min(DISK_RESERVE, st.f_blocks * st.f_frsize // 20)
            self.filesystems[dev] = _Fs([path], st.f_bavail * st.f_frsize, floor, 0, st.f_favail if st.f_files else -1)
        for fs in self.filesystems.values():
            fs.start_use = _use(fs.paths)
        # What it prints goes to unnamed files of liveimg's temporary directory: bounded by
        # Limits.output, and their filesystem kept above its reserve like the others.
        for out in outputs:
            dev = os.fstat(out.fileno()).st_dev
            if dev not in self.filesystems:
                st = os.fstatvfs(out.fileno())
                floor = min(DISK_RESERVE, st.f_blocks * st.f_frsize // 20)
                self.filesystems[dev] = _Fs([], st.f_bavail * st.f_frsize, floor, 0, -1)
                self.filesystems[dev].paths.append(f"/proc/self/fd/{out.fileno()}")

    def _stop(self, message: str) -> LimitExceeded:
        return LimitExceeded(self.argv, None, message=f"{self.what} was stopped: {message}",
                             hint="a hostile or broken image, or raise the limit or free space")  # fmt: skip

    def __call__(self) -> LiveImgError | None:
        for fs in self.filesystems.values():
            st = os.statvfs(fs.paths[0])
            free = st.f_bavail * st.f_frsize
            if free < fs.floor:
                return self._stop(f"the filesystem of {fs.paths[0]} is full")
            if fs.inodes > INODE_RESERVE and st.f_favail < INODE_RESERVE:
                return self._stop(f"it used up the free inodes of the filesystem of {fs.paths[0]}")
            if self.limits.disk is not None and fs.free - free > self.limits.disk:
                used = _use(fs.paths) - fs.start_use
                if used > self.limits.disk:
                    return self._stop(f"it wrote more than {_size(self.limits.disk)} to the filesystem of "
                                      f"{fs.paths[0]}")  # fmt: skip
                fs.free = free + max(used, 0)  # the rest was written by others
        for out in self.outputs:
            if os.fstat(out.fileno()).st_size > self.limits.output:
                return self._stop(f"it printed more than {_size(self.limits.output)}")
        return None


def _size(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def _open(file: File, ids: tuple[int, int] | None) -> int:
    flags = (os.O_RDWR if file.writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    ours = re.fullmatch(r"/proc/(self|\d+)/fd/(\d+)", os.fspath(file.path))
    try:
        if ours and ours.group(1) in ("self", str(os.getpid())) and not file.writable:
            fd = os.dup(int(ours.group(2)))  # a file liveimg holds open (the input): the same open file
        else:
            fd = os.open(file.path, flags)
    except OSError as exc:
        raise HostError(f"cannot open {file.path} for a sandboxed tool: {exc.strerror or exc}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISBLK(st.st_mode):
        os.close(fd)
        raise HostError(f"{file.path} is not a regular file or a block device")
    if ids is not None and (st.st_uid != ids[0] if file.writable else not can_read(st, ids)):
        os.close(fd)
        raise HostError(
            f"{file.path}: liveimg's sandbox user (uid {ids[0]}) cannot {'write' if file.writable else 'read'} it",
            hint=f"make it readable by that user, or set ${SANDBOX_USER_ENV} to a user who can read it",
        )
    return fd


@dataclass
class _Launch:
    """A sandbox ready to start: the command line that makes it, and what it needs."""

    argv: list[str]  # portal or bwrap, then the command
    command: list[str]  # the command inside, files as /proc/self/fd/N
    fds: list[int]
    user: tuple[int, int] | None
    writable: list[str]
    start: Callable[[subprocess.Popen[bytes]], None]
    child: list[int]  # the PID of the sandbox's first process, once started

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """End the sandbox: its first process (the whole PID namespace dies with it, and the kernel
        waits for all of it), then bwrap, which exits once that process is gone."""
        for pid in self.child:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _prepare(
    stack: contextlib.ExitStack,
    argv: Sequence[str | File],
    *,
    root: Path | None,
    root_writable: bool,
    mounts: Sequence[Bind | Tmpfs],
    limits: Limits,
    env: Mapping[str, str] | None,
    caps: Sequence[str],
    system_dirs: Mapping[str, str] | None,
    cwd: str,
) -> _Launch:
    """Everything but starting it: open the files, build bwrap's command line (see :func:`run`)."""
    ids = sandbox_ids()
    fds: list[int] = []
    writable: list[str] = []

    def keep(fd: int) -> int:
        stack.callback(os.close, fd)
        fds.append(fd)
        return fd

    command: list[str] = []
    if root is None and argv and isinstance(argv[0], str):
        argv = [runner.require(argv[0]), *argv[1:]]  # a host tool: said by name when it is not installed
    # A file the tool may write is handed over open (/proc/self/fd/N).  One it may only read must be
    # read-only for it whatever its mode: a descriptor can be opened again for writing through
    # /proc/self/fd/N by whoever may write the file.  So it is bound read-only -- by descriptor
    # (bwrap checks that what it bound is that open file) -- unless the sandbox user could not
    # write it anyway (as root: a file of root's), which saves the portal.
    file_mounts: list[str] = []
    portal: list[list[object]] = []
    for arg in argv:
        if not isinstance(arg, File):
            command.append(arg)
            continue
        if root is not None:
            raise InternalError("files are handed to host tools only")
        fd = _open(arg, ids)
        st = os.fstat(fd)
        if arg.writable or (ids is not None and not _may_write(st, ids)):
            inner = f"{_PROC_FD}{keep(fd)}"
            if arg.writable:
                writable.append(os.fspath(arg.path))
        elif ids is None:
            inner = f"{_FILES}/{len(file_mounts) // 3}"
            file_mounts += ["--ro-bind-fd", str(keep(fd)), inner]  # bwrap closes it once bound
        else:  # the portal binds it by path, as root, and checks it is this file; no descriptor goes in
            inner = f"{_FILES}/{len(file_mounts) // 3}"
            name = str(len(portal))
            portal.append([os.readlink(f"/proc/self/fd/{fd}"), name, st.st_dev, st.st_ino])
            file_mounts += ["--ro-bind", f"{_portal.PORTAL}/{name}", inner]
            os.close(fd)
        command.append(arg.template.replace("{}", inner))
    seccomp_fd = keep(os.memfd_create("liveimg-seccomp", os.MFD_CLOEXEC))
    os.write(seccomp_fd, _seccomp_program(guest=root is not None))
    os.lseek(seccomp_fd, 0, os.SEEK_SET)

    # Directories (and the guest root) are bound by path; as root, through the portal.
    def source(path: Path) -> str:
        if ids is None:
            return os.fspath(path)
        name = str(len(portal))
        portal.append([os.path.abspath(path), name])
        return f"{_portal.PORTAL}/{name}"

    inner_uid = "0" if root is not None else str(DEFAULT_SANDBOX_ID)
    bwrap = [runner.require("bwrap"), "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net",
             "--unshare-uts", "--unshare-cgroup", "--disable-userns", "--die-with-parent", "--new-session",
             "--uid", inner_uid, "--gid", inner_uid, "--hostname", "liveimg",
             "--seccomp", str(seccomp_fd)]  # fmt: skip
    for cap in caps:
        bwrap += ["--cap-add", cap]
    inner_env = {"PATH": SANDBOX_PATH, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"}
    if "SOURCE_DATE_EPOCH" in os.environ:
        inner_env["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    inner_env.update(env or {})
    bwrap.append("--clearenv")
    for key, value in inner_env.items():
        bwrap += ["--setenv", key, value]
    if root is None:
        bwrap += _host_root()
        bwrap += ["--proc", "/proc", *_dev(limits, "/dev"), "--size", str(limits.tmpfs), "--tmpfs", "/tmp"]
    else:
        if not root.is_dir():
            raise HostError(f"the guest tree {root} is not a directory")
        bwrap += ["--bind" if root_writable else "--ro-bind", source(root), "/"]
        if root_writable:
            writable.append(os.fspath(root))
        where = {"proc": "/proc", "dev": "/dev", "sys": "/sys", **(system_dirs or {})}
        for target in where.values():
            _check_target(root, target, ())
        bwrap += ["--proc", where["proc"], *_dev(limits, where["dev"]), "--size", str(limits.tmpfs),
                  "--tmpfs", where["sys"]]  # fmt: skip
        for part in SYS_PARTS:
            if os.path.isdir(f"/sys/{part}"):
                bwrap += ["--ro-bind", f"/sys/{part}", f"{where['sys']}/{part}"]
        bwrap += ["--remount-ro", where["sys"]]
    tmpfs_at: list[str] = []
    for m in mounts:
        target = "/" + m.target.strip("/")
        if root is not None:
            _check_target(root, target, tmpfs_at)
        if isinstance(m, Tmpfs):
            tmpfs_at.append(target)
            bwrap += ["--perms", f"{m.mode:o}", "--size", str(m.size or limits.tmpfs), "--tmpfs", target]
        else:
            if not m.source.exists():
                raise HostError(f"cannot show {m.source} in the sandbox: it does not exist")
            bwrap += ["--bind" if m.writable else "--ro-bind", source(m.source), target]
            if m.writable:
                writable.append(os.fspath(m.source))
    if root is None:
        bwrap += [*file_mounts, "--remount-ro", "/"]  # bwrap's own root is a tmpfs: only /tmp stays writable
    values = {"nproc": limits.tasks, "as": limits.memory, "fsize": limits.file_size,
              "nofile": limits.open_files, "core": 0}  # fmt: skip
    started = command
    if root is None:
        # The host's prlimit, inside: it limits itself, then runs the tool.
        started = [runner.require("prlimit"), *(f"--{k}={v}:{v}" for k, v in values.items()), "--", *command]
    bwrap += ["--chdir", cwd, "--", *started]

    # bwrap says the PID of the sandbox's first process (--info-fd): killing it first ends the
    # whole PID namespace before bwrap itself, so that nothing of the sandbox outlives run().
    # For a guest program (no host prlimit inside), the limits are set on that process once its
    # namespaces exist and before it starts the command (bwrap waits on --block-fd).  Either way
    # RLIMIT_NPROC counts the sandbox's own processes only, not every process of its user.
    info_r, info_w = os.pipe2(os.O_CLOEXEC)
    stack.callback(os.close, info_r)
    theirs = [info_w]  # bwrap's ends: ours are closed once it has them
    bwrap[1:1] = ["--info-fd", str(info_w)]
    block_w = -1
    if root is not None:
        block_r, block_w = os.pipe2(os.O_CLOEXEC)
        stack.callback(os.close, block_w)
        theirs.append(block_r)
        bwrap[1:1] = ["--block-fd", str(block_r)]
    fds += theirs
    stack.callback(_close_all, theirs)
    child: list[int] = []

    def start(proc: subprocess.Popen[bytes]) -> None:
        _start(info_r, theirs, block_w=block_w, values=values if root is not None else None, ids=ids, child=child)

    full = bwrap
    user = ids
    if ids is not None and portal:
        spec = {"binds": portal, "uid": ids[0], "gid": ids[1], "argv": full}
        full = [sys.executable, "-I", "-S", os.path.abspath(_portal.__file__), json.dumps(spec)]
        user = None  # the portal drops to the sandbox user itself, after its mounts
    return _Launch(full, command, fds, user, writable, start, child)


def _setup_failure(returncode: int, stderr: str) -> int:
    """Raise :class:`HostError` if the sandbox itself could not be made; the command's status."""
    last = (stderr.strip().splitlines() or [""])[-1]
    if returncode == _portal.SETUP_FAILED and last.startswith("liveimg portal:"):
        raise HostError(f"cannot set up the sandbox: {last}")
    if returncode == 1 and last.startswith("bwrap: execvp "):
        return 127  # as a shell says it: the command is not there
    if returncode == 1 and last.startswith("bwrap: "):
        raise HostError(f"cannot set up the sandbox: {last}")
    return returncode


def run(
    argv: Sequence[str | File],
    *,
    what: str,
    root: Path | None = None,
    root_writable: bool = False,
    mounts: Sequence[Bind | Tmpfs] = (),
    limits: Limits = Limits(),  # frozen: shared safely
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    log_path: Path | None = None,
    caps: Sequence[str] = (),
    system_dirs: Mapping[str, str] | None = None,
    check: bool = True,
    ok_codes: Sequence[int] = (0,),
    cwd: str = "/",
) -> runner.Completed:
    """Run ``argv`` in a sandbox (see the module docstring) and return what it printed.

    ``root`` None runs a host tool (``argv[0]`` is found on the host's ``/usr``); a directory
    runs a guest program with that tree as ``/`` (read-only unless ``root_writable``).
    ``mounts`` apply in order; in a guest tree their targets -- and ``/proc``, ``/dev``, ``/sys``,
    or where ``system_dirs`` (``{"proc": ..., "dev": ..., "sys": ...}``) puts them -- must be real
    directories reached through real directories (see :func:`liveimg.dracut.tree.guest_mkdirs`:
    bwrap would follow guest symlinks), or lie in an earlier :class:`Tmpfs`.  ``what`` names the
    program in errors.  Output goes to ``log_path`` (stdout and stderr together, appended) or is
    captured (at most ``limits.output`` bytes each).  ``caps`` are capabilities kept inside the
    sandbox's own user namespace.  Errors: :class:`~liveimg.errors.ToolError` (exit status
    outside ``ok_codes``, with ``check``), :class:`LimitExceeded`,
    :class:`~liveimg.errors.ToolTimeout`, :class:`~liveimg.errors.HostError` when the sandbox
    cannot be made.
    """
    shown = [a.path.name if isinstance(a, File) else a for a in argv]
    with contextlib.ExitStack() as stack:
        launch = _prepare(stack, argv, root=root, root_writable=root_writable, mounts=mounts, limits=limits,
                          env=env, caps=caps, system_dirs=system_dirs, cwd=cwd)  # fmt: skip
        outputs: list[IO[bytes]] = []
        if log_path is not None:
            out: IO[bytes] = stack.enter_context(open(log_path, "a+b"))
            err: IO[bytes] | int = subprocess.STDOUT
            launch.writable.append(os.fspath(log_path))  # a log is bounded by the file size and disk limits
        else:
            out = stack.enter_context(tempfile.TemporaryFile(prefix="liveimg-sandbox-"))
            err = stack.enter_context(tempfile.TemporaryFile(prefix="liveimg-sandbox-"))
            outputs += [out, err]
        watchdog = _Watchdog(what, shown, launch.writable, outputs, limits)
        log.debug("sandbox: %s", " ".join(shown))
        try:
            result = runner.run(launch.argv, timeout=limits.seconds, check=False, input=input, stdout=out,
                                stderr=err, pass_fds=launch.fds, user=launch.user, watchdog=watchdog,
                                on_start=launch.start, kill=launch.kill)  # fmt: skip
        except ToolTimeout:
            raise ToolTimeout(shown, limits.seconds, _tail(out if isinstance(err, int) else err)) from None
        stdout = "" if log_path is not None else _read(out, limits.output)
        stderr = _tail(out) if isinstance(err, int) else _read(err, limits.output)
    returncode = _setup_failure(result.returncode, stderr)
    if returncode == 128 + 25:  # SIGXFSZ
        raise LimitExceeded(
            shown, returncode, stderr, hint="a hostile or broken image, or raise the limit",
            message=f"{what} was stopped: it wrote a file larger than {_size(limits.file_size)}",
        )  # fmt: skip
    completed = runner.Completed(tuple(shown), returncode, stdout, stderr, result.seconds)
    if check and returncode not in ok_codes:
        raise ToolError(shown, returncode, stderr or stdout)
    return completed


def _start(
    info_r: int,
    theirs: list[int],
    *,
    block_w: int,
    values: Mapping[str, int] | None,
    ids: tuple[int, int] | None,
    child: list[int],
) -> None:
    """Once bwrap has made the namespaces: note its first process; for a guest program, limit that
    process, then let it start the command."""
    _close_all(theirs)  # our copies of bwrap's ends: the info pipe ends when bwrap has closed its own
    data = b""
    while chunk := os.read(info_r, 4096):
        data += chunk
    try:
        pid = int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return  # bwrap failed before (it says why on stderr); a blocked one exits with us
    child.append(pid)
    if values is None:
        return
    try:
        for name, value in values.items():
            resource.prlimit(pid, _RLIMITS[name], (value, value))
    except PermissionError:
        # root without CAP_SYS_RESOURCE (some containers): the sandbox user may limit its own process
        if ids is None:
            raise
        runner.run(["prlimit", f"--pid={pid}", *(f"--{k}={v}:{v}" for k, v in values.items())], user=ids,
                   timeout=60)  # fmt: skip
    with contextlib.suppress(BrokenPipeError):
        os.write(block_w, b"x")


def _close_all(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())


_RLIMITS = {
    "nproc": resource.RLIMIT_NPROC,
    "as": resource.RLIMIT_AS,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
}


def _read(f: IO[bytes], limit: int) -> str:
    f.seek(0)
    return f.read(limit).decode("utf-8", "replace")


def _tail(f: IO[bytes], size: int = 64 * KiB) -> str:
    end = f.seek(0, os.SEEK_END)
    start = max(0, end - size)
    f.seek(start)
    data = f.read(size)
    if start:
        data = data.partition(b"\n")[2]  # from the first whole line
    return data.decode("utf-8", "replace")


@contextlib.contextmanager
def scratch(parent: Path, prefix: str) -> Iterator[Path]:
    """A private directory for sandbox work below ``parent``, given to the sandbox user
    (see :func:`hand_over`) and removed afterwards (without following its links)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        hand_over(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- several host tools in one sandbox -----------------------------------------------------------

#: The program that runs the tools of a :class:`Session`, inside it (the host's python3, standard
#: library only).  Requests and answers are a 4-byte length and a JSON header, then raw bytes.
_WORKER = r"""
import json, os, select, struct, subprocess, sys
IN, OUT, LIMIT = sys.stdin.buffer, sys.stdout.buffer, int(sys.argv[1])

def read(n):
    data = b""
    while len(data) < n:
        chunk = IN.read(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data

while True:
    request = json.loads(read(struct.unpack(">I", read(4))[0]))
    timed_out = False
    with open("/tmp/.in", "w+b") as inp, open("/tmp/.out", "w+b") as out, open("/tmp/.err", "w+b") as err:
        inp.write(read(request["input"]))
        inp.seek(0)
        try:
            proc = subprocess.Popen(request["argv"], stdin=inp, stdout=out, stderr=err, pass_fds=request["fds"])
            pidfd = os.pidfd_open(proc.pid)  # wakes the moment the tool ends (wait() would poll)
            if not select.select([pidfd], [], [], request["timeout"])[0]:
                proc.kill()
                timed_out = True
            os.close(pidfd)
            rc = proc.wait()
        except OSError as exc:
            rc = 127
            err.write(f"{request['argv'][0]}: {exc.strerror}\n".encode())
        answer = []
        for f in (out, err):
            f.seek(0)
            answer.append(f.read(LIMIT))
    header = json.dumps({"rc": rc, "timed_out": timed_out, "out": len(answer[0]), "err": len(answer[1])}).encode()
    OUT.write(struct.pack(">I", len(header)) + header + answer[0] + answer[1])
    OUT.flush()
"""


class Session:
    """Several host tools on the same files, one after the other, in one sandbox (one start for all).

    ``files`` are opened once, for the whole session; a command names them by putting the same
    :class:`File` in its ``argv``.  ``mounts`` and ``limits`` are the session's (a command's
    ``timeout`` is its own).  Inside, a small program of the host's python3 starts each tool and
    hands back its exit status and output; the sandbox is the one :func:`run` makes, so a tool
    compromised by what it parses can reach no more than it would alone.  Use it as a context
    manager; the sandbox ends with the block.
    """

    def __init__(self, *, what: str, files: Sequence[File], mounts: Sequence[Bind] = (), limits: Limits = Limits(),
                 env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.what = what
        self.files = list(files)
        self.mounts = list(mounts)
        self.limits = limits
        self.env = env
        self._paths: dict[File, str] = {}
        self._stack = contextlib.ExitStack()
        self._proc: subprocess.Popen[bytes] | None = None
        self._fds: list[int] = []
        self._watchdog: _Watchdog | None = None
        self._stderr: IO[bytes] | None = None
        self._launch: _Launch | None = None

    def __enter__(self) -> Session:
        stack = self._stack.__enter__()
        try:
            python = runner.require("/usr/bin/python3", "python3")  # the system's: in /usr, seen inside
            argv: list[str | File] = [python, "-I", "-S", "-c", _WORKER, str(self.limits.output), *self.files]
            launch = _prepare(stack, argv, root=None, root_writable=False, mounts=self.mounts, limits=self.limits,
                              env=self.env, caps=(), system_dirs=None, cwd="/")  # fmt: skip
            self._paths = dict(zip(self.files, launch.command[6:], strict=True))
            self._fds = [int(p.removeprefix(_PROC_FD)) for p in self._paths.values() if p.startswith(_PROC_FD)]
            self._stderr = stack.enter_context(tempfile.TemporaryFile(prefix="liveimg-sandbox-"))
            self._watchdog = _Watchdog(self.what, [self.what], launch.writable, [self._stderr], self.limits)
            spawned = runner.spawn(launch.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                   pass_fds=launch.fds, user=launch.user)  # fmt: skip
            self._proc = stack.enter_context(spawned)
            self._launch = launch
            launch.start(self._proc)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()  # the worker ends; spawn() waits, then kills what is left
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        self._stack.__exit__(None, None, None)

    def has(self, file: File) -> bool:
        """Whether ``file`` is one of the session's (and as writable as asked)."""
        return any(f.path == file.path and (f.writable or not file.writable) for f in self.files)

    def run(self, argv: Sequence[str | File], *, timeout: float, input: bytes | None = None, check: bool = True,
            ok_codes: Sequence[int] = (0,)) -> runner.Completed:  # fmt: skip
        """Run one tool in the session; as :func:`run`."""
        proc, watchdog = self._proc, self._watchdog
        if proc is None or proc.stdin is None or proc.stdout is None or watchdog is None:
            raise InternalError("a sandbox session is used outside its with block")
        shown = [a.path.name if isinstance(a, File) else a for a in argv]
        command: list[str] = []
        for arg in argv:
            if isinstance(arg, File):
                match = [p for f, p in self._paths.items() if f.path == arg.path and (f.writable or not arg.writable)]
                if not match:
                    raise InternalError(f"{arg.path} is not a file of this sandbox session")
                command.append(arg.template.replace("{}", match[0]))
            else:
                command.append(arg)
        if command and "/" not in command[0]:
            command[0] = runner.require(command[0])
        log.debug("sandbox session: %s", " ".join(shown))
        header = json.dumps({"argv": command, "input": len(input or b""), "timeout": timeout, "fds": self._fds})
        started = time.monotonic()
        try:
            proc.stdin.write(struct.pack(">I", len(header)) + header.encode() + (input or b""))
            proc.stdin.flush()
            answer = self._answer(proc, watchdog, deadline=started + timeout + 30)
        except BrokenPipeError:
            answer = None
        if answer is None:
            assert self._stderr is not None
            stderr = _read(self._stderr, self.limits.output)
            _setup_failure(proc.poll() or 1, stderr)
            raise ToolError(shown, proc.poll(), stderr, message=f"the sandbox of {self.what} ended: "
                            f"{(stderr.strip().splitlines() or ['no output'])[-1]}")  # fmt: skip
        rc, timed_out, out, err = answer
        if timed_out:
            raise ToolTimeout(shown, timeout, err)
        returncode = 128 - rc if rc < 0 else rc  # a signal, as a shell says it
        if returncode == 128 + 25:  # SIGXFSZ
            raise LimitExceeded(shown, returncode, err, message=f"{shown[0]} was stopped: it wrote a file larger "
                                f"than {_size(self.limits.file_size)}")  # fmt: skip
        completed = runner.Completed(tuple(shown), returncode, out, err, time.monotonic() - started)
        if check and returncode not in ok_codes:
            raise ToolError(shown, returncode, err or out)
        return completed

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        if self._launch is not None:
            self._launch.kill(proc)

    def _answer(self, proc: subprocess.Popen[bytes], watchdog: _Watchdog,
                deadline: float) -> tuple[int, bool, str, str] | None:  # fmt: skip
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        data = b""
        needed = 4
        header: dict[str, int] | None = None
        while True:
            while len(data) < needed:
                if time.monotonic() > deadline:
                    self._kill(proc)
                    raise ToolTimeout([self.what], deadline - time.monotonic(), "the sandbox did not answer")
                ready, _, _ = select.select([fd], [], [], runner.WATCH_SECONDS)
                if ready:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        return None
                    data += chunk
                error = watchdog()
                if error is not None:
                    self._kill(proc)
                    raise error
            if header is None and needed == 4:
                needed = 4 + struct.unpack(">I", data[:4])[0]
                if needed > 4 + 4096:
                    return None
                continue
            if header is None:
                header = json.loads(data[4:needed])
                if not (0 <= header["out"] <= self.limits.output and 0 <= header["err"] <= self.limits.output):
                    return None
                start = needed
                needed += header["out"] + header["err"]
                continue
            out = data[start : start + header["out"]].decode("utf-8", "replace")
            err = data[start + header["out"] : needed].decode("utf-8", "replace")
            return int(header["rc"]), bool(header["timed_out"]), out, err
