"""Metadata blocks: the 8 KiB units inodes, directories and lookup tables are stored in.

Each block is a 16-bit header (stored size in the low 15 bits, bit 15 set when the data
is stored uncompressed) followed by the (compressed) data of at most 8192 bytes.  A
reference into a metadata table is the block's byte offset from the table start shifted
left by 16, ORed with the offset in the uncompressed block.  (libsquashfs: meta_writer.h.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from liveimg.squashfs.constants import SQUASHFS_COMPRESSED_BIT, SQUASHFS_METADATA_SIZE

Compress = Callable[[bytes], "bytes | None"]
_U16 = struct.Struct("<H")


def encode_meta_block(data: bytes, compress: Compress | None) -> bytes:
    """One metadata block: header and data, compressed when that makes it smaller."""
    packed = compress(data) if compress is not None else None
    if packed is not None and len(packed) < len(data):
        return _U16.pack(len(packed)) + packed
    return _U16.pack(len(data) | SQUASHFS_COMPRESSED_BIT) + data


class MetaWriter:
    """Accumulates a metadata table in memory, block by block.

    ``position()`` is where the next appended byte goes, as (block start relative to the
    table, offset in the uncompressed block): the two halves of an inode reference.
    """

    def __init__(self, compress: Compress | None) -> None:
        self._compress = compress
        self.data = bytearray()  # the finished blocks, as they go to disk
        self._buf = bytearray()

    def position(self) -> tuple[int, int]:
        return len(self.data), len(self._buf)

    def reference(self) -> int:
        block, offset = self.position()
        return block << 16 | offset

    def append(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= SQUASHFS_METADATA_SIZE:
            self.data += encode_meta_block(bytes(self._buf[:SQUASHFS_METADATA_SIZE]), self._compress)
            del self._buf[:SQUASHFS_METADATA_SIZE]

    def flush(self) -> bytearray:
        """Close the last (partial) block and hand over the whole table (not copied: the writer is emptied)."""
        if self._buf:
            self.data += encode_meta_block(bytes(self._buf), self._compress)
            self._buf.clear()
        data, self.data = self.data, bytearray()
        return data


def build_table(payload: bytes, start: int, compress: Compress | None) -> tuple[bytes, int]:
    """A lookup table (ids, fragments, export, xattr ids) to be written at offset ``start``.

    The entries go into metadata blocks, followed by an array of the blocks' absolute
    offsets (u64).  Returns the bytes to write and the absolute offset of that array, which
    is what the superblock points to.
    """
    blocks = bytearray()
    pointers = []
    for i in range(0, len(payload), SQUASHFS_METADATA_SIZE):
        pointers.append(start + len(blocks))
        blocks += encode_meta_block(payload[i : i + SQUASHFS_METADATA_SIZE], compress)
    index = struct.pack(f"<{len(pointers)}Q", *pointers)
    return bytes(blocks) + index, start + len(blocks)
