"""OUTDIR as a transaction: built beside it, swapped in with one atomic step, one build at a time.

A build of OUTDIR = ``P/NAME`` works in two entries beside it, in the same directory and so
on the same filesystem:

``P/.NAME.liveimg.lock``
    a lock file, ``flock``\\ ed for the build's whole life and holding the build's pid.  A
    second build of the same OUTDIR finds it locked and refuses at once
    (:class:`~liveimg.errors.OutdirBusy`, naming the pid): a CI job should fail fast rather
    than hang behind another.  The holder unlinks the file before it unlocks it; a newcomer
    that locked a file unlinked meanwhile sees that the path no longer names its inode, and
    tries again -- so the file is never left behind by a build that ends, and never shared.

``P/.NAME.liveimg/``
    the staging directory: ``out/`` becomes the new OUTDIR, ``work/`` holds the temporary
    files (with ``--workdir``, a ``liveimg-work-*`` directory there, whose path the file
    ``workdir`` notes).  Only the lock's holder touches it, so a build that takes the lock
    and finds one knows that the build which made it died (SIGKILL, a power cut): it
    removes it (and the noted work directory), saying so on one log line, before it starts.

The swap is one ``renameat2(2)``: ``RENAME_EXCHANGE`` swaps ``out/`` with an existing OUTDIR
(``--force``), so that there is no moment without an OUTDIR, and the old tree -- now in the
staging directory -- is removed only after; ``RENAME_NOREPLACE`` puts a new OUTDIR in place
and fails rather than replace one that appeared meanwhile.  Where the filesystem lacks these
flags (EINVAL: some network and FUSE filesystems; ENOSYS: a kernel or C library without
renameat2) two renames do it: OUTDIR aside into the staging directory as ``previous``,
``out/`` in its place, and ``previous`` back if that fails.  A build killed between the two
leaves ``previous`` and no OUTDIR: the next build puts it back before anything else.

Checked before anything is built: OUTDIR exists only with ``--force``, and then is a
directory and not a mount point (a mount point cannot be renamed: give a directory inside
it); ``--workdir`` is not inside OUTDIR (it would be swapped away with it).  OUTDIR's missing
parents are made as ``mkdir -p`` makes them, and removed again if the build fails; so are
the work directory's.

One-file temporary outputs beside their destination are :mod:`liveimg.staging`'s business.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from liveimg import cancel
from liveimg.errors import Cancelled, HostError, InvalidImage, InvalidOptions, OutdirBusy, ToolError

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1  # <linux/fs.h>
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
#: renameat2's system call number, for a C library without the wrapper (glibc before 2.28).
_SYSCALL_NUMBERS = {"x86_64": 316, "aarch64": 276, "riscv64": 276, "ppc64le": 357, "s390x": 347}
#: The name of a work directory made in ``--workdir``, and the staging file that says where it is.
WORK_PREFIX = "liveimg-work-"
WORK_NOTE = "workdir"
#: What renameat2 answers where the filesystem or the kernel lacks it.
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS})


def _load_renameat2() -> Callable[[bytes, bytes, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    wrapper = getattr(libc, "renameat2", None)
    if wrapper is not None:
        wrapper.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        wrapper.restype = ctypes.c_int
        return lambda src, dst, flags: int(wrapper(_AT_FDCWD, src, _AT_FDCWD, dst, flags))
    number = _SYSCALL_NUMBERS.get(platform.machine())
    syscall = getattr(libc, "syscall", None)
    if number is None or syscall is None:
        return None
    syscall.restype = ctypes.c_long
    return lambda src, dst, flags: int(
        syscall(ctypes.c_long(number), _AT_FDCWD, src, _AT_FDCWD, dst, ctypes.c_uint(flags))
    )


_renameat2 = _load_renameat2()


def renameat2(src: Path, dst: Path, flags: int) -> None:
    """``renameat2(2)`` with ``flags``; an :class:`OSError` as ``os.rename`` raises (ENOSYS where there is none)."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), os.fspath(src), None, os.fspath(dst))
    if _renameat2(os.fsencode(src), os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fspath(src), None, os.fspath(dst))


