"""A minimal squashfs 4.0 reader: superblock, tables, inodes, directories and file data.

Enough for ``liveimg squashfs info`` and for tests that read our images back without
trusting the writer's own data structures.  Not hardened for hostile images beyond the
checks in :meth:`Superblock.from_bytes` and bounds on sizes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from liveimg.errors import ImageNotFound, InvalidImage
from liveimg.squashfs.compressor import Compressor, compressor_for_id
from liveimg.squashfs.constants import (
    SQUASHFS_COMPRESSED_BIT,
    SQUASHFS_COMPRESSED_BIT_BLOCK,
    SQUASHFS_INVALID_BLK,
    SQUASHFS_INVALID_FRAG,
    SQUASHFS_INVALID_XATTR,
    SQUASHFS_METADATA_SIZE,
    SQUASHFS_XATTR_VALUE_OOL,
    XATTR_PREFIXES,
    Flags,
    InodeType,
)
from liveimg.squashfs.directory import ENTRY, HEADER, DirHeader
from liveimg.squashfs.frag_table import FragmentEntry, FragmentTable
from liveimg.squashfs.inode import DirInode, Inode, RegInode, read_inode
from liveimg.squashfs.options import COMPRESSOR_IDS, SquashfsOptions
from liveimg.squashfs.superblock import Superblock

_U16 = struct.Struct("<H")


@dataclass(frozen=True)
class Entry:
    """A name in a directory listing."""

    name: bytes
    inode: Inode


class SquashfsReader:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ImageNotFound(f"cannot open squashfs image {self.path}: {exc.strerror}") from exc
        self.sb = Superblock.from_bytes(self._f.read(Superblock.SIZE))
        cls = compressor_for_id(self.sb.compression)
        name = next(n for n, i in COMPRESSOR_IDS.items() if i == self.sb.compression)
        base = SquashfsOptions(comp=name, block_size=self.sb.block_size)
        self.comp_options_raw = b""
        if self.sb.has(Flags.COMP_OPT):
            self.comp_options_raw, _ = self._meta_block(Superblock.SIZE)
            base = cls.options_from_bytes(self.comp_options_raw, base)
        self.options = base
        self.compressor: Compressor = cls(base)
        self._read_block = lru_cache(maxsize=256)(self._meta_block)
        self.ids = self._table(self.sb.id_table_start, self.sb.no_ids, 4, "I")
        self.fragments: list[FragmentEntry] = []
        if self.sb.fragments:
            raw = self._table_bytes(self.sb.fragment_table_start, self.sb.fragments * 16)
            self.fragments = FragmentTable.parse(raw, self.sb.fragments)
        self.export: list[int] = []
        if self.sb.lookup_table_start != SQUASHFS_INVALID_BLK:
            self.export = self._table(self.sb.lookup_table_start, self.sb.inodes, 8, "Q")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SquashfsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- low level -----------------------------------------------------------------------

    def _pread(self, offset: int, size: int) -> bytes:
        data = os.pread(self._f.fileno(), size, offset)
        if len(data) != size:
            raise InvalidImage(f"{self.path}: truncated at offset {offset} (wanted {size} bytes)")
        return data

    def _meta_block(self, offset: int) -> tuple[bytes, int]:
        """The uncompressed metadata block at ``offset`` and the offset of the next one."""
        (header,) = _U16.unpack(self._pread(offset, 2))
        size = header & ~SQUASHFS_COMPRESSED_BIT
        if size == 0 or size > SQUASHFS_METADATA_SIZE:
            raise InvalidImage(f"{self.path}: metadata block at {offset} has bad size {size}")
        raw = self._pread(offset + 2, size)
        if not header & SQUASHFS_COMPRESSED_BIT:
            raw = self.compressor.decompress(raw, SQUASHFS_METADATA_SIZE)
        return raw, offset + 2 + size

    def _table_bytes(self, index_start: int, size: int) -> bytes:
        count = -(-size // SQUASHFS_METADATA_SIZE)
        pointers = struct.unpack(f"<{count}Q", self._pread(index_start, 8 * count))
        data = b"".join(self._meta_block(p)[0] for p in pointers)
        return data[:size]

    def _table(self, index_start: int, count: int, width: int, fmt: str) -> list[int]:
        if count == 0:
            return []
        return list(struct.unpack(f"<{count}{fmt}", self._table_bytes(index_start, count * width)))

    def read_meta(self, table_start: int, block: int, offset: int, size: int) -> tuple[bytes, int, int]:
        """``size`` bytes of a metadata table from (block, offset); returns the data and where it ended."""
        out = bytearray()
        while len(out) < size:
            data, nxt = self._read_block(table_start + block)
            chunk = data[offset : offset + size - len(out)]
            out += chunk
            offset += len(chunk)
            if offset >= len(data):
                block, offset = nxt - table_start, 0
        return bytes(out), block, offset

    # --- inodes and directories ----------------------------------------------------------

    def inode_at(self, ref: int) -> Inode:
        pos = [ref >> 16, ref & 0xFFFF]

        def read(n: int) -> bytes:
            data, pos[0], pos[1] = self.read_meta(self.sb.inode_table_start, pos[0], pos[1], n)
            return data

        return read_inode(read, self.sb.block_log)

    @property
    def root(self) -> Inode:
        return self.inode_at(self.sb.root_inode)

    def listdir(self, inode: DirInode) -> list[Entry]:
        size = inode.file_size - 3
        if size <= 0:
            return []
        data, _, _ = self.read_meta(self.sb.directory_table_start, inode.start_block, inode.offset, size)
        entries = []
        pos = 0
        while pos < size:
            header = DirHeader.from_bytes(data[pos : pos + HEADER.size])
            pos += HEADER.size
            for _ in range(header.count):
                offset, delta, _type, nsize = ENTRY.unpack_from(data, pos)
                pos += ENTRY.size
                name = data[pos : pos + nsize + 1]
                pos += nsize + 1
                child = self.inode_at(header.start_block << 16 | offset)
                if child.inode_number != header.inode_number + delta:
                    raise InvalidImage(f"{self.path}: entry {name!r} inode number disagrees with its inode")
                entries.append(Entry(name, child))
        return entries

    def walk(self) -> Iterator[tuple[bytes, Inode]]:
        """(path, inode) of every entry, the root as b"", depth first in name order."""
        stack: list[tuple[bytes, Inode]] = [(b"", self.root)]
        while stack:
            path, inode = stack.pop()
            yield path, inode
            if isinstance(inode, DirInode):
                children = self.listdir(inode)
                for entry in reversed(children):
                    stack.append(((path + b"/" if path else b"") + entry.name, entry.inode))

    def lookup(self, path: str | bytes) -> Inode:
        raw = path.encode() if isinstance(path, str) else path
        inode = self.root
        for part in (p for p in raw.split(b"/") if p):
            if not isinstance(inode, DirInode):
                raise InvalidImage(f"{raw!r}: not a directory on the way")
            found = [e.inode for e in self.listdir(inode) if e.name == part]
            if not found:
                raise FileNotFoundError(raw.decode(errors="replace"))
            inode = found[0]
        return inode

    # --- data ----------------------------------------------------------------------------

    def _data_block(self, offset: int, size_field: int, expected: int) -> bytes:
        size = size_field & ~SQUASHFS_COMPRESSED_BIT_BLOCK
        raw = self._pread(offset, size)
        if size_field & SQUASHFS_COMPRESSED_BIT_BLOCK:
            return raw
        return self.compressor.decompress(raw, self.sb.block_size)[:expected] if expected else b""

    def iter_file(self, inode: RegInode) -> Iterator[bytes]:
        bs = self.sb.block_size
        pos = inode.start_block
        remaining = inode.file_size
        for size_field in inode.block_sizes:
            want = min(bs, remaining)
            if size_field == 0:
                yield bytes(want)
            else:
                block = self._data_block(pos, size_field, want)
                if len(block) < want:
                    block += bytes(want - len(block))
                yield block[:want]
                pos += size_field & ~SQUASHFS_COMPRESSED_BIT_BLOCK
            remaining -= want
        if inode.fragment != SQUASHFS_INVALID_FRAG:
            entry = self.fragments[inode.fragment]
            frag = self._data_block(entry.start_block, entry.size, bs)
            yield frag[inode.offset : inode.offset + remaining]

    def read_file(self, inode: RegInode) -> bytes:
        return b"".join(self.iter_file(inode))

    # --- xattrs --------------------------------------------------------------------------

    def xattrs(self, index: int) -> dict[bytes, bytes]:
        if index == SQUASHFS_INVALID_XATTR:
            return {}
        header = self._pread(self.sb.xattr_id_table_start, 16)
        kv_start, count, _ = struct.unpack("<QII", header)
        if index >= count:
            raise InvalidImage(f"{self.path}: xattr id {index} out of range ({count})")
        nblocks = -(-count * 16 // SQUASHFS_METADATA_SIZE)
        pointers = struct.unpack(f"<{nblocks}Q", self._pread(self.sb.xattr_id_table_start + 16, 8 * nblocks))
        blk = pointers[index * 16 // SQUASHFS_METADATA_SIZE]
        data, _ = self._read_block(blk)
        ref, pairs, _size = struct.unpack_from("<QII", data, index * 16 % SQUASHFS_METADATA_SIZE)
        block, offset = ref >> 16, ref & 0xFFFF
        out = {}
        for _ in range(pairs):
            raw, block, offset = self.read_meta(kv_start, block, offset, 4)
            kind, nsize = struct.unpack("<HH", raw)
            name, block, offset = self.read_meta(kv_start, block, offset, nsize)
            raw, block, offset = self.read_meta(kv_start, block, offset, 4)
            (vsize,) = struct.unpack("<I", raw)
            value, block, offset = self.read_meta(kv_start, block, offset, vsize)
            if kind & SQUASHFS_XATTR_VALUE_OOL:
                (vref,) = struct.unpack("<Q", value)
                raw, b2, o2 = self.read_meta(kv_start, vref >> 16, vref & 0xFFFF, 4)
                value, _, _ = self.read_meta(kv_start, b2, o2, struct.unpack("<I", raw)[0])
            out[XATTR_PREFIXES[kind & 0xFF] + name] = value
        return out

    def inode_xattrs(self, inode: Inode) -> dict[bytes, bytes]:
        return self.xattrs(getattr(inode, "xattr", SQUASHFS_INVALID_XATTR))

    def uid(self, inode: Inode) -> int:
        return self.ids[inode.uid]

    def gid(self, inode: Inode) -> int:
        return self.ids[inode.guid]


def describe(path: Path | str) -> dict[str, object]:
    """What ``liveimg squashfs info`` prints: the superblock, compressor options and counts."""
    with SquashfsReader(path) as r:
        sb = r.sb
        flags = [f.name for f in Flags if sb.flags & f and f.name]
        counts: dict[str, int] = {}
        for _path, inode in r.walk():
            key = InodeType(inode.inode_type).basic.name.lower()
            counts[key] = counts.get(key, 0) + 1
        o = r.options
        return {
            "path": str(path),
            "compressor": o.comp,
            "compressor_options": {
                "Xbcj": list(o.Xbcj), "Xdict_size": o.dict_size if o.comp == "xz" else None,
                "Xcompression_level": o.compression_level, "Xhc": o.Xhc,
            },
            "block_size": sb.block_size,
            "bytes_used": sb.bytes_used,
            "file_size": r.path.stat().st_size,
            "mkfs_time": sb.mkfs_time,
            "inodes": sb.inodes,
            "ids": sb.no_ids,
            "fragments": sb.fragments,
            "flags": flags,
            "exportable": sb.lookup_table_start != SQUASHFS_INVALID_BLK,
            "xattrs": sb.xattr_id_table_start != SQUASHFS_INVALID_BLK,
            "entries": counts,
        }  # fmt: skip
