"""Sparse-aware copying of byte ranges between files.

Holes in the source (as ``SEEK_DATA``/``SEEK_HOLE`` report them) are never read and stay
holes in the destination; data is moved with ``copy_file_range``, which lets the kernel
share extents (reflink) where the filesystem can.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from liveimg.errors import HostError

_CHUNK = 64 * 1024 * 1024


def data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The ``(offset, length)`` runs of data between ``start`` and ``end`` of an open file."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data
        pos = hole


def allocated_bytes(path: Path) -> int:
    """Bytes the file occupies on disk (``st_blocks`` is in 512-byte units whatever the block size)."""
    return path.stat().st_blocks * 512


def copy_range(
    src: Path,
    offset: int,
    length: int,
    dest: Path,
    *,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Copy ``length`` bytes of ``src`` from ``offset`` into a new sparse file ``dest``.

    Returns the number of data bytes copied (holes excluded).  ``advance`` is called with
    each amount of the range done, holes included, for progress.
    """
    copied = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        src_fd, dst_fd = fin.fileno(), fout.fileno()
        size = os.fstat(src_fd).st_size
        if offset + length > size:
            raise HostError(f"{src}: the range {offset}+{length} runs past its end ({size} bytes)")
        done = offset
        try:
            for start, run in data_extents(src_fd, offset, offset + length):
                if advance and start > done:
                    advance(start - done)
                pos, left = start, run
                while left:
                    n = os.copy_file_range(src_fd, dst_fd, min(left, _CHUNK), pos, pos - offset)
                    if n == 0:
                        raise HostError(f"{src}: unexpected end of file at byte {pos}")
                    pos += n
                    left -= n
                    copied += n
                    if advance:
                        advance(n)
                done = start + run
            os.ftruncate(dst_fd, length)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise HostError(
                    f"no space left on the device of {dest}", hint="free space or use another --workdir"
                ) from exc
            raise
        if advance and offset + length > done:
            advance(offset + length - done)
    return copied
