"""Directory listings in the directory table (``squashfs_dir_header`` and ``squashfs_dir_entry``).

A listing is a run of headers, each followed by ``count + 1`` entries (at most 256).  A
header fixes the metadata block (relative to the inode table) of its entries' inodes and
a base inode number; an entry stores the inode's offset in that block, its inode number
as a signed 16-bit difference from the base, its basic type and its name (``size`` is the
name length minus 1).  Entries are sorted by name bytes (strcmp order): the kernel's
lookup relies on it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from liveimg.errors import InvalidImage

HEADER = struct.Struct("<III")  # count - 1, start_block, inode_number
ENTRY = struct.Struct("<HhHH")  # offset, inode_number delta, type, size - 1


@dataclass(slots=True, frozen=True)
class DirHeader:
    count: int  # number of entries (stored minus 1)
    start_block: int
    inode_number: int

    def to_bytes(self) -> bytes:
        return HEADER.pack(self.count - 1, self.start_block, self.inode_number)

    @classmethod
    def from_bytes(cls, data: bytes) -> DirHeader:
        count, start, number = HEADER.unpack(data)
        if count >= 256:
            raise InvalidImage(f"directory header with {count + 1} entries, at most 256 allowed")
        return cls(count + 1, start, number)


@dataclass(slots=True, frozen=True)
class DirEntry:
    offset: int
    inode_offset: int  # signed difference from the header's inode_number
    type: int
    name: bytes

    def to_bytes(self) -> bytes:
        return ENTRY.pack(self.offset, self.inode_offset, self.type, len(self.name) - 1) + self.name

    @property
    def size(self) -> int:
        return ENTRY.size + len(self.name)
