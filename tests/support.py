"""Helpers shared by the tests: required tools, the CI switch, libguestfs settings, unprivileged users."""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.accel import AccelChoice, choose_accel

#: In CI a missing tool fails the test; elsewhere it skips it, naming the package.
IN_CI = os.environ.get("CI") == "true"

#: The opt-in tests: the environment variable that runs each, and why it is not run by default.
#: The README's "Opt-in tests" lists every one (tests/test_skips.py checks both ways).
OPT_IN: dict[str, str] = {
    "LIVEIMG_TEST_APPLIANCE": "dracut inside the libguestfs appliance takes 6-15 min under TCG; "
    "the default path (the sandbox) is tested by every build",
}


def unavailable(what: str) -> None:
    """This machine lacks what the test needs: skip, naming it -- but under ``CI=true`` fail.

    The only way a test may skip besides :func:`opt_in`: tests/test_skips.py rejects any other
    ``pytest.skip``, ``importorskip`` or ``skipif`` in the test suite.
    """
    if IN_CI:
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def opt_in(variable: str) -> pytest.MarkDecorator:
    """Mark a test that runs only with ``variable=1`` (listed in :data:`OPT_IN` and the README)."""
    return pytest.mark.skipif(os.environ.get(variable) != "1", reason=f"opt-in, set {variable}=1: {OPT_IN[variable]}")


def need(*programs: str) -> None:
    """Skip (fail in CI) unless every program is installed."""
    for program in programs:
        if runner.which(program) is None:
            package = runner.PACKAGES.get(program, "?")
            unavailable(f"{program} is not installed: install the Debian package {package}")


def need_module(module: str, package: str) -> None:
    """Skip (fail in CI) unless a Python module imports; ``package`` says where it comes from."""
    if importlib.util.find_spec(module) is None:
        unavailable(f"Python module {module} is missing: install {package}")


def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("this test must run as root")


@cache
def accel() -> AccelChoice:
    """The accelerator the library would choose on this machine (probed once)."""
    return choose_accel()


def guestfs_env() -> dict[str, str]:
    """Environment for libguestfs command-line tools run by tests (guestfish, virt-filesystems)."""
    return accel().libguestfs_env()


def need_file(path: str, package: str) -> None:
    """Skip (fail in CI) unless a file shipped by a Debian package exists."""
    if not os.path.exists(path):
        unavailable(f"{path} is missing: install the Debian package {package}")


#: The unprivileged user the rootless tests run as.
NOBODY = 65534


