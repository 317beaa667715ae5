"""The fragment table: where each fragment block is (``struct squashfs_fragment_entry``).

A fragment block packs the tails of several files (and whole small files) together; an
inode names its fragment by index and its offset inside the uncompressed block.
:class:`TailIndex` finds a tail stored before, so that equal tails are stored once.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
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


_LENGTH = struct.Struct("<I")


def tail_key(tail: bytes) -> bytes:
    """What identifies a tail: its length and a 128-bit BLAKE2b digest of it (20 bytes)."""
    return _LENGTH.pack(len(tail)) + hashlib.blake2b(tail, digest_size=16).digest()


class TailIndex:
    """Tails already stored, by :func:`tail_key`: (fragment, offset) of their first copy.

    Every small file has a tail, so this holds an entry per distinct small file: an
    open-addressing hash table in arrays (the keys in one bytearray, 20 bytes each, the
    values packed in a u64, slots of u32 at most half full), instead of a dict of tuples.
    """

    _SIZE = 20

    def __init__(self) -> None:
        self._keys = bytearray()
        self._values = array("Q")
        self._slots = array("I", bytes(4 * 1024))  # record number + 1; 0 is empty

    def __len__(self) -> int:
        return len(self._values)

    def _slot(self, key: bytes) -> int:
        """The slot holding ``key``, or the empty one where it would go."""
        mask = len(self._slots) - 1
        at = int.from_bytes(key[4:12], "little") & mask
        size = self._SIZE
        while True:
            record = self._slots[at]
            if record == 0 or self._keys[(record - 1) * size : record * size] == key:
                return at
            at = (at + 1) & mask

    def get(self, key: bytes) -> tuple[int, int] | None:
        record = self._slots[self._slot(key)]
        if record == 0:
            return None
        value = self._values[record - 1]
        return value >> 32, value & 0xFFFFFFFF

    def put(self, key: bytes, fragment: int, offset: int) -> None:
        """Record a new tail (``get(key)`` was None)."""
        if len(key) != self._SIZE:
            raise ValueError("not a tail_key")
        self._keys += key
        self._values.append(fragment << 32 | offset)
        if 2 * len(self._values) > len(self._slots):
            self._slots = array("I", bytes(8 * len(self._slots)))
            for record in range(1, len(self._values) + 1):
                self._slots[self._slot(bytes(self._keys[(record - 1) * self._SIZE : record * self._SIZE]))] = record
        else:
            self._slots[self._slot(key)] = len(self._values)
