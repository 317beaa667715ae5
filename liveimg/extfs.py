"""An ext2/3/4 filesystem of a raw image read on the host, in pure Python, without mounting it.

A :class:`~liveimg.fsview.ReadOnlyFS` (:class:`ExtFS`) for :class:`~liveimg.fsview.GuestTree`,
and a :class:`~liveimg.tree.TreeSource` (:class:`ExtTree`) of the whole filesystem with every
piece of metadata (the boot partition merged into rootfs.img).  Inodes come from
``dissect.extfs`` (pure Python, memory-safe); what it would do unbounded on hostile bytes is
done here instead, with limits: the extent tree (depth, fan-out, blocks inside the
filesystem, logical order), directory sizes, symlink lengths, the number of entries.

It reads only what it reads exactly as the kernel would.  A filesystem with a feature it does
not know or handle (a journal to replay, inline data, encryption, casefolding, ``meta_bg``,
bigalloc, xattr inodes) is :class:`ExtRefused`, and so is anything that breaks a limit or that
dissect cannot parse: the caller then reads the image with the libguestfs appliance.
"""

from __future__ import annotations

import io
import os
import stat as statmod
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveimg.errors import InvalidImage
from liveimg.fsview import FileStat
from liveimg.tree import Entry, HardLinks

#: Largest directory read (bytes of its entries).
MAX_DIR_BYTES = 32 << 20
#: Largest symlink target read.
MAX_LINK = 4096
#: Most extents of one file.
MAX_EXTENTS = 1 << 18
#: Most extent-tree blocks read for one file (each holds up to 340 entries with 4 KiB blocks).
MAX_EXTENT_BLOCKS = 1 << 14
#: Most entries of one directory.
MAX_DIR_ENTRIES = 1 << 17
#: ext4's own extent-tree depth limit.
MAX_DEPTH = 5
#: Largest file mapped through (ext2/3) indirect blocks: the block list is built in memory.
MAX_INDIRECT_FILE = 1 << 30
#: Most entries :meth:`ExtTree.entries` lists.
MAX_ENTRIES = 1 << 20

_MAGIC = 0xEF53
_HAS_JOURNAL = 0x4
_INCOMPAT_FILETYPE, _INCOMPAT_RECOVER, _INCOMPAT_JOURNAL_DEV, _INCOMPAT_META_BG = 0x2, 0x4, 0x8, 0x10
#: Incompatible features this reader handles: filetype, extents, 64bit, mmp, flex_bg, csum_seed, largedir.
_INCOMPAT_OK = 0x2 | 0x40 | 0x80 | 0x100 | 0x200 | 0x2000 | 0x4000
_RO_COMPAT_BIGALLOC = 0x200
_TEST_FILESYS = 0x4
_EXTENTS_FL = 0x80000
_INLINE_DATA_FL = 0x10000000
_ACL_INDEXES = (2, 3)  # system.posix_acl_access, system.posix_acl_default


class ExtRefused(Exception):  # a verdict: the appliance reads this filesystem instead
    """This reader does not read the filesystem (or one of its files) exactly; the text says why."""


@dataclass(frozen=True)
class ExtSuperblock:
    """What a superblock says, as ``blkid -p`` would: ``fstype`` ext2, ext3 or ext4; label, UUID."""

    fstype: str
    label: str | None
    uuid: str | None
    block_size: int
    inode_size: int
    incompat: int
    ro_compat: int


