"""The one way liveimg runs external programs.

Everything goes through :func:`run` (a program that runs to completion) or :func:`spawn`
(a program that runs beside us, such as QEMU).  Both take an argv list, never a shell
string; stdin is closed unless input is given; the environment is clean (``LC_ALL`` and
``LANG`` are ``C.UTF-8`` so that messages we parse are stable, ``SOURCE_DATE_EPOCH`` is
passed through for reproducible tools); every command is logged at debug level as
``+ <command>``; a missing program is a :class:`~liveimg.errors.ToolNotFound` that names
the Debian package to install; a non-zero exit is a :class:`~liveimg.errors.ToolError`
with the tail of stderr; a timeout kills the program's whole process group.

Every program runs in a session (and process group) of its own, so that a terminal's Ctrl-C
reaches liveimg alone and liveimg decides what stops.  Until it is reaped, each is tracked:
:func:`kill_children` kills the process group of every one (what a cancelled build does,
see :mod:`liveimg.cancel`).  And each gets a parent-death signal (``PR_SET_PDEATHSIG``,
prctl(2)): SIGKILL when liveimg dies, even by SIGKILL, so that no tool outlives a killed
build.  The kernel sends it when the *thread* that started the program ends: :func:`run`
waits in that thread, and a :func:`spawn` block must end in the thread that entered it.

For :mod:`liveimg.sandbox`, :func:`run` also hands over open descriptors (``pass_fds``), starts
the program as another user (``user``), and polls a ``watchdog`` while it runs: when the
watchdog returns an error, the program's process group is killed and that error raised.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from liveimg.errors import Cancelled, LiveImgError, ToolError, ToolNotFound, ToolTimeout

log = logging.getLogger(__name__)

#: Debian package that provides each program liveimg may run (for "command not found").
PACKAGES: Mapping[str, str] = {
    "blkid": "util-linux",
    "busybox": "busybox-static",
    "bwrap": "bubblewrap",
    "bzip2": "bzip2",
    "bsdtar": "libarchive-tools",
    "cpio": "cpio",
    "curl": "curl",
    "dd": "coreutils",
    "debootstrap": "debootstrap",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "fsck.ext4": "e2fsprogs",
    "guestfish": "libguestfs-tools",
    "gzip": "gzip",
    "kea-dhcp4": "kea-dhcp4-server",
    "lsinitrd": "dracut-core",
    "lvm": "lvm2",
    "losetup": "mount",
    "lz4": "lz4",
    "mkfs.btrfs": "btrfs-progs",
    "mkfs.erofs": "erofs-utils",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mkfs.xfs": "xfsprogs",
    "mke2fs": "e2fsprogs",
    "mksquashfs": "squashfs-tools",
    "nginx": "nginx-light",
    "nsenter": "util-linux",
    "ostree": "ostree",
    "pigz": "pigz",
    "prlimit": "util-linux",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "resize2fs": "e2fsprogs",
    "setpriv": "util-linux",
    "sfdisk": "fdisk",
    "socat": "socat",
    "sqfsdiff": "squashfs-tools-ng",
    "sqfs2tar": "squashfs-tools-ng",
    "supermin": "supermin",
    "tgtadm": "tgt",
    "tgtd": "tgt",
    "tune2fs": "e2fsprogs",
    "umockdev-run": "umockdev",
    "unshare": "util-linux",
    "unsquashfs": "squashfs-tools",
    "virt-filesystems": "libguestfs-tools",
    "xz": "xz-utils",
    "zstd": "zstd",
}

#: Default time limit of :func:`run`, in seconds.  Callers that run long tools pass their own.
DEFAULT_TIMEOUT = 3600.0

# Programs in sbin are needed (mkfs, e2fsck, debugfs) even when the caller's PATH lacks them.
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Variables passed through from our environment to the programs we run.
_PASSED = ("HOME", "TMPDIR", "SOURCE_DATE_EPOCH", "USER", "LOGNAME", "TERM")


def search_path() -> str:
    """PATH for the programs we run: the caller's, followed by the system directories."""
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    parts += [p for p in _SYSTEM_PATH if p not in parts]
    return os.pathsep.join(parts)


