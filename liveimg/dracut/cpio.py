"""A reproducible writer of "newc" cpio archives, the format the kernel unpacks as an initramfs.

The format (``man 5 cpio``, the kernel's ``Documentation/driver-api/early-userspace/buffer-format.rst``
and ``init/initramfs.c``): each entry is a 110-byte ASCII header, the path name, then the data::

    c_magic     6  "070701" ("070702" means c_check holds a checksum; we never write it)
    c_ino       8  \\
    c_mode      8   |
    c_uid       8   |
    c_gid       8   |
    c_nlink     8   |  each field: 8 hexadecimal digits (upper or lower case), unsigned 32-bit
    c_mtime     8   |
    c_filesize  8   |  file size; for a symbolic link, the length of its target
    c_devmajor  8   |
    c_devminor  8   |
    c_rdevmajor 8   |  device number of a character or block special file
    c_rdevminor 8   |
    c_namesize  8   |  length of the name including its terminating NUL
    c_check     8  /   0 ("070701")

then the name and a NUL, padded with NULs so that header + name is a multiple of 4 bytes,
then ``c_filesize`` bytes of data (a symbolic link's target, without NUL), padded to a
multiple of 4.  The archive ends with an entry named ``TRAILER!!!`` whose fields are zero
except ``c_nlink`` (1) and ``c_namesize``.

What makes the output reproducible (the same entries give the same bytes, on any machine):
entries are sorted by path, so a directory always precedes its contents (the kernel needs
that: it creates nothing implicitly); inode numbers are 1, 2, 3... in that order; every
mtime is one fixed value (``SOURCE_DATE_EPOCH`` if set, else 0); owners are given, not taken
from a disk; nothing of the writer's host leaks in.  The archive ends right after the trailer,
padded to 4 bytes (GNU cpio pads to 512; the kernel only needs 4, see :mod:`.customize`).

libarchive-c cannot write this reproducibly: its entry API has no way to set ``c_ino`` or
``c_nlink``, so every entry would get inode 0 and link count 0.  Hence this small writer;
tests read its output back with libarchive and with GNU cpio.
"""

from __future__ import annotations

import enum
import io
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from liveimg import reproducible
from liveimg.errors import InvalidOptions

NEWC_MAGIC = b"070701"
NEWC_CRC_MAGIC = b"070702"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
#: Longest path the kernel accepts in an initramfs entry (PATH_MAX, with the NUL).
MAX_NAME = 4096
_MAX_FIELD = 0xFFFFFFFF
_COPY_CHUNK = 1 << 20


class Kind(enum.StrEnum):
    """What an entry is; the values are what ``liveimg initramfs ls`` prints."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"
    SOCKET = "socket"
    HARDLINK = "hardlink"  # only produced by readers: a second name of an earlier file


#: ``st_mode`` file-type bits of each kind.
MODE_BITS: dict[Kind, int] = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.CHAR: stat.S_IFCHR,
    Kind.BLOCK: stat.S_IFBLK,
    Kind.FIFO: stat.S_IFIFO,
    Kind.SOCKET: stat.S_IFSOCK,
}


def normalize_path(path: str) -> str:
    """An archive path as the kernel sees it: relative, no ``.`` or empty components.

    Leading slashes are dropped (``/etc/x`` and ``etc/x`` are the same entry).  ``..``
    components, NUL bytes and paths that name the root itself are refused.
    """
    if "\0" in path:
        raise InvalidOptions(f"cpio path {path!r} contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise InvalidOptions(f"cpio path {path!r} names the root directory; give a file or directory below it")
    if ".." in parts:
        raise InvalidOptions(f"cpio path {path!r} contains '..'")
    normal = "/".join(parts)
    if len(normal.encode()) + 1 > MAX_NAME:
        raise InvalidOptions(f"cpio path {normal[:60]!r}... is longer than {MAX_NAME - 1} bytes")
    return normal


@dataclass(frozen=True)
class Entry:
    """One member of an archive to write.

    ``data`` is the content of a regular file (bytes, or a host file read when the archive
    is written) or the target of a symbolic link; other kinds have none.  ``mode`` holds only
    the permission bits (``0o7777``).
    """

    path: str
    kind: Kind
    mode: int
    data: bytes | Path = b""
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_path(self.path))
        if self.kind is Kind.HARDLINK:
            raise InvalidOptions(f"{self.path}: the cpio writer does not write hard links")
        if not 0 <= self.mode <= 0o7777:
            raise InvalidOptions(f"{self.path}: mode {self.mode:#o} is not a permission mode (0 to 0o7777)")
        for what, value in (("uid", self.uid), ("gid", self.gid), *zip(("major", "minor"), self.rdev, strict=True)):
            if not 0 <= value <= _MAX_FIELD:
                raise InvalidOptions(f"{self.path}: {what} {value} does not fit in a cpio header")
        if self.kind is Kind.SYMLINK and not self.data:
            raise InvalidOptions(f"{self.path}: a symbolic link needs a target")
        if self.kind not in (Kind.FILE, Kind.SYMLINK) and self.data:
            raise InvalidOptions(f"{self.path}: a {self.kind} entry has no data")
        if isinstance(self.data, Path) and self.kind is not Kind.FILE:
            raise InvalidOptions(f"{self.path}: only a regular file can take its data from a host file")

    @property
    def size(self) -> int:
        """Bytes of data (``c_filesize``); a host file is measured now."""
        if isinstance(self.data, Path):
            return self.data.stat().st_size
        return len(self.data)


def file(path: str, data: bytes | Path, mode: int = 0o644, *, uid: int = 0, gid: int = 0) -> Entry:
    """A regular file with ``data`` (bytes, or a host file copied when the archive is written)."""
    return Entry(path, Kind.FILE, mode, data, uid, gid)


def directory(path: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, Kind.DIR, mode, b"", uid, gid)


def symlink(path: str, target: str, *, uid: int = 0, gid: int = 0) -> Entry:
    if "\0" in target:
        raise InvalidOptions(f"{path}: symbolic link target contains a NUL byte")
    return Entry(path, Kind.SYMLINK, 0o777, target.encode(), uid, gid)


def source_date_epoch() -> int:
    """The fixed mtime of reproducible archives: ``$SOURCE_DATE_EPOCH``, else 0."""
    return reproducible.source_date_epoch(limit=_MAX_FIELD, what="a cpio header") or 0


def header(
    *,
    name: bytes,
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    nlink: int,
    mtime: int,
    filesize: int,
    rdev: tuple[int, int] = (0, 0),
) -> bytes:
    """One newc header, followed by the NUL-terminated name and its padding."""
    fields = (ino, mode, uid, gid, nlink, mtime, filesize, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    head = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` plus a ``0755`` root-owned directory for every parent that is missing."""
    result = list(entries)
    have = {e.name for e in result}
    for e in list(result):
        parent = posixpath.dirname(e.name)
        while parent and parent not in have:
            result.append(directory(parent))
            have.add(parent)
            parent = posixpath.dirname(parent)
    return result


