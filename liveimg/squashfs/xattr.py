"""Extended attributes: the key/value table and the xattr id table (squashfs_fs.h, xattr_id.c).

Key/value pairs are stored in metadata blocks: ``squashfs_xattr_entry`` (type: 0 user.,
1 trusted., 2 security.; name size; name without the prefix), then
``squashfs_xattr_val`` (value size, value).  Each distinct set of pairs is stored once; an
inode's ``xattr`` field indexes the id table, whose 16-byte entries hold the reference of
the set's first pair, the count and the total stored size.  The id table's metadata
blocks are followed by ``squashfs_xattr_id_table`` (start of the key/value table, number
of ids, unused) and the array of id block offsets; the superblock points to that header.
Names in other namespaces (``system.``) cannot be stored and are skipped with a warning,
as mksquashfs does.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable

from liveimg.squashfs.constants import XATTR_PREFIXES
from liveimg.squashfs.meta_writer import Compress, MetaWriter, build_table

log = logging.getLogger(__name__)

ENTRY = struct.Struct("<HH")  # type, name size
VALUE = struct.Struct("<I")
ID = struct.Struct("<QII")  # xattr ref, count, size
ID_TABLE = struct.Struct("<QII")  # xattr_table_start, xattr_ids, unused

XattrSet = tuple[tuple[bytes, bytes], ...]


def split_name(name: bytes) -> tuple[int, bytes] | None:
    """(type, name without prefix) for a storable attribute name, else None."""
    for kind, prefix in XATTR_PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return kind, name[len(prefix) :]
    return None


def normalize(pairs: Iterable[tuple[bytes, bytes]], where: str = "") -> XattrSet:
    """The storable pairs, sorted by name (for reproducible output)."""
    kept = []
    for name, value in pairs:
        if split_name(name) is None:
            log.warning("%s: xattr %s cannot be stored in squashfs, skipped", where, name.decode(errors="replace"))
            continue
        kept.append((name, value))
    return tuple(sorted(kept))


class XattrWriter:
    def __init__(self) -> None:
        self._ids: dict[XattrSet, int] = {}

    def add(self, pairs: XattrSet) -> int:
        """The xattr id of this (normalized, non-empty) set, storing it the first time."""
        index = self._ids.get(pairs)
        if index is None:
            index = self._ids[pairs] = len(self._ids)
        return index

    def __len__(self) -> int:
        return len(self._ids)

    def build(self, start: int, compress: Compress | None) -> tuple[bytes, int]:
        """The key/value table, id table and its header to write at ``start``; and the header's offset."""
        kv = MetaWriter(compress)
        ids = bytearray()
        for pairs in self._ids:
            ref = kv.reference()
            size = 0
            for name, value in pairs:
                split = split_name(name)
                assert split is not None  # normalize() kept only storable names
                kind, short = split
                record = ENTRY.pack(kind, len(short)) + short + VALUE.pack(len(value)) + value
                kv.append(record)
                size += len(record)
            ids += ID.pack(ref, len(pairs), size)
        kv_bytes = kv.flush()
        table, index_start = build_table(bytes(ids), start + len(kv_bytes), compress)
        # The header sits between the id blocks and their index: split the table there.
        blocks_len = index_start - (start + len(kv_bytes))
        header = ID_TABLE.pack(start, len(self._ids), 0)
        data = bytes(kv_bytes) + table[:blocks_len] + header + table[blocks_len:]
        return data, index_start
