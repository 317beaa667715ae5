"""Cuts file data into blocks, compresses them in a bounded pool of threads, keeps order.

Data blocks and fragment blocks are compressed by worker threads (zlib, lzma, zstandard
and lz4 release the GIL while they work) and handed to the :class:`BlockWriter` strictly in
submission order, so the image is byte-identical whatever the number of workers.  At most
``8 * workers + 8`` blocks (fewer for big blocks) are in flight: memory is bounded by workers x block size, not by
the input.

Sparse input: :func:`file_blocks` asks the file system for its data ranges
(``SEEK_DATA``/``SEEK_HOLE``); blocks that lie in holes are never read, and blocks that
are all zeros are stored as holes (block size 0).  A file's tail shorter than a block goes
into a fragment block when the options allow, shared with other tails; identical tails
are stored once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from liveimg.errors import HostError, InvalidImage
from liveimg.progress import StageProgress
from liveimg.squashfs.block_cache import BlockCache
from liveimg.squashfs.block_writer import BlockWriter, FileData
from liveimg.squashfs.compressor import Compressor
from liveimg.squashfs.frag_table import FragmentTable
from liveimg.tree import OPEN_FLAGS, Readable

#: A block of a file: its bytes, or None when it lies entirely in a hole.
Chunk = bytes | bytearray | None
ReadAt = Callable[[int, int], bytes | None]


def _data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The file's data ranges below ``size``, from SEEK_DATA/SEEK_HOLE (one range if unsupported)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole up to the end
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, size
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def file_blocks(fd: int, size: int, block_size: int, where: str) -> Iterator[Chunk]:
    """Blocks of an open file, reading only what SEEK_DATA reports as data.

    Raises :class:`InvalidImage` when the file turns out shorter than ``size``.
    """
    ranges = _data_ranges(fd, size)
    current = next(ranges, None)
    for start in range(0, size, block_size):
        end = min(start + block_size, size)
        while current is not None and current[1] <= start:
            current = next(ranges, None)
        if current is None or current[0] >= end:
            yield None
            continue
        if current[0] <= start and current[1] >= end:
            chunk: bytes | bytearray = os.pread(fd, end - start, start)
            if len(chunk) != end - start:
                raise InvalidImage(f"{where}: file shrank while being packed (expected {size} bytes)")
            yield chunk
            continue
        # Part data, part hole: read only the data pieces into a zeroed buffer.
        buf = bytearray(end - start)
        view = memoryview(buf)
        rng: tuple[int, int] | None = current
        while rng is not None and rng[0] < end:
            lo, hi = max(rng[0], start), min(rng[1], end)
            got = os.preadv(fd, [view[lo - start : hi - start]], lo)
            if got != hi - lo:
                raise InvalidImage(f"{where}: file shrank while being packed (expected {size} bytes)")
            if rng[1] > end:
                break
            rng = next(ranges, None)
        current = rng
        yield buf


def stream_blocks(stream: Readable, size: int, block_size: int, where: str) -> Iterator[Chunk]:
    """Blocks read sequentially from a binary stream of ``size`` bytes."""
    for start in range(0, size, block_size):
        want = min(block_size, size - start)
        chunk = stream.read(want)
        while len(chunk) < want:
            more = stream.read(want - len(chunk))
            if not more:
                raise InvalidImage(f"{where}: stream ended after {start + len(chunk)} of {size} bytes")
            chunk += more
        yield chunk
    if stream.read(1):
        raise InvalidImage(f"{where}: stream is longer than the {size} bytes announced")


def callback_blocks(read_at: ReadAt, size: int, block_size: int, where: str) -> Iterator[Chunk]:
    """Blocks from ``read_at(offset, length)``; it may return None for a hole."""
    for start in range(0, size, block_size):
        want = min(block_size, size - start)
        chunk = read_at(start, want)
        if chunk is not None and len(chunk) != want:
            raise InvalidImage(f"{where}: read callback gave {len(chunk)} bytes at {start}, expected {want}")
        yield chunk


class BlockProcessor:
    def __init__(
        self,
        compressor: Compressor,
        writer: BlockWriter,
        fragments: FragmentTable,
        *,
        workers: int,
        use_fragments: bool,
        always_fragments: bool,
        stage: StageProgress | None = None,
        cache: BlockCache | None = None,
    ) -> None:
        self.compressor = compressor
        self.cache = cache
        self.writer = writer
        self.fragments = fragments
        self.block_size = compressor.block_size
        self.use_fragments = use_fragments
        self.always_fragments = always_fragments
        self.stage = stage
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="squashfs-compress")
        # Deep enough that the workers keep busy while the main thread waits for I/O or for the
        # CPU on a loaded machine (8w+8 blocks at 128 KiB), but at most about 4 MiB of raw data per
        # worker for big blocks, so that memory stays bounded whatever the block size.
        self._max_pending = max(2 * workers + 2, min(8 * workers + 8, (4 << 20) * workers // self.block_size))
        self._pending: deque[tuple[object, ...]] = deque()
        self._zero = bytes(self.block_size)
        self._frag_buf = bytearray()
        self._frag_seen: dict[tuple[int, bytes], tuple[int, int]] = {}
        self._frag_count = 0
        self.sparse_blocks = 0
        #: CPU seconds the workers spent inside the codec (for benchmarks: the codec limit).
        self.codec_seconds = 0.0
        self._codec_lock = threading.Lock()

    def _compress(self, raw: bytes) -> bytes | None:
        """The block compressed (None: stored as it is), in a worker; from the cache when it has it."""
        if self.cache is not None:
            return self.cache.compress(raw, self._compress_now)
        return self._compress_now(raw)

    def _compress_now(self, raw: bytes) -> bytes | None:
        started = time.thread_time()
        packed = self.compressor.compress(raw)
        spent = time.thread_time() - started
        with self._codec_lock:
            self.codec_seconds += spent
        return packed

    # --- the ordered queue ---------------------------------------------------------------

    def _queue(self, op: tuple[object, ...]) -> None:
        self._pending.append(op)
        while self._pending and (len(self._pending) > self._max_pending or self._head_ready()):
            self._retire(self._pending.popleft())

    def _head_ready(self) -> bool:
        head = self._pending[0]
        fut = head[-1]
        return not isinstance(fut, Future) or fut.done()

    def _retire(self, op: tuple[object, ...]) -> None:
        kind = op[0]
        if kind == "block":
            _, data, index, raw, fut = op
            assert isinstance(data, FileData) and isinstance(index, int) and isinstance(fut, Future)
            packed = fut.result()
            self.writer.write_block(data, index, raw, packed)  # type: ignore[arg-type]
            if self.stage is not None:
                self.stage.advance(len(raw))  # type: ignore[arg-type]
        elif kind == "begin":
            assert isinstance(op[1], FileData)
            self.writer.begin_file(op[1])
        elif kind == "end":
            assert isinstance(op[1], FileData)
            self.writer.end_file(op[1])
        elif kind == "frag":
            _, raw, fut = op
            assert isinstance(raw, bytes) and isinstance(fut, Future)
            start, size = self.writer.write_fragment(raw, fut.result())
            self.fragments.append(start, size)
        elif kind == "progress" and self.stage is not None:
            assert isinstance(op[1], int)
            self.stage.advance(op[1])

    def drain(self) -> None:
        while self._pending:
            self._retire(self._pending.popleft())

    # --- files and fragments -------------------------------------------------------------

    def add_file(self, size: int, chunks: Iterable[Chunk]) -> FileData:
        """Pack one file's data (its blocks in order) and return where it goes.

        As in mksquashfs, an all-zero tail is stored as a hole rather than in a fragment,
        and ``sparse`` counts the bytes in holes (at most ``size - 1``).
        """
        bs = self.block_size
        nblocks = -(-size // bs)
        tail_len = size % bs
        frag_tail = tail_len != 0 and self.use_fragments and (size < bs or self.always_fragments)
        data = FileData(size, block_sizes_array(nblocks))
        self._queue(("begin", data))
        tail: bytes | None = None
        count = 0
        for index, chunk in enumerate(chunks):
            count += 1
            length = bs if index < nblocks - 1 or tail_len == 0 else tail_len
            if chunk is None or (chunk == self._zero if length == bs else chunk.count(0) == length):
                data.sparse += length
                self.sparse_blocks += 1
                self._queue(("progress", length))
                continue
            raw = bytes(chunk) if isinstance(chunk, bytearray) else chunk
            if frag_tail and index == nblocks - 1:
                tail = raw
                continue
            self._queue(("block", data, index, raw, self._pool.submit(self._compress, raw)))
        if count != nblocks:
            raise InvalidImage(f"got {count} blocks for a file of {size} bytes, expected {nblocks}")
        if tail is not None:
            data.block_sizes.pop()
        data.sparse = min(data.sparse, max(size - 1, 0))
        self._queue(("end", data))
        if tail is not None:
            self._add_fragment(data, tail)
            self._queue(("progress", len(tail)))
        return data

    def _add_fragment(self, data: FileData, tail: bytes) -> None:
        key = (len(tail), hashlib.blake2b(tail, digest_size=16).digest())
        seen = self._frag_seen.get(key)
        if seen is not None:
            data.fragment, data.offset = seen
            return
        if len(self._frag_buf) + len(tail) > self.block_size:
            self.flush_fragment()
        data.fragment, data.offset = self._frag_count, len(self._frag_buf)
        self._frag_buf += tail
        self._frag_seen[key] = (data.fragment, data.offset)

    def flush_fragment(self) -> None:
        if not self._frag_buf:
            return
        raw = bytes(self._frag_buf)
        self._frag_buf.clear()
        self._frag_count += 1
        self._queue(("frag", raw, self._pool.submit(self._compress, raw)))

    def finish(self) -> None:
        self.flush_fragment()
        self.drain()
        self._pool.shutdown()

    def abort(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


def block_sizes_array(count: int) -> array[int]:
    return array("I", bytes(4 * count))


def open_for_reading(path: str | os.PathLike[str], where: str) -> int:
    """An fd on the regular file ``path``; :class:`InvalidImage` for anything else (never opened)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImage(f"{where}: not a regular file")
        return os.open(path, OPEN_FLAGS)
    except OSError as exc:
        raise HostError(f"cannot read {where}: {exc.strerror}") from exc
