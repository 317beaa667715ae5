"""Files written beside their destination: the one atomic write, and the packers' staged input.

Every writer of an output (the squashfs writer and the mksquashfs backend, mkfs.erofs, the
initramfs compressor and appender, the PXE configuration files, the rootfs image) writes it
through :class:`AtomicOutput`: a new file under a unique name in the destination's own
directory, renamed over the destination once complete, removed on any failure (Ctrl-C
included).  A reader therefore sees the old file or the whole new one, never a part.

mksquashfs and mkfs.erofs take a directory; the live image holds one file,
``LiveOS/rootfs.img``.  :func:`staged_file` builds that tree beside the destination with a
hard link to the file (a reflink or sparse copy where linking fails), so no data is copied,
and with reproducible modes and times on the directories.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from liveimg import run as runner
from liveimg.errors import HostError, InternalError, InvalidOptions
from liveimg.outdir import RENAME_NOREPLACE, renameat2

log = logging.getLogger(__name__)

#: Time limit for a sparse copy where a hard link is impossible (another filesystem).
COPY_TIMEOUT = 3600.0
#: Tries for a free temporary name (each name has 32 random bits: a clash is a freak).
_NAME_TRIES = 100
#: fsync errors that only say the filesystem has nothing to flush that way.
_NO_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})
#: renameat2 errors that mean the kernel or the filesystem lacks RENAME_NOREPLACE.
_NO_RENAMEAT2 = frozenset({errno.EINVAL, errno.ENOSYS})


def check_arcname(arcname: str) -> tuple[str, ...]:
    """The parts of a relative name like ``LiveOS/rootfs.img``; :class:`InvalidOptions` otherwise."""
    parts = Path(arcname).parts
    if not parts or Path(arcname).is_absolute() or any(p in ("..", ".") for p in parts):
        raise InvalidOptions(f"bad name {arcname!r} for the packed file: give a relative path like LiveOS/rootfs.img")
    return parts


def source_stat(file: Path, arcname: str) -> os.stat_result:
    """Check the file to pack and the name it gets; its ``stat``."""
    check_arcname(arcname)
    if not file.is_file():
        raise InvalidOptions(f"{file} is not a regular file")
    return file.stat()


def temp_beside(dest: Path, suffix: str = ".tmp") -> Path:
    """A new empty file beside ``dest`` (same filesystem, so it can be renamed over it); the caller removes it.

    Its name is ``.NAME.XXXXXXXX`` + ``suffix``, made with ``O_EXCL`` (never an existing file or
    a link someone placed there), with mode 0666 less the umask: what ``open(dest, "w")`` would
    give ``dest``.
    """
    parent = dest.parent
    if not parent.is_dir():
        raise HostError(f"cannot write {dest}: directory {parent} does not exist")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_NAME_TRIES):
        path = parent / f".{dest.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, flags, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise HostError(f"cannot write {dest}: {exc.strerror}") from exc
        return path
    raise HostError(f"cannot write {dest}: no free temporary name in {parent}")


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_FSYNC:
            raise
    finally:
        os.close(fd)


class AtomicOutput:
    """``dest`` written whole or not at all: a temporary file beside it, renamed over it at the end.

    >>> with AtomicOutput(dest) as tmp:       # doctest: +SKIP
    ...     tmp.write_bytes(data)             # or a tool writes the file at ``tmp``

    The temporary file is made by :func:`temp_beside` (unique name, ``O_EXCL``, the mode a new
    file gets).  When the block ends normally it becomes ``dest``: with ``os.replace``, or with
    ``overwrite=False`` through ``renameat2(RENAME_NOREPLACE)`` (a hard link and an unlink where
    the filesystem lacks it), which refuses an existing ``dest`` with a :class:`HostError` and
    leaves it as it is.  When the block raises anything (``KeyboardInterrupt`` and other
    :class:`BaseException` included) the temporary file is removed and ``dest`` is untouched.
    Only a process killed outright (SIGKILL, power loss) leaves a ``.NAME.XXXXXXXX.tmp`` behind.

    fsync policy: with ``durable`` (the default) the file's data is flushed before the rename
    and the directory after it, so that after a crash ``dest`` is the old file or the complete
    new one (never a renamed but empty file).  ``durable=False`` is for work files that a crash
    makes worthless anyway.  Failures of the helper's own steps (creating, flushing, renaming)
    are :class:`HostError` naming ``dest``; what the block raises passes through as it is.

    Besides the ``with`` form, :meth:`create`, :meth:`commit` and :meth:`discard` serve a
    writer whose output outlives one block (:class:`~liveimg.squashfs.writer.SquashfsWriter`).
    """

    def __init__(self, dest: str | os.PathLike[str], *, overwrite: bool = True, durable: bool = True) -> None:
        self.dest = Path(dest)
        self.overwrite = overwrite
        self.durable = durable
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        """The temporary file (made by :meth:`create`)."""
        if self._path is None:
            raise InternalError(f"no temporary file for {self.dest} yet")
        return self._path

    def create(self) -> Path:
        """Make the temporary file (once) and return it."""
        if self._path is None:
            self._path = temp_beside(self.dest)
        return self._path

    def discard(self) -> None:
        """Remove the temporary file, if any; ``dest`` stays as it was."""
        path, self._path = self._path, None
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def commit(self) -> None:
        """Put the temporary file in place as ``dest`` (see the class); on failure it is removed."""
        tmp = self.path
        try:
            if self.durable:
                _fsync(tmp, 0)
            if self.overwrite:
                os.replace(tmp, self.dest)
            else:
                self._rename_noreplace(tmp)
            self._path = None
            if self.durable:
                _fsync(self.dest.parent, os.O_DIRECTORY)
        except FileExistsError as exc:
            self.discard()
            raise HostError(f"{self.dest} already exists: it was left as it is") from exc
        except OSError as exc:
            self.discard()
            raise self.error(exc) from exc
        except BaseException:
            self.discard()
            raise

    def error(self, exc: OSError) -> HostError:
        """The :class:`HostError` for a failure to write ``dest``: a full disk said as such."""
        if exc.errno == errno.ENOSPC:
            return HostError(f"no space left on the device while writing {self.dest}", hint="free some space")
        return HostError(f"cannot write {self.dest}: {exc.strerror or exc}")

    def _rename_noreplace(self, tmp: Path) -> None:
        try:
            renameat2(tmp, self.dest, RENAME_NOREPLACE)
        except OSError as exc:
            if exc.errno not in _NO_RENAMEAT2:
                raise
            os.link(tmp, self.dest)  # EEXIST as renameat2 says it
            tmp.unlink()

    def __enter__(self) -> Path:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _link_or_copy(src: Path, target: Path) -> None:
    try:
        os.link(src, target)
        return
    except OSError as exc:
        log.debug("hard link %s -> %s failed (%s); copying", src, target, exc)
    runner.run(["cp", "--reflink=auto", "--sparse=always", "--preserve=mode,timestamps", src, target],
               timeout=COPY_TIMEOUT)  # fmt: skip


@contextlib.contextmanager
def staged_file(file: Path, beside: Path, arcname: str, mtime: int) -> Iterator[Path]:
    """A temporary directory next to ``beside`` holding ``file`` as ``arcname``; removed on exit.

    The directories get mode 0755 and ``mtime`` (not mkdtemp's 0700 and "now").  The file is
    a hard link to the caller's, whose own mode and times are not ours to change.
    """
    parts = check_arcname(arcname)
    if not file.is_file():
        raise InvalidOptions(f"{file} is not a regular file")
    try:
        root = Path(tempfile.mkdtemp(prefix=f".{beside.name}.stage.", dir=beside.parent))
    except OSError as exc:
        raise HostError(f"cannot create a staging directory beside {beside}: {exc.strerror}") from exc
    try:
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(file, target)
        for path in [target.parent, *(root / p for p in target.parent.relative_to(root).parents)]:
            path.chmod(0o755)
            os.utime(path, (mtime, mtime))
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
