"""On-disk structures: serialize, parse back, and the fixed sizes of squashfs_fs.h."""

from __future__ import annotations

import struct
from array import array

import pytest

from liveimg.errors import InvalidImage
from liveimg.squashfs.constants import SQUASHFS_METADATA_SIZE, InodeType
from liveimg.squashfs.dir_writer import DirChild, DirWriter
from liveimg.squashfs.inode import (
    DevInode,
    DirIndex,
    DirInode,
    Inode,
    IpcInode,
    RegInode,
    SymlinkInode,
    decode_dev,
    encode_dev,
    read_inode,
)
from liveimg.squashfs.meta_writer import MetaWriter, build_table, encode_meta_block
from liveimg.squashfs.superblock import Superblock


def test_superblock_round_trip() -> None:
    sb = Superblock(inodes=7, mkfs_time=99, fragments=2, compression=4, flags=0x4C0, no_ids=1, root_inode=1 << 16 | 8,
                    bytes_used=9000, id_table_start=8990, inode_table_start=96, directory_table_start=500)  # fmt: skip
    raw = sb.to_bytes()
    assert len(raw) == 96 and raw[:4] == b"hsqs"
    assert Superblock.from_bytes(raw) == sb


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"s_magic": 0x12345678}, "not a squashfs image: magic 0x12345678"),
        ({"s_major": 3}, "unsupported squashfs version 3.0"),
        ({"block_log": 16}, "block_size 131072 and block_log 16 disagree"),
        ({"directory_table_start": 10}, "table order wrong"),
    ],
)
def test_superblock_rejects(patch: dict[str, int], message: str) -> None:
    sb = Superblock(inode_table_start=96, directory_table_start=200, bytes_used=300)
    for k, v in patch.items():
        setattr(sb, k, v)
    with pytest.raises(InvalidImage, match=message):
        Superblock.from_bytes(sb.to_bytes())


def _round_trip(inode: Inode, block_log: int = 17) -> Inode:
    data = inode.to_bytes()
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return data[pos - n : pos]

    parsed = read_inode(read, block_log)
    assert pos == len(data)
    return parsed


@pytest.mark.parametrize(
    "inode",
    [
        DirInode(InodeType.DIR, 0o755, 0, 1, 5, 3, start_block=10, nlink=4, file_size=40, offset=12, parent_inode=9),
        DirInode(
            InodeType.LDIR,
            0o1777,
            0,
            0,
            5,
            3,
            start_block=10,
            nlink=2,
            file_size=90000,
            offset=0,
            parent_inode=9,
            xattr=2,
            index=[DirIndex(8300, 8200, b"name")],
        ),
        RegInode(
            InodeType.REG, 0o4755, 1, 1, 5, 4, start_block=96, file_size=300000, block_sizes=array("I", [1, 2, 3])
        ),
        RegInode(
            InodeType.REG,
            0o644,
            1,
            1,
            5,
            4,
            start_block=96,
            file_size=300000,
            fragment=3,
            offset=77,
            block_sizes=array("I", [1, 2]),
        ),
        RegInode(
            InodeType.LREG,
            0o644,
            0,
            0,
            5,
            4,
            start_block=1 << 33,
            file_size=5 << 32,
            sparse=9,
            nlink=3,
            xattr=0,
            block_sizes=array("I", [0] * 163840),
        ),
        SymlinkInode(InodeType.SYMLINK, 0o777, 0, 0, 1, 2, nlink=1, target=b"../target"),
        SymlinkInode(InodeType.LSYMLINK, 0o777, 0, 0, 1, 2, nlink=1, target=b"t", xattr=5),
        DevInode(InodeType.CHRDEV, 0o666, 0, 0, 1, 2, nlink=1, rdev=encode_dev(1, 3)),
        DevInode(InodeType.LBLKDEV, 0o600, 0, 0, 1, 2, nlink=2, rdev=encode_dev(259, 70000), xattr=1),
        IpcInode(InodeType.FIFO, 0o644, 0, 0, 1, 2, nlink=1),
        IpcInode(InodeType.LSOCKET, 0o755, 0, 0, 1, 2, nlink=1, xattr=4),
    ],
)
def test_inode_round_trip(inode: Inode) -> None:
    assert _round_trip(inode, 17) == inode


