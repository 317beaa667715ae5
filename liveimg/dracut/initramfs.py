"""Read an initramfs the way the kernel does: a chain of cpio archives, each plain or compressed.

An initramfs file is a sequence of *segments* (``init/initramfs.c``, ``unpack_to_rootfs``):

* NUL bytes between segments are skipped;
* a segment that starts with ``0`` at an offset that is a multiple of 4 is an uncompressed
  newc cpio archive (``070701`` or ``070702``); it ends after its ``TRAILER!!!`` entry and the
  padding to 4 bytes.  This is how dracut stores early microcode in front of the main image;
* any other segment is a compressed stream, recognised by its magic number (the kernel's
  ``lib/decompress.c``): gzip ``1f 8b``, bzip2 ``BZh``, lzma ``5d 00 00``, xz ``fd 37 7a 58 5a 00``,
  lz4 (legacy frame) ``02 21 4c 18``, zstd ``28 b5 2f fd``; lzo is known but not supported here.
  Its decompressed content is itself one or more newc archives, each ending on its trailer.

Later segments are unpacked over earlier ones, so a path given twice takes its last value.

The reader finds the segment boundaries itself (by walking newc headers, and by asking each
decompressor where its stream ended), decompresses each compressed segment once into a
temporary file, and lets libarchive (libarchive-c) read the entries of every archive.
Anything the kernel would refuse -- an unknown magic, a truncated archive, a cpio header
with bad hex, junk inside a compressed stream -- is an :class:`~liveimg.errors.InvalidImage`
that says at which offset.
"""

from __future__ import annotations

import bz2
import contextlib
import importlib
import io
import logging
import lzma
import os
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

import libarchive

from liveimg.dracut.cpio import HEADER_SIZE, MAX_NAME, NEWC_CRC_MAGIC, NEWC_MAGIC, TRAILER, Kind
from liveimg.errors import HostError, InvalidImage, InvalidOptions

log = logging.getLogger(__name__)

#: Refuse to unpack more than this from one initramfs (a guard against decompression bombs).
DEFAULT_MAX_UNPACKED = 8 << 30

_CHUNK = 1 << 20
# Input fed to decoders without an output bound (zstd, lz4) per call, so that a
# pathological stream cannot produce more than a few hundred MiB in one step.
_SMALL_CHUNK = 8 << 10

MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x1f\x9e", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x89LZO", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_LZ4_LEGACY_BLOCK = 8 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect_compression(head: bytes) -> str | None:
    """The compression whose magic number starts ``head``, ``"none"`` for a newc cpio, or None."""
    if head[:6] in (NEWC_MAGIC, NEWC_CRC_MAGIC):
        return "none"
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    return None


@dataclass(frozen=True)
class Segment:
    """One stretch of the file: a plain cpio archive, or a compressed stream of archives."""

    index: int
    offset: int
    length: int
    compression: str
    unpacked: int
    archives: int


@dataclass(frozen=True)
class Member:
    """One entry of the initramfs, as the kernel would create it.

    ``path`` is relative (``usr/bin/curl``); ``mode`` holds the permission bits only;
    ``target`` is a symbolic link's target or the earlier name of a hard link.
    """

    path: str
    kind: Kind
    mode: int
    size: int
    uid: int
    gid: int
    mtime: int
    target: str | None
    segment: int
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node

    def describe(self) -> str:
        """One ``ls -l``-like line: type and mode, owner, size, path, link target."""
        letter = {Kind.DIR: "d", Kind.SYMLINK: "l", Kind.CHAR: "c", Kind.BLOCK: "b", Kind.FIFO: "p"}
        line = f"{letter.get(self.kind, 's' if self.kind is Kind.SOCKET else '-')}{stat.filemode(self.mode)[1:]}"
        size = f"{self.rdev[0]}, {self.rdev[1]}" if self.kind in (Kind.CHAR, Kind.BLOCK) else str(self.size)
        line += f" {self.uid:>5} {self.gid:>5} {size:>10} {self.path}"
        if self.kind is Kind.SYMLINK:
            line += f" -> {self.target}"
        elif self.kind is Kind.HARDLINK:
            line += f" link to {self.target}"
        return line


