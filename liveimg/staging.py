"""Where the packers (mksquashfs, mkfs.erofs) read and write beside their destination.

mksquashfs and mkfs.erofs take a directory; the live image holds one file,
``LiveOS/rootfs.img``.  :func:`staged_file` builds that tree beside the destination with a
hard link to the file (a reflink or sparse copy where linking fails), so no data is copied,
and with reproducible modes and times on the directories.  :func:`temp_output` is where the
image is written until it is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from liveimg import run as runner
from liveimg.errors import HostError, InvalidOptions

log = logging.getLogger(__name__)

#: Time limit for a sparse copy where a hard link is impossible (another filesystem).
COPY_TIMEOUT = 3600.0


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


def temp_beside(dest: Path) -> Path:
    """A new empty file beside ``dest`` (same filesystem, so it can be renamed over it); the caller removes it."""
    parent = dest.parent
    if not parent.is_dir():
        raise HostError(f"cannot write {dest}: directory {parent} does not exist")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise HostError(f"cannot write {dest}: {exc.strerror}") from exc
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def temp_output(dest: Path) -> Iterator[Path]:
    """A temporary path beside ``dest``; renamed over ``dest`` on success, removed on failure."""
    tmp = temp_beside(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
