"""Inodes: one dataclass per on-disk inode type (``struct squashfs_*_inode`` in squashfs_fs.h).

Every inode starts with the 16-byte base header (type, permission bits, uid and gid as
indices into the id table, mtime, inode number).  Extended ("L") forms add a link count,
64-bit sizes or an xattr id; the writer picks the basic form whenever it can hold the
inode, as mksquashfs does.  ``to_bytes`` serializes; :func:`read_inode` parses from a
metadata stream (``read(n) -> bytes``).
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from liveimg.errors import InvalidImage
from liveimg.squashfs.constants import SQUASHFS_INVALID_FRAG, SQUASHFS_INVALID_XATTR, InodeType

BASE = struct.Struct("<HHHHII")  # inode_type, mode, uid, guid, mtime, inode_number
_DIR = struct.Struct("<IIHHI")  # start_block, nlink, file_size, offset, parent_inode
_LDIR = struct.Struct("<IIIIHHI")  # nlink, file_size, start_block, parent_inode, i_count, offset, xattr
_REG = struct.Struct("<IIII")  # start_block, fragment, offset, file_size
_LREG = struct.Struct("<QQQIIII")  # start_block, file_size, sparse, nlink, fragment, offset, xattr
_SYMLINK = struct.Struct("<II")  # nlink, symlink_size
_DEV = struct.Struct("<II")  # nlink, rdev
_IPC = struct.Struct("<I")  # nlink
_XATTR = struct.Struct("<I")
DIR_INDEX = struct.Struct("<III")  # index, start_block, size (name length - 1)

Reader = Callable[[int], bytes]


def encode_dev(major: int, minor: int) -> int:
    """The kernel's ``new_encode_dev``: what squashfs stores in ``rdev``."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_dev(rdev: int) -> tuple[int, int]:
    return (rdev & 0xFFF00) >> 8, (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)


@dataclass(slots=True)
class Inode(ABC):
    """Fields shared by every inode (``struct squashfs_base_inode``); ``mode`` holds permission bits only."""

    inode_type: InodeType
    mode: int
    uid: int  # index into the id table
    guid: int
    mtime: int
    inode_number: int

    def header(self) -> bytes:
        return BASE.pack(self.inode_type, self.mode & 0o7777, self.uid, self.guid, self.mtime, self.inode_number)

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The whole on-disk inode: the base header, then the type's own fields."""

    @property
    def nlink_value(self) -> int:
        return 1


@dataclass(slots=True)
class DirIndex:
    """``struct squashfs_dir_index``: where a directory header starts, for lookups in big directories.

    ``index`` is the header's byte offset in the directory's listing, ``start_block`` its
    metadata block relative to the directory table, ``name`` the header's first name.
    """

    index: int
    start_block: int
    name: bytes

    def to_bytes(self) -> bytes:
        return DIR_INDEX.pack(self.index, self.start_block, len(self.name) - 1) + self.name


@dataclass(slots=True)
class DirInode(Inode):
    """Directory, basic (``squashfs_dir_inode``) or extended (``squashfs_ldir_inode``).

    ``file_size`` is the listing's size plus 3 (for the implicit . and ..); ``start_block``
    and ``offset`` locate the listing in the directory table.
    """

    start_block: int = 0
    nlink: int = 2
    file_size: int = 3
    offset: int = 0
    parent_inode: int = 0
    xattr: int = SQUASHFS_INVALID_XATTR
    index: list[DirIndex] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        if self.inode_type == InodeType.DIR:
            return self.header() + _DIR.pack(
                self.start_block, self.nlink, self.file_size, self.offset, self.parent_inode
            )
        head = self.header() + _LDIR.pack(
            self.nlink,
            self.file_size,
            self.start_block,
            self.parent_inode,
            len(self.index),
            self.offset,
            self.xattr,
        )
        return head + b"".join(i.to_bytes() for i in self.index)

    @property
    def nlink_value(self) -> int:
        return self.nlink


@dataclass(slots=True)
class RegInode(Inode):
    """Regular file, basic (``squashfs_reg_inode``) or extended (``squashfs_lreg_inode``).

    ``start_block`` is the absolute offset of the first data block; ``block_sizes`` holds one
    entry per full block (and for the tail too when it has no fragment): the stored size,
    with bit 24 set when stored uncompressed, 0 for a sparse (all-zero) block.
    """

    start_block: int = 0
    file_size: int = 0
    fragment: int = SQUASHFS_INVALID_FRAG
    offset: int = 0
    sparse: int = 0
    nlink: int = 1
    xattr: int = SQUASHFS_INVALID_XATTR
    block_sizes: array[int] = field(default_factory=lambda: array("I"))

    def to_bytes(self) -> bytes:
        blocks = self.block_sizes.tobytes() if _LITTLE else _le32(self.block_sizes)
        if self.inode_type == InodeType.REG:
            return self.header() + _REG.pack(self.start_block, self.fragment, self.offset, self.file_size) + blocks
        return (
            self.header()
            + _LREG.pack(
                self.start_block, self.file_size, self.sparse, self.nlink, self.fragment, self.offset, self.xattr
            )
            + blocks
        )

    @property
    def nlink_value(self) -> int:
        return self.nlink


