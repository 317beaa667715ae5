"""SquashFS 4.0 constants, named as in the Linux kernel's ``fs/squashfs/squashfs_fs.h``.

All on-disk integers are little-endian.  References: the kernel's squashfs_fs.h and
readers (super.c, inode.c, namei.c, dir.c, export.c, xattr_id.c, id.c, fragment.c),
squashfs-tools-ng's doc/format.adoc.
"""

from __future__ import annotations

import enum

SQUASHFS_MAGIC = 0x73717368  # "hsqs"
SQUASHFS_MAJOR = 4
SQUASHFS_MINOR = 0

#: Uncompressed size of a metadata block (inode, directory and table blocks).
SQUASHFS_METADATA_SIZE = 8192
#: A metadata block's 16-bit header: size in the low 15 bits, this bit set when stored uncompressed.
SQUASHFS_COMPRESSED_BIT = 1 << 15
#: In a data block size (block list, fragment entry), this bit is set when stored uncompressed.
SQUASHFS_COMPRESSED_BIT_BLOCK = 1 << 24
#: Images are padded to a multiple of this (block devices read in these units).
SQUASHFS_DEVBLK_SIZE = 4096

SQUASHFS_INVALID_FRAG = 0xFFFFFFFF
SQUASHFS_INVALID_XATTR = 0xFFFFFFFF
SQUASHFS_INVALID_BLK = 0xFFFFFFFFFFFFFFFF

#: Longest name a directory entry holds (its size field is name length - 1, the kernel caps it).
SQUASHFS_NAME_LEN = 256
MAX_NAME_LEN = 255  # what Linux file names allow, and what mksquashfs accepts
#: Longest symlink target readers take: the kernel refuses a target longer than a page
#: ("Corrupted symlink") and readlink(2) returns at most PATH_MAX - 1 bytes.
MAX_SYMLINK_LEN = 4095
#: Entries under one directory header at most.
SQUASHFS_DIR_COUNT = 256

#: Entries per metadata block of each lookup table.
IDS_PER_BLOCK = SQUASHFS_METADATA_SIZE // 4
FRAGMENTS_PER_BLOCK = SQUASHFS_METADATA_SIZE // 16
LOOKUPS_PER_BLOCK = SQUASHFS_METADATA_SIZE // 8
XATTR_IDS_PER_BLOCK = SQUASHFS_METADATA_SIZE // 16

#: The largest id table: ``no_ids`` is 16 bits.
SQUASHFS_IDS = 65536


class InodeType(enum.IntEnum):
    """``SQUASHFS_*_TYPE``: the basic types 1-7 and their extended ("L") forms 8-14."""

    DIR = 1
    REG = 2
    SYMLINK = 3
    BLKDEV = 4
    CHRDEV = 5
    FIFO = 6
    SOCKET = 7
    LDIR = 8
    LREG = 9
    LSYMLINK = 10
    LBLKDEV = 11
    LCHRDEV = 12
    LFIFO = 13
    LSOCKET = 14

    @property
    def basic(self) -> InodeType:
        """The basic type, as directory entries record it."""
        return InodeType(self - 7) if self > 7 else self

    @property
    def extended(self) -> InodeType:
        return InodeType(self + 7) if self <= 7 else self


class Flags(enum.IntFlag):
    """Superblock ``flags``."""

    NOI = 0x0001  # inodes stored uncompressed
    NOD = 0x0002  # data blocks stored uncompressed
    CHECK = 0x0004  # unused
    NOF = 0x0008  # fragments stored uncompressed
    NO_FRAG = 0x0010
    ALWAYS_FRAG = 0x0020
    DUPLICATE = 0x0040
    EXPORT = 0x0080
    NOX = 0x0100  # xattrs stored uncompressed
    NO_XATTR = 0x0200
    COMP_OPT = 0x0400  # compressor options follow the superblock
    NOID = 0x0800  # id table stored uncompressed


class CompressionId(enum.IntEnum):
    ZLIB = 1
    LZMA = 2
    LZO = 3
    XZ = 4
    LZ4 = 5
    ZSTD = 6


#: xattr name prefixes by type (``SQUASHFS_XATTR_USER`` ...); ``XATTR_VALUE_OOL`` marks an out-of-line value.
XATTR_PREFIXES: dict[int, bytes] = {0: b"user.", 1: b"trusted.", 2: b"security."}
SQUASHFS_XATTR_VALUE_OOL = 0x100