def probe_superblock(data: bytes) -> ExtSuperblock | None:
    """The ext superblock in ``data`` (a filesystem's first 2 KiB), or None when there is none.

    The type is decided as libblkid decides it: ext4 when the filesystem has a feature ext3 does
    not know, else ext3 with a journal, else ext2.  :class:`ExtRefused` for what blkid would call
    something else (an external journal, an ``ext4dev`` test filesystem) or nonsense geometry.
    """
    if len(data) < 2048 or struct.unpack_from("<H", data, 1024 + 56)[0] != _MAGIC:
        return None
    sb = data[1024:2048]
    inodes, _blocks, _r, _free_b, _free_i, _first, log_block, log_cluster, per_group, _c, inodes_per_group = (
        struct.unpack_from("<11I", sb, 0)
    )
    (compat, incompat, ro_compat) = struct.unpack_from("<III", sb, 92)
    (inode_size,) = struct.unpack_from("<H", sb, 88)
    (flags,) = struct.unpack_from("<I", sb, 352)
    if incompat & _INCOMPAT_JOURNAL_DEV:
        raise ExtRefused("an external ext journal device, not a filesystem")
    ext3_unknown = (ro_compat & ~0x7) or (incompat & ~(_INCOMPAT_FILETYPE | _INCOMPAT_RECOVER | _INCOMPAT_META_BG))
    if ext3_unknown:
        if flags & _TEST_FILESYS:
            raise ExtRefused("an ext4dev (test) filesystem")
        fstype = "ext4"
    else:
        fstype = "ext3" if compat & _HAS_JOURNAL else "ext2"
    if log_block > 6 or log_block != log_cluster or not per_group or not inodes_per_group or inodes < 10:
        raise ExtRefused("its superblock's geometry is not an ext filesystem's")
    label = sb[120:136].split(b"\0", 1)[0].decode("utf-8", "replace")
    raw_uuid = sb[104:120]
    return ExtSuperblock(
        fstype=fstype,
        label=label or None,
        uuid=_uuid(raw_uuid) if raw_uuid.strip(b"\0") else None,
        block_size=1024 << log_block,
        inode_size=inode_size,
        incompat=incompat,
        ro_compat=ro_compat,
    )


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def check_readable(sb: ExtSuperblock) -> None:
    """:class:`ExtRefused` unless this reader handles every feature of ``sb``."""
    if sb.incompat & _INCOMPAT_RECOVER:
        raise ExtRefused("its journal needs recovery (the appliance replays it in a throw-away overlay)")
    unknown = sb.incompat & ~_INCOMPAT_OK
    if unknown:
        raise ExtRefused(f"it has incompatible features 0x{unknown:x} this reader does not handle")
    if sb.ro_compat & _RO_COMPAT_BIGALLOC:
        raise ExtRefused("it uses bigalloc clusters")
    if sb.inode_size not in (128, 256):
        raise ExtRefused(f"its inodes are {sb.inode_size} bytes (this reader handles 128 and 256)")