def test_inode_sizes_match_the_kernel_structs() -> None:
    # sizeof(struct squashfs_*_inode) in squashfs_fs.h, without the trailing arrays/names
    assert len(DirInode(InodeType.DIR, 0, 0, 0, 0, 1).to_bytes()) == 32
    assert len(DirInode(InodeType.LDIR, 0, 0, 0, 0, 1).to_bytes()) == 40
    assert len(RegInode(InodeType.REG, 0, 0, 0, 0, 1).to_bytes()) == 32
    assert len(RegInode(InodeType.LREG, 0, 0, 0, 0, 1).to_bytes()) == 56
    assert len(SymlinkInode(InodeType.SYMLINK, 0, 0, 0, 0, 1).to_bytes()) == 24
    assert len(DevInode(InodeType.BLKDEV, 0, 0, 0, 0, 1).to_bytes()) == 24
    assert len(DevInode(InodeType.LBLKDEV, 0, 0, 0, 0, 1).to_bytes()) == 28
    assert len(IpcInode(InodeType.FIFO, 0, 0, 0, 0, 1).to_bytes()) == 20
    assert len(IpcInode(InodeType.LFIFO, 0, 0, 0, 0, 1).to_bytes()) == 24


def test_device_numbers_like_the_kernel() -> None:
    assert encode_dev(8, 1) == 0x801
    assert encode_dev(259, 70000) == (70000 & 0xFF) | (259 << 8) | ((70000 & ~0xFF) << 12)
    assert decode_dev(encode_dev(259, 70000)) == (259, 70000)


def test_unknown_inode_type() -> None:
    raw = struct.pack("<HHHHII", 15, 0, 0, 0, 0, 1)
    with pytest.raises(InvalidImage, match="inode 1 has unknown type 15"):
        read_inode(lambda n: raw[:n], 17)


def test_meta_writer_blocks_and_references() -> None:
    meta = MetaWriter(None)
    meta.append(b"a" * 8000)
    assert meta.position() == (0, 8000)
    meta.append(b"b" * 400)
    # the first block is complete: 2-byte header (uncompressed bit) + 8192 bytes
    assert meta.position() == (8194, 208)
    assert meta.reference() == 8194 << 16 | 208
    data = meta.flush()
    assert struct.unpack_from("<H", data)[0] == 0x8000 | 8192
    assert len(data) == 8194 + 2 + 208


def test_meta_block_compressed_only_when_smaller() -> None:
    import zlib

    def squash(d: bytes) -> bytes:
        return zlib.compress(d)

    assert encode_meta_block(b"\0" * 1000, squash)[:2] != struct.pack("<H", 0x8000 | 1000)
    raw = bytes(range(256))
    assert encode_meta_block(raw, squash) == struct.pack("<H", 0x8000 | 256) + raw


def test_table_index_follows_its_blocks() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes: two metadata blocks
    data, index_start = build_table(payload, 1000, None)
    assert index_start == 1000 + (2 + 8192) + (2 + 2048)
    assert struct.unpack("<2Q", data[-16:]) == (1000, 1000 + 8194)


def test_dir_writer_splits_and_indexes() -> None:
    meta = MetaWriter(None)
    children = [DirChild(b"n%05d" % i, (i // 300) << 16 | (i % 300) * 20, i + 1, InodeType.REG) for i in range(3000)]
    listing = DirWriter(meta).write(children)
    assert listing.size > SQUASHFS_METADATA_SIZE
    assert listing.index  # big listings get index entries
    for entry in listing.index:
        # every index points at a header that starts in the block it names
        assert (listing.offset + entry.index) // SQUASHFS_METADATA_SIZE == entry.start_block // (
            SQUASHFS_METADATA_SIZE + 2
        )