class OutdirLock:
    """``path`` flocked by this process until :meth:`release`, which removes it.

    ``previous_pid`` is what the file held before we wrote our pid: the pid of a build
    that died holding it, or "".
    """

    def __init__(self, path: Path, outdir: Path) -> None:
        self.path = path
        while True:
            fd = _open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"another liveimg build (pid {holder})" if holder else "another liveimg build"
                raise OutdirBusy(
                    f"{who} is writing {outdir}", hint="wait for it to finish, or choose another OUTDIR"
                ) from None
            except OSError as exc:  # a filesystem without flock (some network ones): build unguarded
                log.warning("cannot lock %s (%s): a second build of %s would not be refused", path, exc, outdir)
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder removed it between our open and our lock: try the new one
        self.fd = fd
        self.previous_pid = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Remove the file, then unlock it (in this order: see the module's docstring)."""
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except PermissionError as exc:
        raise HostError(f"cannot write to {path.parent}: permission denied") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HostError(f"{path} is a symbolic link, not liveimg's lock file", hint="remove it") from exc
        raise HostError(f"cannot write to {path.parent}: {exc.strerror}") from exc


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def is_mount_point(path: Path) -> bool:
    """Whether ``path`` is a mount point, bind mounts of the same filesystem included."""
    if os.path.ismount(path):
        return True
    real = os.path.realpath(path)
    try:
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    # mountinfo(5): the fifth field is the mount point, with space, tab, newline and \ as octal escapes.
    for line in table.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == real:
            return True
    return False


def _unescape(field: str) -> str:
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def check_outdir(outdir: Path, *, force: bool) -> None:
    """Refuse an OUTDIR that cannot be replaced, before anything is built."""
    if not os.path.lexists(outdir):
        return
    if outdir.is_dir() and not outdir.is_symlink() and is_mount_point(outdir):
        raise InvalidOptions(
            f"{outdir} is a mount point: liveimg replaces OUTDIR with a rename, which a mount point cannot take",
            hint=f"give a directory inside it, e.g. -o {outdir / 'live'}",
        )
    if not force:
        raise InvalidOptions(f"{outdir} already exists", hint="use --force to replace it")
    if not outdir.is_dir() or outdir.is_symlink():
        raise InvalidOptions(f"{outdir} exists and is not a directory")


def check_workdir(workdir: Path, outdir: Path) -> None:
    """Refuse a work directory inside OUTDIR (or its staging directory): the build replaces them."""
    work = Path(os.path.realpath(workdir))
    for inside in (outdir, outdir.with_name(f".{outdir.name}.liveimg")):
        if work.is_relative_to(os.path.realpath(inside)):
            raise InvalidOptions(
                f"--workdir {workdir} is inside OUTDIR {outdir}, which the build replaces",
                hint="give a --workdir outside it",
            )


class OutdirTransaction:
    """A build of ``outdir``: its lock, its staging directory, its swap (see the module's docstring).

    ``out`` is the directory that becomes OUTDIR on :meth:`commit`; ``work`` is where the
    temporary files go.  :meth:`close` ends it either way: it removes the staging directory
    (and the old OUTDIR after a swap), the lock, and -- unless committed -- the parents it
    made.  ``replaced`` says whether the commit replaced an existing OUTDIR.
    """

    def __init__(
        self, outdir: Path, *, force: bool = False, workdir: Path | None = None, keep_workdir: bool = False
    ) -> None:
        self.outdir = Path(outdir).absolute()
        if self.outdir.name in ("", ".", ".."):
            raise InvalidOptions(f"{outdir} cannot be OUTDIR: give the path of a directory to create")
        self.parent = self.outdir.parent
        self.staging_dir = self.parent / f".{self.outdir.name}.liveimg"
        self.lock_path = self.parent / f".{self.outdir.name}.liveimg.lock"
        self.force = force
        self.workdir = workdir
        self.keep_workdir = keep_workdir
        self.committed = False
        self.replaced = False
        self.created_parents: list[Path] = []
        self.created_work_parents: list[Path] = []
        check_outdir(self.outdir, force=force)
        if workdir is not None:
            check_workdir(workdir, self.outdir)
        with cancel.deferred():  # a signal now would leave a lock held by a live process
            self._open()

    def _open(self) -> None:
        self.created_parents = make_parents(self.parent)
        try:
            self._lock = OutdirLock(self.lock_path, self.outdir)
            try:
                self._recover()
                check_outdir(self.outdir, force=self.force)  # again, under the lock
                self._make_staging()
            except BaseException:
                self._lock.release()
                raise
        except BaseException:
            remove_made(self.created_parents)
            raise

    def _recover(self) -> None:
        """Clean up after a build of this OUTDIR that died: put OUTDIR back, remove its staging."""
        staging = self.staging_dir
        if not os.path.lexists(staging):
            return
        who = f"a liveimg build (pid {self._lock.previous_pid})" if self._lock.previous_pid else "a liveimg build"
        previous = staging / "previous"
        if previous.is_dir() and not previous.is_symlink() and not os.path.lexists(self.outdir):
            try:
                previous.rename(self.outdir)
            except OSError as exc:
                raise HostError(
                    f"{who} was killed while replacing {self.outdir}, whose previous content is in {previous}, "
                    f"and it cannot be moved back: {exc.strerror}",
                    hint=f"move it back by hand: mv {previous} {self.outdir}",
                ) from exc
            log.warning("put %s back: %s was killed while replacing it", self.outdir, who)
        removed = [staging]
        work = _noted_work(staging / WORK_NOTE)
        if work is not None:
            _remove_tree(work, what=f"{work}, left by {who} that did not finish")
            removed.append(work)
        _remove_tree(staging, what=f"{staging}, left by {who} that did not finish")
        log.warning("removed %s, left by %s that did not finish", " and ".join(map(str, removed)), who)

    def _make_staging(self) -> None:
        try:
            os.mkdir(self.staging_dir, 0o700)
        except PermissionError as exc:
            raise HostError(f"cannot write to {self.parent}: permission denied") from exc
        except OSError as exc:
            raise HostError(f"cannot write to {self.parent}: {exc.strerror}") from exc
        try:
            self.out = self.staging_dir / "out"
            self.out.mkdir()
            if self.workdir is None:
                self.work = self.staging_dir / "work"
                self.work.mkdir()
                return
            self.created_work_parents = make_parents(self.workdir)
            try:
                self.work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=self.workdir)).absolute()
                # Where it is, for the next build if this one dies: it removes it with the staging directory.
                (self.staging_dir / WORK_NOTE).write_text(f"{self.work}\n")
            except PermissionError as exc:
                raise HostError(f"cannot write to {self.workdir}: permission denied") from exc
            except OSError as exc:
                raise HostError(f"cannot write to {self.workdir}: {exc.strerror}") from exc
        except BaseException:
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            remove_made(self.created_work_parents)
            raise

    # --- the stages -------------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run a stage of the build: a full disk under it becomes one :class:`HostError`.

        The error names the directory the user chose (OUTDIR's, or ``--workdir``) and the stage,
        whichever module ran out of space and however it said so: an ``OSError`` ENOSPC or
        EDQUOT (bare, or the cause of a stage's own error), or a tool (a :class:`ToolError`, or
        an :class:`InvalidImage` made from one) that failed with "No space left on device", or
        failed while a filesystem of the build is (nearly) full -- rather than blame the input
        image.  Other errors, a stage's own space check among them, pass unchanged.  A
        libguestfs failure that a stage let escape as a bare ``RuntimeError`` becomes a
        :class:`ToolError` naming the stage.
        """
        try:
            yield
        except Cancelled:
            raise
        except (OSError, ToolError, InvalidImage) as exc:  # HostError is an OSError
            place = self._full_place(exc)
            if place is None:
                raise
            raise HostError(
                f"no space left on device in {place} during the {name} stage", hint=self._hint(place)
            ) from exc
        except RuntimeError as exc:
            if not _from_libguestfs(exc):
                raise
            raise ToolError(("libguestfs",), None, message=f"libguestfs failed during the {name} stage: {exc}") from exc

    def _places(self) -> list[Path]:
        """The directories the user chose where the build writes: OUTDIR's, and ``--workdir``."""
        return [self.parent] if self.workdir is None else [self.parent, Path(self.workdir).absolute()]

    def _hint(self, place: Path) -> str:
        if self.workdir is None:
            return "free space there, or build elsewhere: another OUTDIR, or --workdir for the temporary files"
        if place == self.parent:
            return "free space there or choose another OUTDIR"
        return "free space there or choose another --workdir"

    def _full_place(self, exc: BaseException) -> Path | None:
        """Where the build ran out of space, if that is why ``exc`` happened."""
        places = self._places()
        for cause in _chain(exc):
            if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
                named = cause.filename if isinstance(cause.filename, str | bytes) else None
                for place in sorted(places, key=lambda place: len(place.parts), reverse=True):  # innermost first
                    if named is not None and Path(os.fsdecode(named)).absolute().is_relative_to(place):
                        return place
                return _fullest(places)
        text = " ".join(f"{cause} {cause.stderr if isinstance(cause, ToolError) else ''}" for cause in _chain(exc))
        if any(phrase in text for phrase in _NO_SPACE):
            return _fullest(places)
        if isinstance(exc, ToolError | InvalidImage):  # not HostError: it would have said so
            return next((place for place in places if _nearly_full(place)), None)
        return None

    # --- the end ---------------------------------------------------------------------------

    def commit(self) -> None:
        """Put ``out`` in place as OUTDIR: one atomic step; an existing OUTDIR (``--force``) is swapped out."""
        with cancel.deferred():  # the swap and what records it are one step for a signal too
            self._swap()
            self.committed = True

    def _swap(self) -> None:
        if self.force:
            try:
                renameat2(self.out, self.outdir, RENAME_EXCHANGE)
                self.replaced = True
                return
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:
                    self._two_renames()
                    return
                if exc.errno != errno.ENOENT:  # ENOENT: there is no OUTDIR (any more) to exchange with
                    raise self._cannot_commit(exc) from exc
        try:
            renameat2(self.out, self.outdir, RENAME_NOREPLACE)
            return
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self._two_renames()
                return
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise self._cannot_commit(exc) from exc
        if not self.force:
            raise HostError(
                f"{self.outdir} appeared while the build ran (not made by liveimg): it was left as it is, and the "
                "build discarded",
                hint="use --force to replace it",
            )
        try:  # --force, and OUTDIR appeared meanwhile: replace it as asked
            renameat2(self.out, self.outdir, RENAME_EXCHANGE)
            self.replaced = True
        except OSError as exc:
            raise self._cannot_commit(exc) from exc

    def _two_renames(self) -> None:
        """The swap where renameat2's flags are missing: OUTDIR aside as ``previous``, ``out`` in, or back."""
        log.debug("renameat2 flags unsupported under %s: two renames", self.parent)
        if not os.path.lexists(self.outdir):
            try:
                os.rename(self.out, self.outdir)  # replaces only an empty directory made meanwhile
            except OSError as exc:
                raise self._cannot_commit(exc) from exc
            return
        if not self.force:
            raise HostError(
                f"{self.outdir} appeared while the build ran (not made by liveimg): it was left as it is, and the "
                "build discarded",
                hint="use --force to replace it",
            )
        previous = self.staging_dir / "previous"
        try:
            os.rename(self.outdir, previous)
        except OSError as exc:
            raise self._cannot_commit(exc) from exc
        try:
            os.rename(self.out, self.outdir)
        except OSError as exc:
            os.rename(previous, self.outdir)  # put it back
            raise self._cannot_commit(exc) from exc
        self.replaced = True

    def _cannot_commit(self, exc: OSError) -> HostError:
        return HostError(f"cannot put the new {self.outdir} in place: {exc.strerror}")

    def close(self) -> None:
        """End the transaction, committed or not: remove the staging directory, the lock, and unused parents."""
        with cancel.deferred():  # the cleanup is not cut short by a signal
            try:
                self._remove_work()
                self._remove_staging()
            finally:
                self._lock.release()
                if not self.committed:
                    remove_made(self.created_work_parents)
                    remove_made(self.created_parents)

    def _remove_work(self) -> None:
        if not self.keep_workdir:
            if self.workdir is not None:
                shutil.rmtree(self.work, ignore_errors=True)
            return
        if self.workdir is None and self.work.exists():  # inside the staging directory: keep it beside OUTDIR
            kept = Path(tempfile.mkdtemp(prefix=f".{self.outdir.name}.liveimg-work-", dir=self.parent))
            os.rename(self.work, kept)  # over the empty directory just made
            self.work = kept
        log.warning("work files kept in %s", self.work)

    def _remove_staging(self) -> None:
        previous = self.staging_dir / "previous"
        if previous.is_dir() and not os.path.lexists(self.outdir):  # a failed two-rename swap that could not undo
            try:
                previous.rename(self.outdir)
            except OSError as exc:
                log.error("%s's previous content is in %s (%s): move it back by hand", self.outdir, previous, exc)
                return
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        if os.path.lexists(self.staging_dir):
            log.warning("could not remove all of %s: the next build of %s removes it", self.staging_dir, self.outdir)


#: What strerror(3) says for ENOSPC and EDQUOT (the tools run with LC_ALL=C.UTF-8).
_NO_SPACE = ("No space left on device", "Disk quota exceeded")
#: Less free space than this (bytes) on a build's filesystem: a tool that failed there may have been short of it.
NEARLY_FULL = 16 << 20


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _available(path: Path) -> tuple[int, int]:
    """Free bytes for us at ``path``, and the filesystem's size."""
    try:
        st = os.statvfs(path)
    except OSError:
        return (1 << 62, 1 << 62)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _nearly_full(path: Path) -> bool:
    return _available(path)[0] < NEARLY_FULL


def _fullest(places: list[Path]) -> Path:
    return min(places, key=lambda place: _available(place)[0])


def _from_libguestfs(exc: RuntimeError) -> bool:
    """Whether ``exc`` was raised by the libguestfs bindings (their module is ``guestfs``)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and os.path.basename(tb.tb_frame.f_code.co_filename) == "guestfs.py"


def _noted_work(note: Path) -> Path | None:
    """The work directory a dead build noted in its staging directory, if it is one liveimg made."""
    try:
        work = Path(note.read_text().strip())
    except (OSError, UnicodeDecodeError):
        return None
    if work.is_absolute() and work.name.startswith(WORK_PREFIX) and work.is_dir() and not work.is_symlink():
        return work
    return None


def _remove_tree(path: Path, *, what: str) -> None:
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except OSError as exc:
        raise HostError(f"cannot remove {what}: {exc.strerror}", hint=f"remove it by hand: rm -rf {path}") from exc


def make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents (``mkdir -p``); return those created, outermost first."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        raise InvalidOptions(f"cannot create {directory}: {probe} is a dangling symbolic link")
    if not probe.is_dir():
        raise InvalidOptions(f"cannot create {directory}: {probe} is not a directory")
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to remove
        except OSError as exc:
            remove_made(created)
            reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror
            raise HostError(f"cannot create {path}: {reason}") from exc
        created.append(path)
    return created


def remove_made(created: list[Path]) -> None:
    """Remove the directories :func:`make_parents` made, innermost first, where they are still empty."""
    for directory in reversed(created):
        with contextlib.suppress(OSError):  # not empty: someone else put something there
            directory.rmdir()
