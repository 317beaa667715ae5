"""The fragment table: where each fragment block is (``struct squashfs_fragment_entry``).

A fragment block packs the tails of several files (and whole small files) together; an
inode names its fragment by index and its offset inside the uncompressed block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ENTRY = struct.Struct("<QII")  # start_block, size (bit 24: uncompressed), unused


@dataclass(slots=True)
class FragmentEntry:
    start_block: int
    size: int

    def to_bytes(self) -> bytes:
        return ENTRY.pack(self.start_block, self.size, 0)


class FragmentTable:
    def __init__(self) -> None:
        self.entries: list[FragmentEntry] = []

    def append(self, start_block: int, size: int) -> int:
        self.entries.append(FragmentEntry(start_block, size))
        return len(self.entries) - 1

    def __len__(self) -> int:
        return len(self.entries)

    def to_bytes(self) -> bytes:
        return b"".join(e.to_bytes() for e in self.entries)

    @staticmethod
    def parse(data: bytes, count: int) -> list[FragmentEntry]:
        return [FragmentEntry(*ENTRY.unpack_from(data, i * ENTRY.size)[:2]) for i in range(count)]
