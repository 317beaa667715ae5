"""The squashfs writer: the layers put together in libsquashfs's order.

Start: compressor -> placeholder superblock (and compressor options) -> block writer ->
fragment table -> block processor.  Entries are then added one by one (``add_file``
packs the data at once, so nothing is staged); :meth:`SquashfsWriter.finish` drains the
block processor, serializes the tree (inode table, then directory table), writes the
fragment, export, id and xattr tables in the order the kernel checks them (each table's
index must end where the next table starts), then the real superblock, and pads the
image to 4 KiB.  The image is written through :class:`~liveimg.staging.AtomicOutput`: a
temporary file beside the destination, flushed and renamed when complete, removed on any error.

Times.  squashfs stores an inode's mtime as an unsigned 32-bit count of seconds: a time
before 1970 or after 2106-02-07 is clamped into that range with a warning naming the file
(mksquashfs 4.5 silently wraps it: -5 becomes 2106, 2^32 + 5 becomes 1970).  When
``$SOURCE_DATE_EPOCH`` is set, every inode time later than it is clamped to it, and it is
the superblock's time unless ``mkfs_time`` says otherwise: reproducible-builds.org's
clamping convention, which mksquashfs follows since 4.4 (its ``clamping`` default, documented
in 4.7) and :func:`pack_file` always followed.  ``all_time`` overrides both.

Entries of the entry model (:mod:`liveimg.tree`) go in through :meth:`SquashfsWriter.add`.
:func:`pack` packs a directory tree read by :class:`~liveimg.tree.HostScan`, through directory
file descriptors (``O_NOFOLLOW`` opens relative to the directory being read), so that it never
follows a symlink it did not record as one, whatever changes under it; only regular files and
directories are opened.  Entries are sorted by name, hard links detected by (device, inode); the
image being written (its temporary file, and the previous image at the destination) is never packed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from liveimg.cache import Cache
from liveimg.errors import HostError, InternalError, InvalidImage, InvalidOptions, LiveImgError
from liveimg.progress import Progress, StageProgress
from liveimg.squashfs.block_cache import BlockCache
from liveimg.squashfs.block_processor import (
    BlockProcessor,
    Chunk,
    ReadAt,
    callback_blocks,
    file_blocks,
    open_for_reading,
    stream_blocks,
)
from liveimg.squashfs.block_writer import BlockWriter, FileData, Output
from liveimg.squashfs.compressor import Compressor, make_compressor
from liveimg.squashfs.constants import (
    MAX_SYMLINK_LEN,
    SQUASHFS_DEVBLK_SIZE,
    SQUASHFS_INVALID_BLK,
    SQUASHFS_INVALID_XATTR,
    Flags,
    InodeType,
)
from liveimg.squashfs.dir_writer import DirChild, DirWriter
from liveimg.squashfs.export_table import export_table_bytes
from liveimg.squashfs.frag_table import FragmentTable
from liveimg.squashfs.fstree import FsTree, Node, split_path
from liveimg.squashfs.id_table import IdTable
from liveimg.squashfs.inode import DevInode, DirInode, Inode, IpcInode, RegInode, SymlinkInode, encode_dev
from liveimg.squashfs.meta_writer import MetaWriter, build_table, encode_meta_block
from liveimg.squashfs.options import SquashfsOptions, SquashfsResult, source_date_epoch
from liveimg.squashfs.superblock import Superblock
from liveimg.squashfs.xattr import XattrSet, XattrWriter, normalize
from liveimg.staging import AtomicOutput
from liveimg.tree import Entry, Excluded, HostScan, Kind, OpenFile, Readable, display, tree_size

log = logging.getLogger(__name__)

#: What to do about extended attributes that cannot be read.
_XATTR_HINT = "--no-xattrs packs without any"


PathLike = str | bytes
FileSource = Path | os.PathLike[str] | Readable | ReadAt | OpenFile
Xattrs = Iterable[tuple[bytes, bytes]] | dict[bytes, bytes]

_U32 = 1 << 32


class SquashfsWriter:
    """Build a squashfs image entry by entry.

    >>> with SquashfsWriter(dest, SquashfsOptions(comp="zstd")) as w:   # doctest: +SKIP
    ...     w.add_directory("LiveOS", mode=0o755)
    ...     w.add_file("LiveOS/rootfs.img", Path("rootfs.img"))

    Leaving the ``with`` block normally calls :meth:`finish`; an exception calls
    :meth:`abort` (nothing is left at ``dest``).  Attributes given to ``add_*`` are
    adjusted by the options (``all_root``, ``force_uid``, ``all_time`` ...).  With a ``cache``,
    compressed blocks are reused from it and stored in it (:mod:`liveimg.squashfs.block_cache`):
    the image is the same bytes either way.
    """

    def __init__(
        self,
        dest: Path | str,
        options: SquashfsOptions | None = None,
        progress: Progress | None = None,
        *,
        total_bytes: int | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.options = (options or SquashfsOptions()).validate()
        self.dest = Path(dest)
        self.started = time.monotonic()
        self.mkfs_time = self.options.effective_mkfs_time()
        #: Inode times later than this are clamped to it ($SOURCE_DATE_EPOCH; not with all_time).
        self.epoch = source_date_epoch() if self.options.all_time is None else None
        self.compressor: Compressor = make_compressor(self.options)
        self.block_cache = BlockCache(cache, self.compressor) if cache is not None else None
        self.tree = FsTree(self._mtime(None, ""))
        self._progress = progress or Progress()
        self._stage_cm = self._progress.stage("squashfs", total=total_bytes, unit="bytes")
        self._stage: StageProgress | None = None
        self._output = AtomicOutput(self.dest)
        self._closed = False
        try:
            self._tmp = self._output.create()
            self.out = Output(self._tmp, str(self.dest))
            self._stage = self._stage_cm.__enter__()
            # Placeholder superblock and the compressor options; the real superblock comes last.
            self.out.write(bytes(Superblock.SIZE))
            comp_opts = self.compressor.options_bytes()
            if comp_opts is not None:
                self.out.write(encode_meta_block(comp_opts, None))
            self._comp_opts = comp_opts is not None
            self.block_writer = BlockWriter(self.out)
            self.fragments = FragmentTable()
            self.processor = BlockProcessor(
                self.compressor,
                self.block_writer,
                self.fragments,
                workers=self.options.workers(),
                use_fragments=not self.options.no_fragments,
                always_fragments=self.options.always_use_fragments,
                stage=self._stage,
                cache=self.block_cache,
            )
        except BaseException:
            self._cleanup()
            raise

    @property
    def temp_path(self) -> Path:
        """Where the image is written until :meth:`finish` renames it to ``dest``."""
        return self._tmp

    # --- context manager -----------------------------------------------------------------

    def __enter__(self) -> SquashfsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if not self._closed:
                self.finish()
        else:
            self.abort(exc)

    # --- attributes ----------------------------------------------------------------------

    def _node(  # noqa: PLR0917
        self, kind: InodeType, mode: int, uid: int, gid: int, mtime: int | None, xattrs: Xattrs, where: str
    ) -> Node:
        o = self.options
        if o.all_root:
            uid = gid = 0
        if o.force_uid is not None:
            uid = o.force_uid
        if o.force_gid is not None:
            gid = o.force_gid
        for name, value in (("uid", uid), ("gid", gid)):
            if not 0 <= value < _U32:
                raise InvalidImage(f"{where}: {name} {value} does not fit squashfs's 32 bits")
        pairs = xattrs.items() if isinstance(xattrs, dict) else xattrs
        kept: XattrSet = () if o.no_xattrs else normalize(pairs, where)
        return Node(kind, mode & 0o7777, uid, gid, self._mtime(mtime, where), kept)

    def _mtime(self, mtime: int | None, where: str) -> int:
        """The stored time: ``all_time``; else ``mtime`` (None: the image's time) clamped to the epoch and to u32."""
        if self.options.all_time is not None:
            return self.options.all_time
        when = self.mkfs_time if mtime is None else int(mtime)
        if self.epoch is not None and when > self.epoch:
            when = self.epoch
        if not 0 <= when < _U32:
            stored = 0 if when < 0 else _U32 - 1
            log.warning(
                "%s: modification time %d is outside squashfs's range (1970 to 2106), stored as %d",
                where, when, stored,
            )  # fmt: skip
            when = stored
        return when

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidOptions("the squashfs writer is already finished")

    # --- entries -------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """Add one :class:`~liveimg.tree.Entry` (the writer as a sink of the entry model).

        A later name of an inode (``entry.hardlink``) becomes a hard link; otherwise the entry
        goes to the ``add_*`` call for its kind, with its attributes (the mtime in whole seconds,
        rounded down as ``st_mtime.tv_sec`` is).  A regular file's bytes come from ``entry.data``.
        """
        path = entry.path
        if entry.hardlink is not None:
            self.add_hardlink(path, entry.hardlink)
            return
        kind, mode, uid, gid = entry.kind, entry.mode, entry.uid, entry.gid
        mtime = entry.mtime_ns // 1_000_000_000
        xattrs = [(os.fsencode(name), value) for name, value in entry.xattrs] if entry.xattrs else ()
        if kind is Kind.FILE:
            if entry.data is None:
                raise InternalError(f"{_where(path)}: a regular file entry without its data")
            self.add_file(path, entry.data, size=entry.size, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
        elif kind is Kind.DIR:
            self.add_directory(path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
        elif kind is Kind.SYMLINK:
            self.add_symlink(path, entry.link_target or "", mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
        elif kind in (Kind.CHARDEV, Kind.BLOCKDEV):
            major, minor = entry.rdev
            self.add_device(path, "c" if kind is Kind.CHARDEV else "b", major, minor, mode=mode, uid=uid, gid=gid,
                            mtime=mtime, xattrs=xattrs)  # fmt: skip
        elif kind is Kind.FIFO:
            self.add_fifo(path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
        else:
            self.add_socket(path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)

    def add_all(self, entries: Iterable[Entry]) -> int:
        """:meth:`add` every entry (each in turn, while its source holds its data); how many were added.

        The iterator is closed when this returns or raises, so that its source lets go of what
        it holds open at once.
        """
        count = 0
        it = iter(entries)
        try:
            for entry in it:
                self.add(entry)
                count += 1
        finally:
            close = getattr(it, "close", None)  # a generator's: its finally blocks run now
            if close is not None:
                close()
        return count

    def add_directory(
        self, path: PathLike, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int | None = None,
        xattrs: Xattrs = (),
    ) -> None:  # fmt: skip
        """Add a directory (``""`` is the root: this sets the root's attributes)."""
        self._check_open()
        where = _where(path)
        node = self._node(InodeType.DIR, mode, uid, gid, mtime, xattrs, where)
        node.children = {}
        self.tree.add(path, node)

    def add_file(
        self, path: PathLike, source: FileSource, *, size: int | None = None, mode: int = 0o644, uid: int = 0,
        gid: int = 0, mtime: int | None = None, xattrs: Xattrs = (),
    ) -> None:  # fmt: skip
        """Add a regular file and pack its data now.

        ``source`` is a path (read sparsely: holes are never read; it must be a regular
        file, and is opened without following a symlink and without blocking), a regular file
        the caller opened (:class:`OpenFile`: read the same way, not closed), a binary stream or a
        callback ``read_at(offset, length) -> bytes | None`` (None: a hole).  ``size`` is
        required for streams and callbacks; for a path or open file it defaults to the file's size.
        """
        self._check_open()
        where = _where(path)
        if size is None and not isinstance(source, (str, os.PathLike, OpenFile)):
            raise InvalidOptions(f"{where}: size is required when the data comes from a stream or callback")
        node = self._node(InodeType.REG, mode, uid, gid, mtime, xattrs, where)
        self.tree.add(path, node)  # check the name before spending time on the data
        try:
            node.data = self._pack_data(source, size, where)
        except BaseException as exc:
            # Part of the file may be queued or written: the image cannot be completed.
            self.abort(exc)
            if isinstance(exc, OSError) and not isinstance(exc, LiveImgError):
                name = source.name if isinstance(source, OpenFile) else where
                raise HostError(f"cannot read {name}: {exc.strerror or exc}") from exc
            raise

    def _pack_data(self, source: FileSource, size: int | None, where: str) -> FileData:
        bs = self.options.block_size
        if isinstance(source, OpenFile):
            return self._pack_fd(source.fd, size, source.name)
        if isinstance(source, (str, os.PathLike)):
            name = os.fspath(source)
            fd = open_for_reading(source, name)
            try:
                return self._pack_fd(fd, size, name)
            finally:
                os.close(fd)
        if size is None:
            raise InvalidOptions(f"{where}: size is required when the data comes from a stream or callback")
        chunks: Iterable[Chunk]
        if callable(source):
            chunks = callback_blocks(source, size, bs, where)
        else:
            chunks = stream_blocks(source, size, bs, where)
        return self.processor.add_file(size, chunks)

    def _pack_fd(self, fd: int, size: int | None, where: str) -> FileData:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImage(f"{where}: not a regular file")
        length = st.st_size if size is None else size
        data = self.processor.add_file(length, file_blocks(fd, length, self.options.block_size, where))
        if st.st_blocks * 512 >= length:
            # Like mksquashfs: zero blocks of a fully allocated file are holes in the image,
            # but the file is not recorded as sparse (and keeps the basic inode).
            data.sparse = 0
        after = os.fstat(fd)
        if after.st_size != length or after.st_mtime_ns != st.st_mtime_ns:
            raise InvalidImage(f"{where}: file changed while being packed (size {length} -> {after.st_size})")
        return data

    def add_symlink(
        self, path: PathLike, target: str | bytes, *, mode: int = 0o777, uid: int = 0, gid: int = 0,
        mtime: int | None = None, xattrs: Xattrs = (),
    ) -> None:  # fmt: skip
        """A symbolic link to ``target`` (1 to 4095 bytes, no NUL: what readers and kernels take)."""
        self._check_open()
        node = self._node(InodeType.SYMLINK, mode, uid, gid, mtime, xattrs, _where(path))
        node.target = target if isinstance(target, bytes) else os.fsencode(target)
        if not node.target:
            raise InvalidImage(f"{_where(path)}: empty symlink target")
        if b"\0" in node.target:
            raise InvalidImage(f"{_where(path)}: symlink target contains a NUL byte")
        if len(node.target) > MAX_SYMLINK_LEN:
            raise InvalidImage(
                f"{_where(path)}: symlink target is {len(node.target)} bytes long, "
                f"readers take at most {MAX_SYMLINK_LEN}"
            )
        self.tree.add(path, node)

    def add_device(
        self, path: PathLike, kind: str, major: int, minor: int, *, mode: int = 0o600, uid: int = 0, gid: int = 0,
        mtime: int | None = None, xattrs: Xattrs = (),
    ) -> None:  # fmt: skip
        """A block (``kind="b"``) or character (``"c"``) device."""
        self._check_open()
        types = {"b": InodeType.BLKDEV, "c": InodeType.CHRDEV}
        if kind not in types:
            raise InvalidOptions(f"{_where(path)}: device kind must be 'b' or 'c', not {kind!r}")
        if not (0 <= major < 1 << 12 and 0 <= minor < 1 << 20):
            raise InvalidImage(f"{_where(path)}: device {major}:{minor} does not fit squashfs's 32-bit rdev")
        node = self._node(types[kind], mode, uid, gid, mtime, xattrs, _where(path))
        node.rdev = encode_dev(major, minor)
        self.tree.add(path, node)

    def add_fifo(self, path: PathLike, *, mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: int | None = None,
                 xattrs: Xattrs = ()) -> None:  # fmt: skip
        self._check_open()
        self.tree.add(path, self._node(InodeType.FIFO, mode, uid, gid, mtime, xattrs, _where(path)))

    def add_socket(self, path: PathLike, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int | None = None,
                   xattrs: Xattrs = ()) -> None:  # fmt: skip
        self._check_open()
        self.tree.add(path, self._node(InodeType.SOCKET, mode, uid, gid, mtime, xattrs, _where(path)))

    def add_hardlink(self, path: PathLike, existing: PathLike) -> None:
        """Another name for an entry already added (not a directory)."""
        self._check_open()
        node = self.tree.lookup(split_path(existing))
        if node is None:
            raise InvalidOptions(f"{_where(path)}: hard link target {_where(existing)} was not added")
        self.tree.link(path, node)

    # --- the end -------------------------------------------------------------------------

    def abort(self, exc: BaseException | None = None) -> None:
        """Stop and remove everything written so far."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.processor.abort()
        self._cleanup()
        if self._stage is not None:
            with contextlib.suppress(BaseException):
                self._stage_cm.__exit__(type(exc) if exc else RuntimeError, exc, None)

    def _cleanup(self) -> None:
        out = getattr(self, "out", None)
        if out is not None:
            out.close()
        self._output.discard()

    def finish(self) -> SquashfsResult:
        """Write the metadata and the superblock, pad, and move the image into place."""
        self._check_open()
        try:
            self.processor.finish()
            sb = self._write_metadata()
            self.out.finish(self.out.pos)
            self.out.close()
            self._output.commit()
        except BaseException as exc:
            self.abort(exc)
            raise
        self._closed = True
        seconds = time.monotonic() - self.started
        self._stage_cm.__exit__(None, None, None)
        size = self.dest.stat().st_size
        stats = {
            "blocks": self.block_writer.blocks_written,
            "uncompressed_blocks": self.block_writer.uncompressed_blocks,
            "sparse_blocks": self.processor.sparse_blocks,
            "duplicate_files": self.block_writer.duplicates,
            "fragments": len(self.fragments),
            "codec_cpu_ms": int(self.processor.codec_seconds * 1000),
        }
        if self.block_cache is not None:
            stats.update(cache_hits=self.block_cache.hits, cache_misses=self.block_cache.misses)
        xz_stats = getattr(self.compressor, "stats", None)
        if isinstance(xz_stats, dict):
            stats.update({f"xz_{k}": v for k, v in xz_stats.items()})
        log.info("packed %s: %d inodes, %d bytes in %.1f s", self.dest, sb.inodes, size, seconds)
        return SquashfsResult(
            path=self.dest, size=size, seconds=seconds, backend="native", options=self.options, inodes=sb.inodes,
            stats=stats,
        )  # fmt: skip

    def _write_metadata(self) -> Superblock:
        compress = self.compressor.compress_meta
        ids = IdTable()
        xattrs = XattrWriter()
        inodes = MetaWriter(compress)
        dirs = MetaWriter(compress)
        dir_writer = DirWriter(dirs)
        order = list(self.tree.walk())
        for number, (node, _parent) in enumerate(order, start=1):
            node.number = number
        count = len(order)
        refs = [0] * count
        for node, parent in order:
            node.ref = inodes.reference()
            inode = self._inode(node, parent, count, ids, xattrs, dir_writer)
            inodes.append(inode.to_bytes())
            refs[node.number - 1] = node.ref
        root = self.tree.root
        sb = Superblock(
            inodes=count,
            mkfs_time=self.mkfs_time,
            block_size=self.options.block_size,
            compression=self.compressor.id,
            block_log=self.options.block_log,
            root_inode=root.ref,
        )
        flags = Flags.DUPLICATE
        if self.options.no_fragments:
            flags |= Flags.NO_FRAG
        if self.options.always_use_fragments:
            flags |= Flags.ALWAYS_FRAG
        if self.options.no_xattrs:
            flags |= Flags.NO_XATTR
        if self._comp_opts:
            flags |= Flags.COMP_OPT
        out = self.out
        sb.inode_table_start = out.write(inodes.flush())
        sb.directory_table_start = out.write(dirs.flush())
        table, sb.fragment_table_start = build_table(self.fragments.to_bytes(), out.pos, compress)
        out.write(table)
        sb.fragments = len(self.fragments)
        if not self.options.no_exports:
            flags |= Flags.EXPORT
            table, sb.lookup_table_start = build_table(export_table_bytes(refs), out.pos, compress)
            out.write(table)
        table, sb.id_table_start = build_table(ids.to_bytes(), out.pos, compress)
        out.write(table)
        sb.no_ids = len(ids)
        if len(xattrs):
            table, sb.xattr_id_table_start = xattrs.build(out.pos, compress)
            out.write(table)
        else:
            sb.xattr_id_table_start = SQUASHFS_INVALID_BLK
        sb.flags = int(flags)
        sb.bytes_used = out.pos
        pad = -out.pos % SQUASHFS_DEVBLK_SIZE
        out.write(bytes(pad))
        out.write_at(0, sb.to_bytes())
        return sb

    def _inode(  # noqa: PLR0917
        self, node: Node, parent: Node | None, count: int, ids: IdTable, xattrs: XattrWriter, dir_writer: DirWriter
    ) -> Inode:
        head = (node.mode, ids.index_of(node.uid), ids.index_of(node.gid), node.mtime, node.number)
        xattr = xattrs.add(node.xattrs) if node.xattrs else SQUASHFS_INVALID_XATTR
        has_x = xattr != SQUASHFS_INVALID_XATTR
        kind = node.kind
        if kind == InodeType.DIR:
            children = [DirChild(name, child.ref, child.number, child.kind) for name, child in node.sorted_children]
            for child in children:
                if child.ref < 0:
                    raise InternalError(f"directory entry {child.name!r} written before its inode")
            listing = dir_writer.write(children)
            nlink = 2 + sum(1 for _, c in node.sorted_children if c.kind == InodeType.DIR)
            extended = has_x or listing.index or listing.size + 3 > 0xFFFF
            return DirInode(
                InodeType.LDIR if extended else InodeType.DIR, *head,
                start_block=listing.start_block, nlink=nlink, file_size=listing.size + 3, offset=listing.offset,
                parent_inode=parent.number if parent is not None else count + 1, xattr=xattr, index=listing.index,
            )  # fmt: skip
        if kind == InodeType.REG:
            data = node.data
            if data is None:
                raise InternalError("regular file without data")
            # mksquashfs stores sparse files with the extended inode (it records the sparse byte count).
            extended = has_x or node.nlink > 1 or data.sparse > 0 or data.size >= _U32 or data.start_block >= _U32
            return RegInode(
                InodeType.LREG if extended else InodeType.REG, *head,
                start_block=data.start_block, file_size=data.size, fragment=data.fragment, offset=data.offset,
                sparse=data.sparse, nlink=node.nlink, xattr=xattr, block_sizes=data.block_sizes,
            )  # fmt: skip
        if kind == InodeType.SYMLINK:
            t = InodeType.LSYMLINK if has_x else kind
            return SymlinkInode(t, *head, nlink=node.nlink, target=node.target, xattr=xattr)
        if kind in (InodeType.BLKDEV, InodeType.CHRDEV):
            return DevInode(kind.extended if has_x else kind, *head, nlink=node.nlink, rdev=node.rdev, xattr=xattr)
        return IpcInode(kind.extended if has_x else kind, *head, nlink=node.nlink, xattr=xattr)


def _where(path: PathLike) -> str:
    return display(path)


# --- packing a directory tree ------------------------------------------------------------


def _seconds(st: os.stat_result) -> int:
    """The mtime in whole seconds, rounded down as ``st_mtime.tv_sec`` is (int() would round -0.5 up)."""
    return st.st_mtime_ns // 1_000_000_000


def pack(
    source: Path | str,
    dest: Path | str,
    options: SquashfsOptions | None = None,
    progress: Progress | None = None,
    *,
    cache: Cache | None = None,
) -> SquashfsResult:
    """Pack the directory ``source`` into the squashfs image ``dest`` (the native writer).

    The root of the image takes the attributes of ``source``.  The image being written is
    left out when ``dest`` lies inside ``source`` (its temporary file and the previous image
    at ``dest``).  Errors name the path: :class:`InvalidImage` for content squashfs cannot
    hold (names over 255 bytes), an entry that changes while packed; :class:`HostError` for
    unreadable files or extended attributes, an unwritable destination or a full disk.
    Nothing is left at ``dest`` on failure.
    """
    src = os.fsencode(os.fspath(source))
    try:
        root_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise InvalidOptions(f"squashfs source {os.fsdecode(src)} is not a directory") from exc
        raise InvalidOptions(f"squashfs source {os.fsdecode(src)}: {exc.strerror}") from exc
    try:
        opts = (options or SquashfsOptions()).validate()
        if not opts.no_xattrs and not os.path.isdir(f"/proc/self/fd/{root_fd}"):
            raise HostError(
                "packing a directory with its extended attributes needs /proc (to read those of symlinks "
                "and special files without following a path)",
                hint="mount /proc, or pack with --no-xattrs",
            )
        excluded = Excluded(Path(dest))
        writer = SquashfsWriter(dest, opts, progress, total_bytes=tree_size(root_fd, excluded), cache=cache)
        with writer:
            excluded.add(writer.temp_path)
            scan = HostScan(src, xattrs=not opts.no_xattrs, excluded=excluded, xattr_hint=_XATTR_HINT)
            writer.add_all(scan.entries(root_fd))
            return writer.finish()
    finally:
        os.close(root_fd)


def pack_file(
    file: Path | str,
    dest: Path | str,
    arcname: str = "LiveOS/rootfs.img",
    options: SquashfsOptions | None = None,
    progress: Progress | None = None,
    *,
    mode: int = 0o644,
    dir_mode: int = 0o755,
    cache: Cache | None = None,
) -> SquashfsResult:
    """Pack one file as ``arcname`` (directories made as needed), reading it in place.

    The file and its directories take the file's mtime, clamped to ``$SOURCE_DATE_EPOCH`` when
    that is set (a freshly built file is newer than any epoch), and are owned by root: the
    pipeline's ``LiveOS/rootfs.img`` case, without staging copies.
    """
    path = Path(file)
    try:
        st = path.stat()
    except OSError as exc:
        raise InvalidOptions(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InvalidOptions(f"{path} is not a regular file")
    mtime = _seconds(st)  # the writer clamps it to $SOURCE_DATE_EPOCH
    with SquashfsWriter(dest, options, progress, total_bytes=st.st_size, cache=cache) as writer:
        writer.add_directory("", mode=dir_mode, mtime=mtime)
        parts = arcname.strip("/").split("/")
        for i in range(1, len(parts)):
            writer.add_directory("/".join(parts[:i]), mode=dir_mode, mtime=mtime)
        writer.add_file(arcname, path, mode=mode, mtime=mtime)
        return writer.finish()
