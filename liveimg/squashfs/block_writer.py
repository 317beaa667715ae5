"""Writes data and fragment blocks to the image, in order, and stores duplicate files once.

Blocks arrive in the order they were submitted (see :mod:`block_processor`), so the
output does not depend on how many threads compressed them.  When a file's last block is
written its stored blocks are compared with earlier files that have the same block sizes
and CRC; on a match (checked byte for byte) the output is rewound and the file points at
the earlier copy, as libsquashfs's block writer does.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from array import array
from dataclasses import dataclass, field

from liveimg.errors import HostError
from liveimg.squashfs.constants import SQUASHFS_COMPRESSED_BIT_BLOCK, SQUASHFS_INVALID_FRAG

_KEY = struct.Struct("<QI")  # stored bytes, crc32 (then the block sizes)


@dataclass(slots=True, eq=False)
class FileData:
    """Where a file's data went: what its inode records."""

    size: int
    block_sizes: array[int] = field(default_factory=lambda: array("I"))
    start_block: int = 0
    fragment: int = SQUASHFS_INVALID_FRAG
    offset: int = 0
    sparse: int = 0  # bytes in all-zero blocks, stored as holes
    crc: int = 0  # over the stored blocks, for duplicate detection
    stored: int = 0  # bytes the blocks take on disk
    done: bool = False  # every block written (and a duplicate found): the fields are final


class Output:
    """The image file being written: positional writes, and reads for duplicate checks."""

    def __init__(self, path: os.PathLike[str] | str, dest_for_errors: str) -> None:
        self.dest = dest_for_errors
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise HostError(f"cannot write {self.dest}: {exc.strerror}") from exc
        self.pos = 0

    def _fail(self, exc: OSError) -> HostError:
        if exc.errno == errno.ENOSPC:
            return HostError(f"no space left on the device while writing {self.dest}", hint="free some space")
        return HostError(f"writing {self.dest} failed: {exc.strerror}")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` at the current position; returns where it starts."""
        start = self.pos
        view = memoryview(data)
        try:
            while view:
                done = os.pwrite(self.fd, view, self.pos)
                self.pos += done
                view = view[done:]
        except OSError as exc:
            raise self._fail(exc) from exc
        return start

    def write_at(self, offset: int, data: bytes) -> None:
        try:
            os.pwrite(self.fd, data, offset)
        except OSError as exc:
            raise self._fail(exc) from exc

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def finish(self, length: int) -> None:
        """Cut the file at ``length`` (a rewound duplicate may have left bytes past it)."""
        try:
            os.ftruncate(self.fd, length)
        except OSError as exc:
            raise self._fail(exc) from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BlockWriter:
    def __init__(self, out: Output) -> None:
        self.out = out
        self._files: dict[bytes, int] = {}  # stored size, crc and block sizes -> where the blocks start
        self.duplicates = 0
        self.blocks_written = 0
        self.uncompressed_blocks = 0

    def begin_file(self, data: FileData) -> None:
        data.start_block = self.out.pos

    def write_block(self, data: FileData, index: int, raw: bytes | memoryview, packed: bytes | None) -> None:
        """Store block ``index`` of a file: compressed if ``packed`` is given, else as is."""
        if packed is None:
            self.out.write(raw)
            size = len(raw) | SQUASHFS_COMPRESSED_BIT_BLOCK
            stored = raw
            self.uncompressed_blocks += 1
        else:
            self.out.write(packed)
            size = len(packed)
            stored = packed
        data.block_sizes[index] = size
        data.crc = zlib.crc32(stored, data.crc)
        data.stored += len(stored)
        self.blocks_written += 1

    def write_fragment(self, raw: bytes, packed: bytes | None) -> tuple[int, int]:
        """Store a fragment block; returns (start, size field) for the fragment table."""
        if packed is None:
            return self.out.write(raw), len(raw) | SQUASHFS_COMPRESSED_BIT_BLOCK
        return self.out.write(packed), len(packed)

    def end_file(self, data: FileData) -> None:
        data.done = True
        if data.stored == 0:
            return
        # One bytes object a key and an int a value: this table has an entry per distinct file.
        key = _KEY.pack(data.stored, data.crc) + data.block_sizes.tobytes()
        earlier = self._files.get(key)
        if earlier is not None and self._same(earlier, data.start_block, data.stored):
            self.out.pos = data.start_block  # rewind: later writes overwrite the copy
            data.start_block = earlier
            self.duplicates += 1
            return
        self._files.setdefault(key, data.start_block)

    def _same(self, a: int, b: int, size: int) -> bool:
        chunk = 1 << 20
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            if self.out.read(a + off, n) != self.out.read(b + off, n):
                return False
        return True