@dataclass(slots=True)
class SymlinkInode(Inode):
    """Symbolic link (``squashfs_symlink_inode``); the extended form adds an xattr id after the target."""

    nlink: int = 1
    target: bytes = b""
    xattr: int = SQUASHFS_INVALID_XATTR

    def to_bytes(self) -> bytes:
        data = self.header() + _SYMLINK.pack(self.nlink, len(self.target)) + self.target
        if self.inode_type == InodeType.LSYMLINK:
            data += _XATTR.pack(self.xattr)
        return data

    @property
    def nlink_value(self) -> int:
        return self.nlink


@dataclass(slots=True)
class DevInode(Inode):
    """Block or character device (``squashfs_dev_inode`` / ``squashfs_ldev_inode``)."""

    nlink: int = 1
    rdev: int = 0
    xattr: int = SQUASHFS_INVALID_XATTR

    def to_bytes(self) -> bytes:
        data = self.header() + _DEV.pack(self.nlink, self.rdev)
        if self.inode_type in (InodeType.LBLKDEV, InodeType.LCHRDEV):
            data += _XATTR.pack(self.xattr)
        return data

    @property
    def nlink_value(self) -> int:
        return self.nlink


@dataclass(slots=True)
class IpcInode(Inode):
    """FIFO or socket (``squashfs_ipc_inode`` / ``squashfs_lipc_inode``)."""

    nlink: int = 1
    xattr: int = SQUASHFS_INVALID_XATTR

    def to_bytes(self) -> bytes:
        data = self.header() + _IPC.pack(self.nlink)
        if self.inode_type in (InodeType.LFIFO, InodeType.LSOCKET):
            data += _XATTR.pack(self.xattr)
        return data

    @property
    def nlink_value(self) -> int:
        return self.nlink


_LITTLE = array("I", [1]).tobytes() == b"\x01\x00\x00\x00"


def _le32(values: array[int]) -> bytes:
    copy = array("I", values)
    copy.byteswap()
    return copy.tobytes()


def _block_count(file_size: int, fragment: int, block_log: int) -> int:
    if fragment == SQUASHFS_INVALID_FRAG:
        return (file_size + (1 << block_log) - 1) >> block_log
    return file_size >> block_log


def read_inode(read: Reader, block_log: int) -> Inode:
    """Parse one inode from a metadata stream; :class:`InvalidImage` on an unknown type."""
    raw = read(BASE.size)
    itype, mode, uid, guid, mtime, number = BASE.unpack(raw)
    try:
        t = InodeType(itype)
    except ValueError:
        raise InvalidImage(f"inode {number} has unknown type {itype}") from None
    head = (t, mode, uid, guid, mtime, number)
    if t == InodeType.DIR:
        start, nlink, size, offset, parent = _DIR.unpack(read(_DIR.size))
        return DirInode(*head, start_block=start, nlink=nlink, file_size=size, offset=offset, parent_inode=parent)
    if t == InodeType.LDIR:
        nlink, size, start, parent, count, offset, xattr = _LDIR.unpack(read(_LDIR.size))
        index = []
        for _ in range(count):
            idx, blk, nsize = DIR_INDEX.unpack(read(DIR_INDEX.size))
            index.append(DirIndex(idx, blk, read(nsize + 1)))
        return DirInode(
            *head,
            start_block=start,
            nlink=nlink,
            file_size=size,
            offset=offset,
            parent_inode=parent,
            xattr=xattr,
            index=index,
        )
    if t in (InodeType.REG, InodeType.LREG):
        if t == InodeType.REG:
            start, frag, offset, size = _REG.unpack(read(_REG.size))
            sparse, nlink, xattr = 0, 1, SQUASHFS_INVALID_XATTR
        else:
            start, size, sparse, nlink, frag, offset, xattr = _LREG.unpack(read(_LREG.size))
        count = _block_count(size, frag, block_log)
        sizes = array("I")
        sizes.frombytes(read(4 * count))
        if not _LITTLE:
            sizes.byteswap()
        return RegInode(
            *head,
            start_block=start,
            file_size=size,
            fragment=frag,
            offset=offset,
            sparse=sparse,
            nlink=nlink,
            xattr=xattr,
            block_sizes=sizes,
        )
    if t in (InodeType.SYMLINK, InodeType.LSYMLINK):
        nlink, size = _SYMLINK.unpack(read(_SYMLINK.size))
        target = read(size)
        xattr = _XATTR.unpack(read(4))[0] if t == InodeType.LSYMLINK else SQUASHFS_INVALID_XATTR
        return SymlinkInode(*head, nlink=nlink, target=target, xattr=xattr)
    if t in (InodeType.BLKDEV, InodeType.CHRDEV, InodeType.LBLKDEV, InodeType.LCHRDEV):
        nlink, rdev = _DEV.unpack(read(_DEV.size))
        xattr = _XATTR.unpack(read(4))[0] if t > 7 else SQUASHFS_INVALID_XATTR
        return DevInode(*head, nlink=nlink, rdev=rdev, xattr=xattr)
    (nlink,) = _IPC.unpack(read(_IPC.size))
    xattr = _XATTR.unpack(read(4))[0] if t > 7 else SQUASHFS_INVALID_XATTR
    return IpcInode(*head, nlink=nlink, xattr=xattr)