def clean_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment every program runs in: a fixed locale, PATH, and a few passed-through names.

    In ``extra`` a value of None removes that name (e.g. ``SOURCE_DATE_EPOCH`` for a tool
    that refuses it next to explicit timestamps).
    """
    env = {name: os.environ[name] for name in _PASSED if name in os.environ}
    env["PATH"] = search_path()
    env["LC_ALL"] = env["LANG"] = "C.UTF-8"
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def which(program: str) -> str | None:
    """Absolute path of ``program`` on :func:`search_path`, or None."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    return shutil.which(program, path=search_path())


def require(program: str, package: str | None = None) -> str:
    """Absolute path of ``program``; :class:`ToolNotFound` naming its Debian package if it is missing."""
    path = which(program)
    if path is None:
        raise ToolNotFound(program, package or PACKAGES.get(os.path.basename(program)))
    return path


@dataclass(frozen=True)
class Completed:
    """What a finished program left: its exit status, output and run time."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


# --- the children: tracked until reaped, killed together, dying with liveimg -------------

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux's C library
        return None
    return prctl


_prctl = _load_prctl()
_children_lock = threading.Lock()
_children: dict[int, subprocess.Popen[bytes]] = {}  # pid (= its process group) -> the child
_killers: dict[int, Callable[[], None]] = {}
_killer_ids = itertools.count()


def _die_with_us() -> Callable[[], None] | None:
    """What the child runs between fork and exec: SIGKILL when this process dies.

    If this process died before the child asked (the child's parent is then another process),
    the signal would never come: the child exits at once instead.  Only a prctl call,
    getppid and _exit happen here, as a forked child of a threaded process requires: nothing
    that takes a lock another thread may have held at fork time.
    """
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(128 + kill)

    return preexec


class Scope:
    """The programs (and killers) started by the threads working in it, killable apart from the others.

    A build runs part of its work in a background thread (:mod:`liveimg.background`): when the
    rest fails, that thread's programs must die, and only they -- another build in the same
    process keeps its own.  A thread joins a scope with :func:`scoped`.
    """

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._killers: dict[int, Callable[[], None]] = {}
        self.killed = False

    def kill(self) -> None:
        """Kill every program of the scope that is still running, and call its killers; never raises.

        Programs started in the scope after this are killed at once.
        """
        with _children_lock:
            self.killed = True
            procs = [proc for proc in self._procs.values() if proc.returncode is None]
            killers = list(self._killers.values())
        _kill_all(procs, killers)


_scope = threading.local()


@contextlib.contextmanager
def scoped(scope: Scope) -> Iterator[None]:
    """Count the programs and killers this thread starts in the block as ``scope``'s."""
    previous: Scope | None = getattr(_scope, "current", None)
    _scope.current = scope
    try:
        yield
    finally:
        _scope.current = previous


def _track(proc: subprocess.Popen[bytes]) -> None:
    scope: Scope | None = getattr(_scope, "current", None)
    with _children_lock:
        _children[proc.pid] = proc
        if scope is not None:
            scope._procs[proc.pid] = proc
            killed = scope.killed
        else:
            killed = False
    if killed:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def _raise_if_scope_killed(args: Sequence[str]) -> None:
    """Raise :class:`Cancelled` if the thread's scope was killed while its program ran.

    The program then died of the scope's SIGKILL, not of its own failure: its exit status must
    not be read as a verdict on the host (a sandbox probe that "failed") or on the guest.
    """
    scope: Scope | None = getattr(_scope, "current", None)
    if scope is not None and scope.killed:
        raise Cancelled(signal.SIGKILL, f"{os.path.basename(args[0])} stopped: the build no longer needs this work")


def _untrack(proc: subprocess.Popen[bytes]) -> None:
    scope: Scope | None = getattr(_scope, "current", None)
    with _children_lock:
        _children.pop(proc.pid, None)
        if scope is not None:
            scope._procs.pop(proc.pid, None)


def running_children() -> list[int]:
    """The pids of the programs :func:`run` and :func:`spawn` started and have not reaped."""
    with _children_lock:
        return [pid for pid, proc in _children.items() if proc.returncode is None]


def kill_children() -> None:
    """Kill every program liveimg runs now: each one's process group, and the registered killers.

    Safe from any thread and from a signal handler's thread; never raises.  The programs are
    reaped by the threads that started them (:func:`run` raises or returns as usual).
    """
    with _children_lock:
        procs = [proc for proc in _children.values() if proc.returncode is None]
        killers = list(_killers.values())
    _kill_all(procs, killers)


def _kill_all(procs: Sequence[subprocess.Popen[bytes]], killers: Sequence[Callable[[], None]]) -> None:
    """SIGKILL to each program's process group, then each killer; never raises."""
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    for kill in killers:
        try:
            kill()
        except Exception as exc:  # a killer is best effort: the others still run
            log.debug("killer %r failed: %s", kill, exc)


@contextlib.contextmanager
def killer(kill: Callable[[], None]) -> Iterator[None]:
    """Have :func:`kill_children` call ``kill`` too while the block runs.

    For processes liveimg starts otherwise than through this module: libguestfs forks the
    appliance's QEMU itself.  ``kill`` must be quick, safe from any thread, and never block
    on a lock the main thread may hold.
    """
    key = next(_killer_ids)
    scope: Scope | None = getattr(_scope, "current", None)
    with _children_lock:
        _killers[key] = kill
        if scope is not None:
            scope._killers[key] = kill
    try:
        yield
    finally:
        with _children_lock:
            _killers.pop(key, None)
            if scope is not None:
                scope._killers.pop(key, None)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    check: bool = True,
    ok_codes: Sequence[int] = (0,),
    input: bytes | None = None,
    stdout: Path | IO[bytes] | None = None,
    stderr: IO[bytes] | int | None = None,
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    package: str | None = None,
    pass_fds: Sequence[int] = (),
    user: tuple[int, int] | None = None,
    watchdog: Callable[[], LiveImgError | None] | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    kill: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Completed:
    """Run a program to completion and return what it printed.

    ``stdout`` may name a file (or give an open binary file) to receive a large output;
    otherwise it is captured and decoded; ``stderr`` may give an open binary file (or
    ``subprocess.STDOUT``) instead of being captured.  With ``check`` (the default) an exit
    status outside ``ok_codes`` raises :class:`ToolError`.  ``timeout`` is in seconds (None:
    none).  ``pass_fds`` stay open in the program; ``user`` is the (uid, gid) it starts as,
    with no supplementary groups (liveimg must be root to give one).  ``watchdog`` is called
    every :data:`WATCH_SECONDS` while the program runs; an error it returns stops the program.
    ``on_start`` is called with the started process before anything else (an error it raises
    stops the program); ``kill`` stops it (default: SIGKILL to its process group).
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("run() needs a program")
    executable = require(args[0], package)
    log.debug("+ %s", shlex.join(args))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        out: int | IO[bytes]
        if isinstance(stdout, Path):
            out = stack.enter_context(open(stdout, "wb"))
        elif stdout is None:
            out = subprocess.PIPE
        else:
            out = stdout
        try:
            proc = subprocess.Popen(
                args,
                executable=executable,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE if stderr is None else stderr,
                env=clean_env(env),
                cwd=cwd,
                start_new_session=True,  # so that a timeout kills its children too
                preexec_fn=_die_with_us(),  # noqa: PLW1509  # only prctl, getppid, _exit: see _die_with_us
                pass_fds=tuple(pass_fds),
                user=None if user is None else user[0],
                group=None if user is None else user[1],
                extra_groups=None if user is None else [],
            )
        except FileNotFoundError as exc:
            raise ToolNotFound(args[0], package or PACKAGES.get(os.path.basename(args[0]))) from exc
        _track(proc)
        try:
            if on_start is not None:
                on_start(proc)
            raw_out, raw_err = _communicate(proc, input, timeout, watchdog)
        except subprocess.TimeoutExpired:
            (kill or _kill_group)(proc)
            _, raw_err = proc.communicate()
            raise ToolTimeout(args, timeout or 0.0, _decode(raw_err)) from None
        except _Stopped as stop:
            (kill or _kill_group)(proc)
            proc.communicate()
            raise stop.error from None
        except BaseException:
            (kill or _kill_group)(proc)
            proc.wait()
            raise
        finally:
            _untrack(proc)
    _raise_if_scope_killed(args)
    result = Completed(
        argv=tuple(args),
        returncode=proc.returncode,
        stdout=_decode(raw_out),
        stderr=_decode(raw_err),
        seconds=time.monotonic() - started,
    )
    log.debug("  %s exited %d after %.1f s", os.path.basename(args[0]), proc.returncode, result.seconds)
    if check and proc.returncode not in ok_codes:
        raise ToolError(args, proc.returncode, result.stderr or result.stdout)
    return result


#: How often :func:`run` calls its watchdog (seconds).
WATCH_SECONDS = 0.02


class _Stopped(Exception):
    def __init__(self, error: LiveImgError) -> None:
        super().__init__(str(error))
        self.error = error


def _communicate(
    proc: subprocess.Popen[bytes],
    input: bytes | None,
    timeout: float | None,
    watchdog: Callable[[], LiveImgError | None] | None,
) -> tuple[bytes | None, bytes | None]:
    if watchdog is None:
        return proc.communicate(input, timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    if proc.stdin is None and proc.stdout is None and proc.stderr is None:
        # No pipe to serve: wait on a pidfd, which wakes the moment the program ends (subprocess's
        # own wait polls with growing sleeps, a few ms late for each short sandboxed tool).
        pidfd = os.pidfd_open(proc.pid)
        try:
            while proc.poll() is None:
                step = WATCH_SECONDS if deadline is None else min(WATCH_SECONDS, deadline - time.monotonic())
                if step <= 0:
                    raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
                select.select([pidfd], [], [], step)
                error = watchdog()
                if error is not None:
                    raise _Stopped(error)
        finally:
            os.close(pidfd)
        return None, None
    while True:
        step = WATCH_SECONDS if deadline is None else min(WATCH_SECONDS, deadline - time.monotonic())
        try:
            # Calling communicate again after a timeout loses no output (subprocess's contract);
            # the input is given once.
            return proc.communicate(input, timeout=max(step, 0.0))
        except subprocess.TimeoutExpired:
            input = None
            if deadline is not None and time.monotonic() >= deadline:
                raise
        error = watchdog()
        if error is not None:
            raise _Stopped(error)


def _decode(data: bytes | None) -> str:
    return data.decode("utf-8", "replace") if data else ""


@contextlib.contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    package: str | None = None,
    stop_timeout: float = 5.0,
    pass_fds: Sequence[int] = (),
    user: tuple[int, int] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a program beside us; it is terminated (then killed) when the block ends.

    For programs whose life is managed by the caller: QEMU, a test HTTP server, a sandbox that
    runs several tools.  ``pass_fds`` and ``user`` are as for :func:`run`.  The block must end in
    the thread that entered it (the program's parent-death signal is tied to that thread, see
    the module's docstring).
    """
    args = [os.fspath(a) for a in argv]
    executable = require(args[0], package)
    log.debug("+ %s &", shlex.join(args))
    proc = subprocess.Popen(
        args,
        executable=executable,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=clean_env(env),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_us(),  # noqa: PLW1509  # only prctl, getppid, _exit: see _die_with_us
        pass_fds=tuple(pass_fds),
        user=None if user is None else user[0],
        group=None if user is None else user[1],
        extra_groups=None if user is None else [],
    )
    _track(proc)
    try:
        yield proc
    finally:
        try:
            _stop(proc, stop_timeout)
        finally:
            _untrack(proc)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the program's process group, SIGKILL after ``timeout`` seconds; reaped."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:  # also when the wait is interrupted: the program is never left running
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