def run_python_as_nobody(
    code: str, *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in this interpreter as uid/gid 65534 with no capabilities (the rootless case);
    ``env`` adds to its small environment."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.fspath(Path(__file__).parents[1]),
        "HOME": "/nonexistent",
        **(env or {}),
    }
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]
    return subprocess.run(
        [*argv, sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


@contextlib.contextmanager
def public_directory(prefix: str, mode: int = 0o755) -> Iterator[Path]:
    """A scratch directory under /var/tmp that user nobody can reach (pytest's tmp dirs are
    private to root), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(mode)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- a throw-away unprivileged user --------------------------------------------------------------

#: The uids a throw-away user is drawn from: far above what useradd (1000-59999) and the
#: subordinate ranges of /etc/subuid (from 100000, 65536 a user) hand out, below 2**31.
THROWAWAY_UIDS = range(1_500_000_000, 2_000_000_000)
#: Where the user's directories are made: on the same filesystem as ~/.cache on a usual
#: installation (so that a sample image can be hard-linked, see UnprivilegedUser.share), and
#: world-traversable.  /tmp may be a tmpfs.
THROWAWAY_PARENT = Path("/var/tmp")
#: Where a program leaves files when it does not clean up after itself.
SHARED_SCRATCH = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


@dataclass(frozen=True)
class UnprivilegedUser:
    """A user made for one test or benchmark: a uid with no name, no capability, no privilege to gain.

    Its gid is its uid (no group has it); its supplementary groups are ``groups`` (none by
    default); it has no /etc/subuid or /etc/subgid range.  ``top`` (root's, mode 0711)
    holds ``public/`` (root's, 0755: what it may read) and ``home/`` (its own, 0700: its
    HOME, with ``home/tmp`` its TMPDIR), all removed by :func:`unprivileged_user`.
    """

    uid: int
    top: Path
    groups: tuple[int, ...] = ()

    @property
    def gid(self) -> int:
        return self.uid

    @property
    def home(self) -> Path:
        return self.top / "home"

    @property
    def tmp(self) -> Path:
        return self.home / "tmp"

    @property
    def public(self) -> Path:
        return self.top / "public"

    def env(self) -> dict[str, str]:
        """A fresh login's environment, with this checkout first on the Python path (as pytest has it)."""
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "HOME": os.fspath(self.home),
            "TMPDIR": os.fspath(self.tmp),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.fspath(Path(__file__).resolve().parents[1]),
        }

    def command(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """``argv`` run as this user by setpriv: no capability, none to gain (no setuid, no file capability)."""
        groups = f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups"
        return [
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", groups,
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            *(os.fspath(a) for a in argv),
        ]  # fmt: skip

    def run(
        self, argv: Sequence[str | os.PathLike[str]], *, timeout: float, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user in :meth:`env` (from its HOME unless ``cwd``); output captured, not checked."""
        return subprocess.run(
            self.command(argv), env=self.env(), cwd=cwd or self.home, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip

    def liveimg(self, *args: str | os.PathLike[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """``python -m liveimg ARGS`` as this user, with this interpreter: what the user would type."""
        return self.run([sys.executable, "-m", "liveimg", *args], timeout=timeout)

    def share(self, path: Path) -> Path:
        """``path`` readable by this user in :attr:`public`, its mode and owner unchanged.

        A hard link when the file is already readable by all and on the same filesystem
        (a link shares the inode, so the mode is the cached file's own, checked first);
        else a copy (reflinked where the filesystem can, holes kept) that only this user can read.
        """
        dest = self.public / path.name
        st = path.stat()
        if st.st_mode & stat.S_IROTH and st.st_dev == self.public.stat().st_dev:
            os.link(path, dest)
        else:
            subprocess.run(["cp", "--reflink=auto", "--sparse=always", "--", path, dest], check=True)
            os.chown(dest, 0, self.gid)
            os.chmod(dest, 0o640)
        return dest

    def processes(self) -> dict[int, str]:
        """This user's live processes now (zombies left out): pid -> command line."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:  # gone meanwhile
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            # Real, effective, saved and filesystem uids (the directory's owner can be root for a
            # process that is not dumpable).  A zombie has ended; reaping it is its parent's business.
            if str(self.uid) not in fields.get("Uid", "").split() or fields.get("State", "").split()[:1] == ["Z"]:
                continue
            found[int(entry.name)] = cmdline or "?"
        return found

    def wait_for_no_processes(self, grace: float = 10.0) -> dict[int, str]:
        """This user's processes still there after ``grace`` seconds (exiting ones get that long)."""
        deadline = time.monotonic() + grace
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def stray_files(self) -> list[Path]:
        """Files of this user in the shared scratch directories (:data:`SHARED_SCRATCH`), outside :attr:`top`."""
        found = []
        for where in SHARED_SCRATCH:
            with contextlib.suppress(OSError):
                found += [p for p in where.iterdir() if p != self.top and p.lstat().st_uid == self.uid]
        return found


def owners(root: Path) -> set[int]:
    """The owners (uids) of ``root`` and of everything below it."""
    found = {root.lstat().st_uid}
    for dirpath, dirnames, filenames in os.walk(root):
        found.update(os.lstat(os.path.join(dirpath, n)).st_uid for n in (*dirnames, *filenames))
    return found


def has_subordinate_ids(uid: int) -> bool:
    """Whether /etc/subuid or /etc/subgid gives ``uid`` a range, or ``uid`` falls in one."""
    names = {str(uid)}
    with contextlib.suppress(KeyError):
        names.add(pwd.getpwuid(uid).pw_name)
    for table in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines():
                fields = line.strip().split(":")
                if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
                    continue
                start, count = int(fields[1]), int(fields[2])
                if fields[0] in names or start <= uid < start + count:
                    return True
    return False


def _free_uid() -> int:
    """A uid (and gid) in :data:`THROWAWAY_UIDS` that nothing on this machine uses."""
    rng = random.SystemRandom()
    for _ in range(100):
        uid = rng.choice(THROWAWAY_UIDS)
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
            continue
        except KeyError:
            pass
        if not has_subordinate_ids(uid) and not UnprivilegedUser(uid, Path("/nonexistent")).processes():
            return uid
    raise RuntimeError(f"no free uid found in {THROWAWAY_UIDS}")


@contextlib.contextmanager
def unprivileged_user(groups: Sequence[int] = (), parent: Path = THROWAWAY_PARENT) -> Iterator[UnprivilegedUser]:
    """A fresh :class:`UnprivilegedUser`; afterwards its processes are killed and its directories removed.

    Needs root (to become the user); it is the caller's business to check that nothing was
    left (:meth:`UnprivilegedUser.wait_for_no_processes`, :meth:`UnprivilegedUser.stray_files`)
    before this cleans up.
    """
    if os.geteuid() != 0:
        raise PermissionError("only root can become a throw-away user")
    uid = _free_uid()
    top = Path(tempfile.mkdtemp(prefix="liveimg-user-", dir=parent))
    try:
        os.chmod(top, 0o711)
        (top / "public").mkdir(mode=0o755)
        user = UnprivilegedUser(uid, top, tuple(groups))
        for private in (user.home, user.tmp):
            private.mkdir(mode=0o700)
            os.chown(private, uid, uid)
        yield user
    finally:
        for pid in UnprivilegedUser(uid, top).processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (another process may take it after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
