"""The 96-byte superblock at offset 0 (``struct squashfs_super_block``)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from liveimg.errors import InvalidImage
from liveimg.squashfs.constants import (
    SQUASHFS_INVALID_BLK,
    SQUASHFS_MAGIC,
    SQUASHFS_MAJOR,
    SQUASHFS_MINOR,
    Flags,
)


@dataclass(slots=True)
class Superblock:
    """``struct squashfs_super_block``.

    ``root_inode`` is an inode reference: the root inode's metadata block (relative to
    ``inode_table_start``) shifted left by 16, ORed with its offset in that block.  The
    table starts are absolute; an absent xattr, fragment or lookup table is
    ``SQUASHFS_INVALID_BLK``.  ``bytes_used`` excludes the padding to 4 KiB.
    """

    FMT = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
    SIZE = FMT.size  # 96

    inodes: int = 0
    mkfs_time: int = 0
    block_size: int = 131072
    fragments: int = 0
    compression: int = 1
    block_log: int = 17
    flags: int = 0
    no_ids: int = 0
    root_inode: int = 0
    bytes_used: int = 0
    id_table_start: int = 0
    xattr_id_table_start: int = SQUASHFS_INVALID_BLK
    inode_table_start: int = 0
    directory_table_start: int = 0
    fragment_table_start: int = SQUASHFS_INVALID_BLK
    lookup_table_start: int = SQUASHFS_INVALID_BLK
    s_magic: int = SQUASHFS_MAGIC
    s_major: int = SQUASHFS_MAJOR
    s_minor: int = SQUASHFS_MINOR

    def to_bytes(self) -> bytes:
        return self.FMT.pack(
            self.s_magic,
            self.inodes,
            self.mkfs_time,
            self.block_size,
            self.fragments,
            self.compression,
            self.block_log,
            self.flags,
            self.no_ids,
            self.s_major,
            self.s_minor,
            self.root_inode,
            self.bytes_used,
            self.id_table_start,
            self.xattr_id_table_start,
            self.inode_table_start,
            self.directory_table_start,
            self.fragment_table_start,
            self.lookup_table_start,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Superblock:
        """Parse and check a superblock; :class:`InvalidImage` names the inconsistent field."""
        if len(data) < cls.SIZE:
            raise InvalidImage(f"squashfs superblock truncated: {len(data)} bytes, need {cls.SIZE}")
        f = cls.FMT.unpack_from(data)
        sb = cls(
            s_magic=f[0],
            inodes=f[1],
            mkfs_time=f[2],
            block_size=f[3],
            fragments=f[4],
            compression=f[5],
            block_log=f[6],
            flags=f[7],
            no_ids=f[8],
            s_major=f[9],
            s_minor=f[10],
            root_inode=f[11],
            bytes_used=f[12],
            id_table_start=f[13],
            xattr_id_table_start=f[14],
            inode_table_start=f[15],
            directory_table_start=f[16],
            fragment_table_start=f[17],
            lookup_table_start=f[18],
        )
        sb.check()
        return sb

    def check(self) -> None:
        if self.s_magic != SQUASHFS_MAGIC:
            raise InvalidImage(f"not a squashfs image: magic {self.s_magic:#010x}, expected {SQUASHFS_MAGIC:#010x}")
        if (self.s_major, self.s_minor) != (SQUASHFS_MAJOR, SQUASHFS_MINOR):
            raise InvalidImage(f"unsupported squashfs version {self.s_major}.{self.s_minor}, only 4.0 is read")
        if self.block_size != 1 << self.block_log or not 4096 <= self.block_size <= 1 << 20:
            raise InvalidImage(f"squashfs block_size {self.block_size} and block_log {self.block_log} disagree")
        if not self.inode_table_start < self.directory_table_start <= self.bytes_used:
            raise InvalidImage(
                f"squashfs table order wrong: inode table {self.inode_table_start}, "
                f"directory table {self.directory_table_start}, bytes_used {self.bytes_used}"
            )

    def has(self, flag: Flags) -> bool:
        return bool(self.flags & flag)