class Window(io.RawIOBase):
    """``length`` bytes of an open file from ``offset``, read with ``pread`` (a partition of the image).

    Reads past the end return what is there (nothing): never a byte outside the window.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self.fd, self.base, self.length, self.pos = fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.length + offset}[whence]
        if self.pos < 0:
            raise ValueError("negative seek")
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        end = self.length if size is None or size < 0 else min(self.length, self.pos + size)
        if end <= self.pos:
            return b""
        data = os.pread(self.fd, end - self.pos, self.base + self.pos)
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class ExtFS:
    """An ext filesystem of the image, as a :class:`~liveimg.fsview.ReadOnlyFS` (never follows a link).

    Every dissect call runs under :meth:`_guard`: any exception it raises on bytes it cannot
    parse (and a :class:`RecursionError` or :class:`MemoryError`) becomes :class:`ExtRefused`.
    """

    def __init__(self, fd: int, offset: int, length: int, label: str) -> None:
        try:
            from dissect.extfs import extfs as dissect  # type: ignore[import-untyped]  # noqa: PLC0415
        except ImportError:
            raise ExtRefused("the Python package dissect.extfs is not installed") from None

        self.label = label
        self._fh = Window(fd, offset, length)
        head = self._fh.read(2048)
        sb = probe_superblock(head)
        if sb is None:
            raise ExtRefused(f"{label}: no ext superblock")
        check_readable(sb)
        self.superblock = sb
        with self._guard("the superblock"):
            self._fs = dissect.ExtFS(self._fh)
            self._blocks = int(self._fs.block_count)
        self._dirs: dict[int, dict[str, int]] = {}

    # --- guarded primitives -------------------------------------------------------------------

    def _guard(self, what: str) -> _Guard:
        return _Guard(f"{self.label}: {what}")

    def _inode(self, inum: int) -> Any:
        with self._guard(f"inode {inum}"):
            node = self._fs.get_inode(inum)
            _ = node.inode  # parsed now, under the guard
            return node

    def _runs(self, node: Any) -> list[tuple[int | None, int]]:
        """The file's block runs (start or None for a hole, count), bounded and checked."""
        inode = node.inode
        size = int(node.size)
        bs = self._fs.block_size
        expected = -(-size // bs)
        if inode.i_flags & _INLINE_DATA_FL:
            raise ExtRefused(f"{self.label}: inode {node.inum} has inline data")
        if not inode.i_flags & _EXTENTS_FL:
            if size > MAX_INDIRECT_FILE:
                raise ExtRefused(f"{self.label}: inode {node.inum}: {size} bytes mapped by indirect blocks")
            with self._guard(f"inode {node.inum}'s blocks"):
                mapped: list[tuple[int | None, int]] = list(node.dataruns())
            for start, count in mapped:
                if start is not None and start + count > self._blocks:
                    raise ExtRefused(f"{self.label}: inode {node.inum} points past the filesystem's end")
            return mapped
        runs: list[tuple[int | None, int]] = []
        done = 0
        budget = [MAX_EXTENT_BLOCKS]

        def walk(buf: bytes, depth: int | None) -> None:
            nonlocal done
            budget[0] -= 1
            if budget[0] < 0:
                raise ExtRefused(f"{self.label}: inode {node.inum}: more than {MAX_EXTENT_BLOCKS} extent blocks")
            magic, entries, maximum, node_depth = struct.unpack_from("<HHHH", buf, 0)
            if magic != 0xF30A or entries > maximum or 12 + 12 * maximum > len(buf) or node_depth > MAX_DEPTH:
                raise ExtRefused(f"{self.label}: inode {node.inum}: a bad extent-tree node")
            if depth is not None and node_depth != depth:
                raise ExtRefused(f"{self.label}: inode {node.inum}: the extent tree's depths disagree")
            for i in range(entries):
                base = 12 + 12 * i
                if node_depth == 0:
                    logical, length, hi, lo = struct.unpack_from("<IHHI", buf, base)
                    hole = length > 32768
                    length = length - 32768 if hole else length
                    if logical < done:
                        raise ExtRefused(f"{self.label}: inode {node.inum}: extents out of order")
                    if logical > done:
                        runs.append((None, logical - done))
                    start = (hi << 32) | lo
                    if not hole and start + length > self._blocks:
                        raise ExtRefused(f"{self.label}: inode {node.inum} points past the filesystem's end")
                    runs.append((None if hole else start, length))
                    done = logical + length
                    if len(runs) > MAX_EXTENTS:
                        raise ExtRefused(f"{self.label}: inode {node.inum}: more than {MAX_EXTENTS} extents")
                else:
                    _logical, lo, hi = struct.unpack_from("<IIH", buf, base)
                    child = (hi << 32) | lo
                    if not 0 < child < self._blocks:
                        raise ExtRefused(f"{self.label}: inode {node.inum}: an extent block outside the filesystem")
                    self._fh.seek(child * bs)
                    walk(self._fh.read(bs), node_depth - 1)

        walk(bytes(inode.i_block), None)
        if done > expected:
            runs = _clip(runs, expected)
        elif done < expected:
            runs.append((None, expected - done))
        return runs

    def _stream(self, node: Any) -> Any:
        node._runlist = self._runs(node)  # dissect then reads our checked runs, never its own parse
        with self._guard(f"inode {node.inum}"):
            return node.open()

    def _listing(self, inum: int) -> dict[str, int]:
        if inum not in self._dirs:
            node = self._inode(inum)
            if statmod.S_IFMT(node.inode.i_mode) != statmod.S_IFDIR:
                raise ExtRefused(f"{self.label}: inode {inum} is not a directory")
            if node.size > MAX_DIR_BYTES:
                raise ExtRefused(f"{self.label}: a directory of {node.size} bytes (more than {MAX_DIR_BYTES})")
            self._stream(node)
            names: dict[str, int] = {}
            with self._guard(f"directory inode {inum}"):
                for child in node.iterdir():
                    name = child.filename
                    if name in (".", "..") or "/" in name or not name:
                        continue
                    if name in names:  # the kernel would find the first, a dict the last: neither is right
                        raise ExtRefused(f"{self.label}: directory inode {inum} has two entries named {name!r}")
                    names[name] = int(child.inum)
                    if len(names) > MAX_DIR_ENTRIES:
                        raise ExtRefused(
                            f"{self.label}: directory inode {inum} has more than {MAX_DIR_ENTRIES} entries"
                        )
            self._dirs[inum] = names
        return self._dirs[inum]

    def _lookup(self, path: str) -> int | None:
        inum = 2
        for part in [p for p in path.split("/") if p]:
            found = self._listing(inum).get(part)
            if found is None:
                return None
            inum = found
        return inum

    # --- ReadOnlyFS ---------------------------------------------------------------------------

    def lstat(self, path: str) -> FileStat | None:
        inum = self._lookup(path)
        if inum is None:
            return None
        node = self._inode(inum)
        return FileStat.from_mode(int(node.inode.i_mode), int(node.size))

    def _node(self, path: str) -> Any:
        inum = self._lookup(path)
        if inum is None:
            raise ExtRefused(f"{self.label}: {path} vanished")
        return self._inode(inum)

    def readlink(self, path: str) -> str:
        return self._target(self._node(path))

    def _target(self, node: Any) -> str:
        if node.size > MAX_LINK:
            raise ExtRefused(f"{self.label}: a symlink target of {node.size} bytes")
        if node.size < 60 and not node.inode.i_flags & _EXTENTS_FL:  # a fast symlink: the target is in the inode
            data = bytes(node.inode.i_block)[: node.size]
        else:
            stream = self._stream(node)
            with self._guard(f"symlink inode {node.inum}"):
                data = stream.read(node.size)
        return data.decode("utf-8", "surrogateescape")

    def listdir(self, path: str) -> list[str]:
        inum = self._lookup(path)
        if inum is None:
            raise ExtRefused(f"{self.label}: {path} vanished")
        return list(self._listing(inum))

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        node = self._node(path)
        if statmod.S_IFMT(node.inode.i_mode) != statmod.S_IFREG:
            raise ExtRefused(f"{self.label}: {path} is not a regular file")
        stream = self._stream(node)
        with self._guard(f"reading {path}"):
            stream.seek(offset)
            return bytes(stream.read(max(0, min(size, int(node.size) - offset))))

    # --- a tree source: every entry with its metadata -------------------------------------

    def _xattrs(self, node: Any) -> tuple[tuple[str, bytes], ...]:
        if self.superblock.inode_size == 128 and not node.inode.i_file_acl_lo and not node.inode.i_file_acl_high:
            return ()
        with self._guard(f"inode {node.inum}'s extended attributes"):
            if self.superblock.inode_size == 128:
                node.inode.i_extra = b""  # no room in the inode: dissect would read the next one
            found = []
            for xattr in node.xattr:
                index = int(xattr.entry.e_name_index)
                if xattr.prefix == "unknown_prefix" or int(xattr.entry.e_value_inum):
                    raise ExtRefused(
                        f"{self.label}: inode {node.inum}: an extended attribute this reader does not read"
                    )
                value = bytes(xattr.value)
                found.append((str(xattr.name), _vfs_acl(value) if index in _ACL_INDEXES else value))
        return tuple(sorted(found))

    def entry(self, rel: str, inum: int) -> Entry:
        node = self._inode(inum)
        ino = node.inode
        mode = int(ino.i_mode)
        kind = statmod.S_IFMT(mode)
        rdev = (0, 0)
        if kind in (statmod.S_IFCHR, statmod.S_IFBLK):
            old, new = struct.unpack_from("<II", bytes(ino.i_block), 0)
            rdev = (
                ((old >> 8) & 0xFF, old & 0xFF) if old else ((new >> 8) & 0xFFF, (new & 0xFF) | ((new >> 12) & 0xFFF00))
            )
        with self._guard(f"inode {inum}'s times"):
            times = int(node.atime_ns), int(node.mtime_ns), int(node.ctime_ns)
        return Entry(
            path=rel,
            mode=mode,
            size=int(node.size) if kind in (statmod.S_IFREG, statmod.S_IFDIR, statmod.S_IFLNK) else 0,
            rdev=rdev,
            uid=int(ino.i_uid) | (int(ino.i_uid_high) << 16),
            gid=int(ino.i_gid) | (int(ino.i_gid_high) << 16),
            atime_ns=times[0],
            mtime_ns=times[1],
            ctime_ns=times[2],
            link_target=self._target(node) if kind == statmod.S_IFLNK else None,
            xattrs=() if kind == statmod.S_IFLNK else self._xattrs(node),
            inode=(0, inum),
            nlink=int(ino.i_links_count),
        )

    def walk(self) -> Iterator[tuple[str, int]]:
        """Every path below the root (relative, "" first) and its inode, parents before children."""
        pending = [("", 2)]
        seen_dirs = {2}
        count = 0
        while pending:
            rel, inum = pending.pop()
            yield rel, inum
            count += 1
            if count > MAX_ENTRIES:
                raise ExtRefused(f"{self.label}: more than {MAX_ENTRIES} entries")
            node = self._inode(inum)
            if statmod.S_IFMT(node.inode.i_mode) != statmod.S_IFDIR:
                continue
            for name, child in sorted(self._listing(inum).items(), reverse=True):
                child_node = self._inode(child)
                if statmod.S_IFMT(child_node.inode.i_mode) == statmod.S_IFDIR:
                    if child in seen_dirs:
                        raise ExtRefused(f"{self.label}: directory inode {child} appears twice (a loop)")
                    seen_dirs.add(child)
                pending.append((f"{rel}/{name}" if rel else name, child))

    def fetch(self, inum: int, dest: Path) -> None:
        node = self._inode(inum)
        stream = self._stream(node)
        remaining = int(node.size)
        with open(dest, "wb") as out, self._guard(f"reading inode {inum}"):
            while remaining > 0:
                chunk = stream.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ExtRefused(f"{self.label}: inode {inum} is shorter than its size")
                out.write(chunk)
                remaining -= len(chunk)


class ExtTree:
    """A whole ext filesystem as a :class:`~liveimg.tree.TreeSource` (entries sorted by path)."""

    def __init__(self, fs: ExtFS) -> None:
        self.fs = fs
        self._inodes: dict[str, int] = {}

    def entries(self) -> list[Entry]:
        listed = sorted(self.fs.walk())
        self._inodes = dict(listed)
        links = HardLinks()
        out = []
        for rel, inum in listed:
            entry = self.fs.entry(rel, inum)
            if entry.kind != "dir" and entry.inode is not None and rel:
                first = links.first_name(entry.inode, entry.nlink, rel)
                if first is not None:
                    entry = Entry(path=rel, mode=entry.mode, hardlink=first, inode=entry.inode, nlink=entry.nlink,
                                  size=entry.size, uid=entry.uid, gid=entry.gid, mtime_ns=entry.mtime_ns,
                                  atime_ns=entry.atime_ns, ctime_ns=entry.ctime_ns, xattrs=entry.xattrs)  # fmt: skip
            out.append(entry)
        return out

    def fetch(self, entry: Entry, dest: Path) -> None:
        try:
            self.fs.fetch(self._inodes[entry.path], dest)
        except ExtRefused as exc:
            raise InvalidImage(f"{exc}", hint="build with --inspect appliance") from None


def _clip(runs: list[tuple[int | None, int]], blocks: int) -> list[tuple[int | None, int]]:
    out: list[tuple[int | None, int]] = []
    for start, count in runs:
        if blocks <= 0:
            break
        out.append((start, min(count, blocks)))
        blocks -= count
    return out


def _vfs_acl(value: bytes) -> bytes:
    """An ACL as ext4 stores it (version 1, short entries) in the form ``getxattr`` returns (version 2)."""
    if len(value) < 4 or struct.unpack_from("<I", value, 0)[0] != 1:
        raise ExtRefused("an ACL in an unknown format")
    out = [struct.pack("<I", 2)]
    pos = 4
    while pos < len(value):
        if pos + 4 > len(value):
            raise ExtRefused("a truncated ACL")
        tag, perm = struct.unpack_from("<HH", value, pos)
        if tag in (0x02, 0x08):  # ACL_USER, ACL_GROUP: an id follows
            if pos + 8 > len(value):
                raise ExtRefused("a truncated ACL")
            (ident,) = struct.unpack_from("<I", value, pos + 4)
            pos += 8
        else:
            ident = 0xFFFFFFFF
            pos += 4
        out.append(struct.pack("<HHI", tag, perm, ident))
    return b"".join(out)


class _Guard:
    """Turns whatever a parser raises on hostile bytes into :class:`ExtRefused` (ours pass through)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, ExtRefused) or not isinstance(exc, Exception):
            return
        raise ExtRefused(f"{self.what}: cannot parse it ({type(exc).__name__}: {exc})") from None
