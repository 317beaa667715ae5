"""Writes directory listings into the directory table (libsquashfs: dir_writer.h).

Headers are started when 256 entries are reached, when the next inode lies in another
inode-table block, when its number is too far from the header's base for a signed 16-bit
difference, or when the run would cross into the next metadata block.  Whenever a header
starts in a metadata block other than the last indexed one, a :class:`DirIndex` entry is
recorded; directories with index entries need the extended inode, which the kernel uses
to skip ahead in big directories.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from liveimg.squashfs.constants import SQUASHFS_DIR_COUNT, SQUASHFS_METADATA_SIZE, InodeType
from liveimg.squashfs.directory import ENTRY, HEADER, DirEntry, DirHeader
from liveimg.squashfs.inode import DirIndex
from liveimg.squashfs.meta_writer import MetaWriter


@dataclass(slots=True, frozen=True)
class DirChild:
    """One entry to list: its name, inode reference and number, and basic type."""

    name: bytes
    ref: int
    number: int
    type: InodeType


@dataclass(slots=True)
class DirListing:
    """Where a listing went: its block (relative to the directory table) and offset, size and index."""

    start_block: int
    offset: int
    size: int
    index: list[DirIndex] = field(default_factory=list)


class DirWriter:
    def __init__(self, meta: MetaWriter) -> None:
        self.meta = meta

    def write(self, children: list[DirChild]) -> DirListing:
        """Append the listing of ``children`` (sorted by name) and say where it is."""
        start_block, offset = self.meta.position()
        listing = DirListing(start_block, offset, 0)
        last_indexed = start_block
        i, n = 0, len(children)
        while i < n:
            first = children[i]
            block = first.ref >> 16
            block_pos, in_block = self.meta.position()
            used = in_block + HEADER.size + ENTRY.size + len(first.name)
            j = i + 1
            while j < n and j - i < SQUASHFS_DIR_COUNT:
                child = children[j]
                if child.ref >> 16 != block or not -32768 <= child.number - first.number <= 32767:
                    break
                size = ENTRY.size + len(child.name)
                if used + size > SQUASHFS_METADATA_SIZE:
                    break
                used += size
                j += 1
            if block_pos != last_indexed:
                listing.index.append(DirIndex(listing.size, block_pos, first.name))
                last_indexed = block_pos
            run = children[i:j]
            data = bytearray(DirHeader(len(run), block, first.number).to_bytes())
            for child in run:
                data += DirEntry(
                    child.ref & 0xFFFF, child.number - first.number, child.type.basic, child.name
                ).to_bytes()
            self.meta.append(bytes(data))
            listing.size += len(data)
            i = j
        return listing