def write_newc(
    entries: Iterable[Entry],
    out: BinaryIO,
    *,
    mtime: int | None = None,
    parents: bool = True,
    first_ino: int = 1,
    trailer: bool = True,
) -> int:
    """Write a reproducible newc archive of ``entries`` to ``out``; returns the bytes written.

    With ``parents`` (the default) missing parent directories are added.  Two entries with
    the same path are an error, as is a path below something that is not a directory.
    ``first_ino`` and ``trailer=False`` serve to continue an existing archive: write its
    entries in place of its trailer, numbered after its last inode.
    """
    items = with_parents(entries) if parents else list(entries)
    items.sort(key=lambda e: e.name.encode())
    when = source_date_epoch() if mtime is None else mtime
    if not 0 <= when <= _MAX_FIELD:
        raise InvalidOptions(f"mtime {when} does not fit in a cpio header")
    kinds: dict[str, Kind] = {}
    written = 0
    for ino, e in enumerate(items, start=first_ino):
        if e.name in kinds:
            raise InvalidOptions(f"cpio path {e.name!r} is given twice")
        parent = posixpath.dirname(e.name)
        if parent and kinds.get(parent, Kind.DIR) is not Kind.DIR:
            raise InvalidOptions(f"cpio path {e.name!r} is below {parent!r}, which is a {kinds[parent]}")
        kinds[e.name] = e.kind
        size = e.size
        if size > _MAX_FIELD:
            raise InvalidOptions(f"{e.name}: {size} bytes is too large for a cpio entry (at most 4 GiB - 1)")
        head = header(
            name=e.name.encode(),
            ino=ino,
            mode=MODE_BITS[e.kind] | e.mode,
            uid=e.uid,
            gid=e.gid,
            nlink=2 if e.kind is Kind.DIR else 1,
            mtime=when,
            filesize=size,
            rdev=e.rdev,
        )
        out.write(head)
        written += len(head)
        if isinstance(e.data, Path):
            copied = _copy_file(e.data, out, size)
            if copied != size:
                raise InvalidOptions(f"{e.data} changed size while it was archived ({size} -> {copied} bytes)")
        else:
            out.write(e.data)
        written += size
        pad = -size % 4
        out.write(b"\0" * pad)
        written += pad
    if not trailer:
        return written
    end = header(name=TRAILER.encode(), ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, filesize=0)
    out.write(end)
    return written + len(end)


def _copy_file(path: Path, out: BinaryIO, size: int) -> int:
    copied = 0
    with open(path, "rb") as src:
        while copied < size:
            chunk = src.read(min(_COPY_CHUNK, size - copied))
            if not chunk:
                break
            out.write(chunk)
            copied += len(chunk)
        if src.read(1):
            copied += 1
    return copied


def newc_bytes(entries: Iterable[Entry], *, mtime: int | None = None, parents: bool = True) -> bytes:
    """:func:`write_newc` into memory."""
    buf = io.BytesIO()
    write_newc(entries, buf, mtime=mtime, parents=parents)
    return buf.getvalue()
