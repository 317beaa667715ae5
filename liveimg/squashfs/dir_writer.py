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
        """Append the listing of ``children`` (sorted by name) and say where it is.

        Header splits follow mksquashfs exactly (so listings have the same size): a new
        header after 256 entries, when the inode block changes, when the inode number is
        out of the signed 16-bit range of the header's, or when the listing since the last
        index point would exceed 8 KiB -- the last case also records an index entry.
        """
        start_block, offset = self.meta.position()
        listing = DirListing(start_block, offset, 0)
        buf = bytearray()
        indexed: list[tuple[int, bytes]] = []  # (listing offset of a header, its first name)
        header_at = -1
        count = block = base = 0
        index_point = 0
        for child in children:
            entry_size = ENTRY.size + len(child.name)
            child_block = child.ref >> 16
            over = header_at >= 0 and len(buf) + entry_size - index_point > SQUASHFS_METADATA_SIZE
            if (
                header_at < 0
                or count == SQUASHFS_DIR_COUNT
                or child_block != block
                or over
                or not -32768 <= child.number - base <= 32767
            ):
                if header_at >= 0:
                    buf[header_at : header_at + HEADER.size] = DirHeader(count, block, base).to_bytes()
                    if over:
                        indexed.append((len(buf), child.name))
                        index_point = len(buf)
                header_at = len(buf)
                buf += bytes(HEADER.size)
                count, block, base = 0, child_block, child.number
            buf += DirEntry(child.ref & 0xFFFF, child.number - base, child.type.basic, child.name).to_bytes()
            count += 1
        if header_at >= 0:
            buf[header_at : header_at + HEADER.size] = DirHeader(count, block, base).to_bytes()
        done = 0
        for at, name in indexed:
            self.meta.append(bytes(buf[done:at]))
            listing.index.append(DirIndex(at, self.meta.position()[0], name))
            done = at
        self.meta.append(bytes(buf[done:]))
        listing.size = len(buf)
        return listing