class _Source(Protocol):
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class _Archive:
    source: BinaryIO
    start: int
    end: int
    segment: int
    where: str  # for messages: "offset N" or "offset N of the xz stream at offset M"


class Initramfs:
    """An open initramfs: its segments and members.  Use as a context manager.

    ``Initramfs(path)`` scans the whole file at once; decompressed content goes to
    temporary files (in ``tmpdir``) that are deleted by :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_unpacked: int = DEFAULT_MAX_UNPACKED,
                 tmpdir: str | os.PathLike[str] | None = None) -> None:  # fmt: skip
        self.path = Path(path)
        self.max_unpacked = max_unpacked
        self._tmpdir = tmpdir
        self._stack = contextlib.ExitStack()
        self._archives: list[_Archive] = []
        self._unpacked = 0
        try:
            self._file: BinaryIO = self._stack.enter_context(open(self.path, "rb"))  # noqa: SIM115
        except FileNotFoundError:
            raise InvalidImage(f"initramfs {self.path} does not exist") from None
        except IsADirectoryError:
            raise InvalidImage(f"initramfs {self.path} is a directory, not a file") from None
        try:
            self.segments: tuple[Segment, ...] = tuple(self._scan())
            self.members: tuple[Member, ...] = tuple(self._read_members())
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Initramfs:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    # --- queries ------------------------------------------------------------------------

    def files(self) -> dict[str, Member]:
        """The final view: each path mapped to its last member, as after unpacking."""
        return {m.path: m for m in self.members}

    def find(self, name: str) -> list[Member]:
        """Members whose path is ``name`` or ends with ``/name`` (e.g. ``sbin/livenetroot``)."""
        name = name.strip("/")
        return [m for m in self.files().values() if m.path == name or m.path.endswith("/" + name)]

    def read(self, path: str, *, limit: int = 64 << 20) -> bytes:
        """The content of the regular file ``path`` (its last version); at most ``limit`` bytes."""
        want = path.strip("/")
        member = self.files().get(want)
        if member is None:
            raise InvalidOptions(f"{want} is not in the initramfs {self.path}")
        if member.kind is Kind.HARDLINK and member.target:
            want = member.target
        elif member.kind is not Kind.FILE:
            raise InvalidOptions(f"{want} in the initramfs {self.path} is a {member.kind}, not a regular file")
        for archive in reversed([a for a in self._archives if a.segment == member.segment]):
            with _libarchive(archive) as reader:
                for entry in reader:
                    if _clean(_text(entry.pathname)) != want:
                        continue
                    if entry.size > limit:
                        raise InvalidOptions(f"{want} is {entry.size} bytes, more than the limit of {limit}")
                    return b"".join(entry.get_blocks())
        raise InvalidImage(f"{want} is listed but could not be read back from {self.path}")

    # --- scanning -----------------------------------------------------------------------

    def _scan(self) -> Iterator[Segment]:
        f = self._file
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise InvalidImage(f"initramfs {self.path} is empty")
        pos = 0
        index = 0
        while True:
            pos = _skip_zeros(f, pos)
            f.seek(pos)
            head = f.read(8)
            if not head:
                break
            kind = detect_compression(head)
            if kind == "none" and pos % 4 == 0:
                end = _walk_newc(f, pos, size, f"offset {pos} of {self.path}")
                self._archives.append(_Archive(f, pos, end, index, f"offset {pos}"))
                yield Segment(index, pos, end - pos, "none", end - pos, 1)
                pos = end
            elif kind is None or kind == "none":
                what = "a cpio archive that is not 4-byte aligned" if kind else f"unknown data {head[:6].hex(' ')}"
                raise InvalidImage(
                    f"{self.path}: {what} at offset {pos}; the kernel would stop there "
                    f"(invalid magic at start of compressed archive)"
                )
            elif kind == "lzo":
                raise InvalidImage(f"{self.path}: lzo-compressed segment at offset {pos} is not supported")
            else:
                tmp = self._stack.enter_context(tempfile.TemporaryFile(dir=self._tmpdir))  # noqa: SIM115
                consumed, unpacked = self._decompress(kind, pos, tmp)
                archives = self._split_unpacked(tmp, unpacked, index, f"the {kind} stream at offset {pos}")
                yield Segment(index, pos, consumed, kind, unpacked, archives)
                pos += consumed
            index += 1
        if not self._archives:
            raise InvalidImage(f"initramfs {self.path} holds no cpio archive")

    def _decompress(self, kind: str, start: int, out: BinaryIO) -> tuple[int, int]:
        f = self._file
        f.seek(start)
        written = 0

        def sink(data: bytes) -> None:
            nonlocal written
            written += len(data)
            if self._unpacked + written > self.max_unpacked:
                raise InvalidImage(
                    f"{self.path}: unpacks to more than {self.max_unpacked} bytes; refusing (a corrupt "
                    f"or hostile initramfs?)"
                )
            out.write(data)

        try:
            consumed = _DECODERS[kind](f, sink)
        except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError, RuntimeError) as exc:
            if isinstance(exc, InvalidImage):
                raise
            raise InvalidImage(f"{self.path}: the {kind} stream at offset {start} is corrupt: {exc}") from None
        self._unpacked += written
        out.flush()
        return consumed, written

    def _split_unpacked(self, tmp: BinaryIO, size: int, index: int, where: str) -> int:
        pos = 0
        count = 0
        while True:
            pos = _skip_zeros(tmp, pos)
            if pos >= size:
                break
            tmp.seek(pos)
            head = tmp.read(6)
            if head == b"070707":
                raise InvalidImage(
                    f"{self.path}: old-format (odc) cpio in {where}; the kernel reads only newc (cpio -H newc)"
                )
            if head not in (NEWC_MAGIC, NEWC_CRC_MAGIC) or pos % 4:
                raise InvalidImage(
                    f"{self.path}: junk within {where}, at unpacked offset {pos} "
                    f"({head.hex(' ')}; expected a newc cpio header at a 4-byte boundary)"
                )
            end = _walk_newc(tmp, pos, size, f"unpacked offset {pos} of {where} in {self.path}")
            self._archives.append(_Archive(tmp, pos, end, index, f"{where}, unpacked offset {pos}"))
            pos = end
            count += 1
        if not count:
            raise InvalidImage(f"{self.path}: {where} holds no cpio archive")
        return count

    def _read_members(self) -> Iterator[Member]:
        for archive in self._archives:
            count = 0
            try:
                with _libarchive(archive) as reader:
                    for entry in reader:
                        count += 1
                        yield _member(entry, archive.segment)
            except libarchive.ArchiveError as exc:
                raise InvalidImage(
                    f"{self.path}: libarchive cannot read the cpio archive at {archive.where}: {exc}"
                ) from None
            expected = _count_newc(archive)
            if count != expected:
                raise InvalidImage(
                    f"{self.path}: the cpio archive at {archive.where} has {expected} entries but libarchive "
                    f"read {count}"
                )


#: An initramfs to read: a path, or one already open (see :func:`opened`).
Source = Initramfs | str | os.PathLike[str]


@contextlib.contextmanager
def opened(source: Source) -> Iterator[Initramfs]:
    """``source`` itself when it is an open :class:`Initramfs` (left open: its owner closes it),
    else the file at ``source``, scanned and closed on exit.

    Scanning decompresses the whole initramfs (seconds with xz): code that reads one initramfs
    several times opens it once and hands the open one around.
    """
    if isinstance(source, Initramfs):
        yield source
        return
    with Initramfs(source) as ird:
        yield ird


def _member(entry: libarchive.ArchiveEntry, segment: int) -> Member:
    mode = entry.mode
    target: str | None = None
    if entry.islnk:
        kind = Kind.HARDLINK
        target = _clean(_text(entry.linkpath))
    elif entry.issym:
        kind = Kind.SYMLINK
        target = _text(entry.linkpath)
    else:
        kinds = {stat.S_IFREG: Kind.FILE, stat.S_IFDIR: Kind.DIR, stat.S_IFCHR: Kind.CHAR,
                 stat.S_IFBLK: Kind.BLOCK, stat.S_IFIFO: Kind.FIFO, stat.S_IFSOCK: Kind.SOCKET}  # fmt: skip
        kind = kinds.get(stat.S_IFMT(mode), Kind.FILE)
    return Member(
        path=_clean(_text(entry.pathname)),
        kind=kind,
        mode=stat.S_IMODE(mode),
        size=entry.size or 0,
        uid=entry.uid,
        gid=entry.gid,
        mtime=int(entry.mtime or 0),
        target=target,
        segment=segment,
        rdev=(entry.rdevmajor, entry.rdevminor) if kind in (Kind.CHAR, Kind.BLOCK) else (0, 0),
    )


def _text(value: str | bytes | None) -> str:
    # libarchive-c hands back bytes for names that are not UTF-8.
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value or ""


def _clean(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/".join(parts) or "."


class _Slice(io.RawIOBase):
    """A read-only, seekable window ``[start, end)`` of another file, for libarchive."""

    def __init__(self, source: BinaryIO, start: int, end: int) -> None:
        self._source = source
        self._start = start
        self._end = end
        self._pos = start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos - self._start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: self._start, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = min(max(self._start, base + offset), self._end)
        return self._pos - self._start

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._end - self._pos)
        if want <= 0:
            return 0
        self._source.seek(self._pos)
        got = self._source.readinto(view[:want])  # type: ignore[attr-defined]
        self._pos += got
        return int(got)


@contextlib.contextmanager
def _libarchive(archive: _Archive) -> Iterator[libarchive.read.ArchiveRead]:
    stream = _Slice(archive.source, archive.start, archive.end)
    with libarchive.stream_reader(stream, format_name="cpio", filter_name="none", block_size=1 << 20) as reader:
        yield reader


# --- newc walking ------------------------------------------------------------------------


def _skip_zeros(f: _Source, pos: int) -> int:
    f.seek(pos)
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return pos
        stripped = chunk.lstrip(b"\0")
        pos += len(chunk) - len(stripped)
        if stripped:
            return pos


def _hex_fields(head: bytes, where: str) -> list[int]:
    try:
        return [int(head[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    except ValueError:
        raise InvalidImage(f"corrupt cpio header at {where}: {head[:40]!r}") from None


def _walk_newc(f: _Source, start: int, size: int, where: str) -> int:
    """Offset just after the trailer (and its padding) of the newc archive at ``start``."""
    pos = start
    while True:
        f.seek(pos)
        head = f.read(HEADER_SIZE)
        here = where if pos == start else f"{where} (entry at {pos})"
        if len(head) < HEADER_SIZE:
            raise InvalidImage(f"truncated cpio archive: header cut short at {here}")
        if head[:6] not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            if head[:6] == b"070707":
                raise InvalidImage(f"old-format (odc) cpio at {here}; the kernel reads only newc (cpio -H newc)")
            raise InvalidImage(f"corrupt cpio archive: no newc magic at {here} (found {head[:6]!r})")
        fields = _hex_fields(head, here)
        filesize, namesize = fields[6], fields[11]
        if not 1 <= namesize <= MAX_NAME:
            raise InvalidImage(f"corrupt cpio header at {here}: name size {namesize}")
        name = f.read(namesize)
        if len(name) < namesize:
            raise InvalidImage(f"truncated cpio archive: name cut short at {here}")
        if not name.endswith(b"\0"):
            raise InvalidImage(f"corrupt cpio header at {here}: name is not NUL-terminated")
        data_at = pos + HEADER_SIZE + namesize
        data_at += -data_at % 4
        end = data_at + filesize
        if filesize and end > size:
            raise InvalidImage(f"truncated cpio archive: {name[:-1]!r} at {here} needs {filesize} bytes of data")
        pos = end + (-end % 4)
        if name[:-1] == TRAILER.encode():
            return min(pos, size)


def _count_newc(archive: _Archive) -> int:
    """Entries (without the trailer) of an archive :func:`_walk_newc` already validated."""
    f = archive.source
    pos = archive.start
    count = 0
    while pos < archive.end:
        f.seek(pos)
        head = f.read(HEADER_SIZE)
        fields = _hex_fields(head, archive.where)
        name = f.read(fields[11])[:-1]
        if name == TRAILER.encode():
            break
        count += 1
        data_at = pos + HEADER_SIZE + fields[11]
        data_at += -data_at % 4
        pos = data_at + fields[6]
        pos += -pos % 4
    return count


# --- decompressors -----------------------------------------------------------------------
# Each takes the file positioned at the stream's first byte and a sink for the output, and
# returns how many input bytes the stream occupied.

Sink = Callable[[bytes], None]


def _bounded(f: BinaryIO, sink: Sink, make: Callable[[], lzma.LZMADecompressor | bz2.BZ2Decompressor]) -> int:
    dec = make()
    fed = 0
    while not dec.eof:
        data = f.read(_CHUNK) if dec.needs_input else b""
        if dec.needs_input and not data:
            raise EOFError("the stream ends before its end marker (truncated)")
        fed += len(data)
        sink(dec.decompress(data, _CHUNK))
        while not dec.eof and not dec.needs_input:
            sink(dec.decompress(b"", _CHUNK))
    return fed - len(dec.unused_data)


def _xz(f: BinaryIO, sink: Sink) -> int:
    return _bounded(f, sink, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ))


def _lzma(f: BinaryIO, sink: Sink) -> int:
    return _bounded(f, sink, lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE))


def _bzip2(f: BinaryIO, sink: Sink) -> int:
    return _bounded(f, sink, bz2.BZ2Decompressor)


def _gzip(f: BinaryIO, sink: Sink) -> int:
    dec = zlib.decompressobj(wbits=31)
    fed = 0
    pending = b""
    while not dec.eof:
        if not pending:
            pending = f.read(_CHUNK)
            if not pending:
                raise EOFError("the stream ends before its end marker (truncated)")
            fed += len(pending)
        sink(dec.decompress(pending, _CHUNK))
        pending = dec.unconsumed_tail
    return fed - len(dec.unused_data) - len(pending)


def _zstd(f: BinaryIO, sink: Sink) -> int:
    zstandard = optional_module("zstandard", "reading a zstd-compressed initramfs needs")
    start = f.tell()
    fed = 0
    # Consecutive frames form one segment (zstd -T and pzstd may write several).
    while True:
        dec = zstandard.ZstdDecompressor().decompressobj()
        while not dec.eof:
            data = f.read(_SMALL_CHUNK)
            if not data:
                raise EOFError("the stream ends before the end of its frame (truncated)")
            fed += len(data)
            sink(dec.decompress(data))
        fed -= len(dec.unused_data)
        f.seek(start + fed)
        if f.read(4) != _ZSTD_MAGIC:
            return fed
        f.seek(start + fed)


def _lz4(f: BinaryIO, sink: Sink) -> int:
    """The legacy lz4 frame (``lz4 -l``), the only lz4 format the kernel unpacks.

    After the magic come blocks, each a little-endian 32-bit compressed size and an lz4
    block of at most 8 MiB once decompressed.  The format has no end marker: like the
    kernel, the stream ends at the end of the file, at a zero word (padding), or at a size
    no block can have (another segment's magic); a repeated magic continues the stream.
    """
    lz4_block = optional_module("lz4.block", "reading an lz4-compressed initramfs needs")
    bound = _LZ4_LEGACY_BLOCK + _LZ4_LEGACY_BLOCK // 255 + 16
    consumed = 4
    f.read(4)
    while True:
        word = f.read(4)
        if len(word) < 4:
            return consumed
        if word == _LZ4_LEGACY_MAGIC:
            consumed += 4
            continue
        size = int.from_bytes(word, "little")
        if size == 0 or size > bound:
            return consumed
        block = f.read(size)
        if len(block) < size:
            raise EOFError("the stream ends inside a block (truncated)")
        try:
            sink(lz4_block.decompress(block, uncompressed_size=_LZ4_LEGACY_BLOCK))
        except lz4_block.LZ4BlockError as exc:
            raise ValueError(str(exc)) from None
        consumed += 4 + size


def optional_module(name: str, purpose: str) -> Any:
    """Import an optional codec module; if it is missing, a :class:`HostError` says what needs it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        package = name.split(".", maxsplit=1)[0]
        raise HostError(f"{purpose} the Python package {package} (pip install {package})") from None


_DECODERS: dict[str, Callable[[BinaryIO, Sink], int]] = {
    "gzip": _gzip,
    "bzip2": _bzip2,
    "lzma": _lzma,
    "xz": _xz,
    "lz4": _lz4,
    "zstd": _zstd,
}


@dataclass(frozen=True)
class NewcIndex:
    """The headers of one newc archive: its paths, its highest inode number, where its trailer is."""

    names: tuple[str, ...]
    max_ino: int
    trailer_at: int
    end: int


def newc_index(path: str | os.PathLike[str], start: int = 0) -> NewcIndex:
    """Index the uncompressed newc archive at offset ``start`` of ``path`` (headers only)."""
    src = Path(path)
    names: list[str] = []
    max_ino = 0
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        end = _walk_newc(f, start, size, f"offset {start} of {src}")
        pos = start
        while True:
            f.seek(pos)
            head = f.read(HEADER_SIZE)
            fields = _hex_fields(head, f"offset {pos} of {src}")
            name = f.read(fields[11])[:-1].decode("utf-8", "surrogateescape")
            if name == TRAILER:
                return NewcIndex(tuple(names), max_ino, pos, end)
            names.append(_clean(name))
            max_ino = max(max_ino, fields[0])
            data_at = pos + HEADER_SIZE + fields[11]
            data_at += -data_at % 4
            pos = data_at + fields[6]
            pos += -pos % 4


def plain_segments(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """``(start, end)`` of each archive of an initramfs made only of uncompressed newc archives
    (what ``dracut --no-compress`` writes); anything else is an :class:`InvalidImage`."""
    src = Path(path)
    found: list[tuple[int, int]] = []
    with open(src, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while True:
            pos = _skip_zeros(f, pos)
            if pos >= size:
                break
            f.seek(pos)
            head = f.read(6)
            if head not in (NEWC_MAGIC, NEWC_CRC_MAGIC) or pos % 4:
                raise InvalidImage(
                    f"{src}: expected an uncompressed newc cpio archive at offset {pos}, found {head.hex(' ')}"
                )
            end = _walk_newc(f, pos, size, f"offset {pos} of {src}")
            found.append((pos, end))
            pos = end
    if not found:
        raise InvalidImage(f"{src} holds no cpio archive")
    return found


def list_initramfs(path: str | os.PathLike[str]) -> tuple[tuple[Segment, ...], tuple[Member, ...]]:
    """The segments and members of the initramfs at ``path``."""
    with Initramfs(path) as ird:
        return ird.segments, ird.members
