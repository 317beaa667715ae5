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

:func:`pack` packs a directory tree through directory file descriptors (``O_NOFOLLOW``
opens relative to the directory being read), so that it never follows a symlink it did not
record as one, whatever changes under it; only regular files and directories are opened.
Entries are sorted by name, hard links detected by (device, inode); the image being written
(its temporary file, and the previous image at the destination) is never packed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NamedTuple

from liveimg.errors import HostError, InternalError, InvalidImage, InvalidOptions, LiveImgError
from liveimg.progress import Progress, StageProgress
from liveimg.squashfs.block_processor import (
    OPEN_FLAGS,
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
from liveimg.squashfs.fstree import FsTree, Node, display, kind_of_mode, split_path
from liveimg.squashfs.id_table import IdTable
from liveimg.squashfs.inode import DevInode, DirInode, Inode, IpcInode, RegInode, SymlinkInode, encode_dev
from liveimg.squashfs.meta_writer import MetaWriter, build_table, encode_meta_block
from liveimg.squashfs.options import SquashfsOptions, SquashfsResult, source_date_epoch
from liveimg.squashfs.superblock import Superblock
from liveimg.squashfs.xattr import XattrSet, XattrWriter, normalize
from liveimg.staging import AtomicOutput

log = logging.getLogger(__name__)


class OpenFile(NamedTuple):
    """A regular file the caller opened, for :meth:`SquashfsWriter.add_file` (read with pread, not closed)."""

    fd: int
    name: str  # for messages


PathLike = str | bytes
FileSource = Path | os.PathLike[str] | BinaryIO | ReadAt | OpenFile
Xattrs = Iterable[tuple[bytes, bytes]] | dict[bytes, bytes]

_U32 = 1 << 32


class SquashfsWriter:
    """Build a squashfs image entry by entry.

    >>> with SquashfsWriter(dest, SquashfsOptions(comp="zstd")) as w:   # doctest: +SKIP
    ...     w.add_directory("LiveOS", mode=0o755)
    ...     w.add_file("LiveOS/rootfs.img", Path("rootfs.img"))

    Leaving the ``with`` block normally calls :meth:`finish`; an exception calls
    :meth:`abort` (nothing is left at ``dest``).  Attributes given to ``add_*`` are
    adjusted by the options (``all_root``, ``force_uid``, ``all_time`` ...).
    """

    def __init__(
        self,
        dest: Path | str,
        options: SquashfsOptions | None = None,
        progress: Progress | None = None,
        *,
        total_bytes: int | None = None,
    ) -> None:
        self.options = (options or SquashfsOptions()).validate()
        self.dest = Path(dest)
        self.started = time.monotonic()
        self.mkfs_time = self.options.effective_mkfs_time()
        #: Inode times later than this are clamped to it ($SOURCE_DATE_EPOCH; not with all_time).
        self.epoch = source_date_epoch() if self.options.all_time is None else None
        self.compressor: Compressor = make_compressor(self.options)
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

#: Directories are opened relative to their parent, never through a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
#: xattr errors that mean "none here": the filesystem has no xattrs, or one went away
#: between listing and reading it.
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA)


def _read_xattrs(target: int | bytes, where: str) -> list[tuple[bytes, bytes]]:
    """The extended attributes of an open file (an fd), or of a path's last component (not followed).

    Any failure but ENOTSUP/ENODATA is a :class:`HostError` naming the file.  mksquashfs 4.5
    warns ("llistxattr for F failed ... Ignoring") and packs the file without any of its
    attributes; a live root cannot afford that: a file that silently lost its
    ``security.selinux`` label or ``security.capability`` fails only once booted (denials, a
    ping without its capability), far from the cause.  ``no_xattrs`` leaves them out on purpose.
    """
    # An fd is the file itself; os refuses follow_symlinks with one.
    nofollow: dict[str, bool] = {} if isinstance(target, int) else {"follow_symlinks": False}
    pairs = []
    try:
        for name in os.listxattr(target, **nofollow):
            try:
                value = os.getxattr(target, name, **nofollow)
            except OSError as exc:
                if exc.errno != errno.ENODATA:  # removed since listed: gone, not unreadable
                    raise
                continue
            pairs.append((os.fsencode(name), value))
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return []
        raise HostError(
            f"cannot read the extended attributes of {where}: {exc.strerror}",
            hint="--no-xattrs packs without any",
        ) from exc
    return pairs


class _Excluded:
    """The image being written, never packed: its inodes, and its names in its directory."""

    def __init__(self, dest: Path) -> None:
        self.inodes: set[tuple[int, int]] = set()
        self.names = {os.fsencode(dest.name)}
        self.directory: tuple[int, int] | None = None
        with contextlib.suppress(OSError):
            st = os.stat(dest.parent)
            self.directory = (st.st_dev, st.st_ino)
        self.add(dest)

    def add(self, path: Path) -> None:
        """Leave out the file at ``path`` (by name in the destination's directory, and by inode)."""
        self.names.add(os.fsencode(path.name))
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            self.inodes.add((st.st_dev, st.st_ino))

    def names_in(self, directory: os.stat_result) -> set[bytes] | frozenset[bytes]:
        return self.names if (directory.st_dev, directory.st_ino) == self.directory else frozenset()

    def __contains__(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) in self.inodes


def _walk(
    root_fd: int,
    visit: Callable[[int, bytes, os.stat_result], list[bytes]],
    refused: Callable[[bytes, OSError], None],
) -> None:
    """Depth first below the open directory ``root_fd``, through directory file descriptors.

    ``visit(fd, rel, st)`` handles one directory (``rel`` is b"" for the top) and returns the
    names of the subdirectories to enter, in order; each is opened relative to its parent with
    ``O_DIRECTORY | O_NOFOLLOW``, so a symlink put in a directory's place is never followed:
    the open fails and ``refused(rel, error)`` decides (raise, or return to skip it).  One
    descriptor per level is open at a time.
    """
    stack: list[tuple[int, bytes, Iterator[bytes]]] = [(root_fd, b"", iter(visit(root_fd, b"", os.fstat(root_fd))))]
    try:
        while stack:
            fd, rel, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if fd != root_fd:
                    os.close(fd)
                continue
            child_rel = rel + b"/" + name if rel else name
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                refused(child_rel, exc)
                continue
            try:
                subdirs = visit(child, child_rel, os.fstat(child))
            except BaseException:
                os.close(child)
                raise
            stack.append((child, child_rel, iter(subdirs)))
    finally:
        for fd, _rel, _names in stack:
            if fd != root_fd:
                os.close(fd)


def _tree_size(root_fd: int, excluded: _Excluded) -> int:
    """Bytes in the regular files below ``root_fd``, for progress (what cannot be read is left out)."""
    total = 0

    def visit(fd: int, _rel: bytes, st: os.stat_result) -> list[bytes]:
        nonlocal total
        skip = excluded.names_in(st)
        subdirs = []
        with contextlib.suppress(OSError), os.scandir(fd) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(os.fsencode(entry.name))
                    elif entry.is_file(follow_symlinks=False) and os.fsencode(entry.name) not in skip:
                        total += entry.stat(follow_symlinks=False).st_size
        return subdirs

    _walk(root_fd, visit, lambda _rel, _exc: None)
    return total


class _TreeScan:
    """:func:`pack`'s walk: every entry below a directory into the writer.

    Only regular files and directories are opened, relative to their directory and without
    following a symlink; FIFOs, sockets and devices are recorded from their lstat; symlinks
    are read with readlinkat.  An entry that turns into something else between its lstat and
    its open (a directory swapped for a symlink, a file for a FIFO) is an :class:`InvalidImage`
    naming it: the scan never reads what it did not see.
    """

    def __init__(self, writer: SquashfsWriter, src: bytes, excluded: _Excluded) -> None:
        self.writer = writer
        self.src = src
        self.excluded = excluded
        self.xattrs = not writer.options.no_xattrs
        self.links: dict[tuple[int, int], bytes] = {}

    def where(self, rel: bytes) -> str:
        return display(os.path.join(self.src, rel) if rel else self.src)

    def run(self, root_fd: int) -> None:
        _walk(root_fd, self.directory, self.refused)

    def refused(self, rel: bytes, exc: OSError) -> None:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InvalidImage(f"{self.where(rel)}: changed while being packed (no longer a directory)") from exc
        if exc.errno == errno.ENOENT:
            raise InvalidImage(f"{self.where(rel)}: changed while being packed (removed)") from exc
        raise HostError(f"cannot read directory {self.where(rel)}: {exc.strerror}") from exc

    def _xattrs(self, target: int | bytes, rel: bytes) -> list[tuple[bytes, bytes]]:
        return _read_xattrs(target, self.where(rel)) if self.xattrs else []

    def directory(self, fd: int, rel: bytes, st: os.stat_result) -> list[bytes]:
        """Add the directory open as ``fd`` and its entries but subdirectories; return those."""
        w = self.writer
        w.add_directory(rel, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, mtime=_seconds(st),
                        xattrs=self._xattrs(fd, rel))  # fmt: skip
        skip = self.excluded.names_in(st)
        try:
            with os.scandir(fd) as it:
                names = sorted(os.fsencode(entry.name) for entry in it)
        except OSError as exc:
            raise HostError(f"cannot read directory {self.where(rel)}: {exc.strerror}") from exc
        # Every entry's lstat first, then the entries: what each is was decided before any is read.
        entries = []
        for name in names:
            if name in skip:
                continue
            try:
                lst = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as exc:
                raise HostError(f"cannot stat {self.where(self.rel(rel, name))}: {exc.strerror}") from exc
            if lst not in self.excluded:
                entries.append((name, lst))
        subdirs = []
        for name, lst in entries:
            if stat.S_ISDIR(lst.st_mode):
                subdirs.append(name)
            elif stat.S_ISREG(lst.st_mode):
                self.file(fd, name, self.rel(rel, name))
            else:
                self.other(fd, name, self.rel(rel, name), lst)
        return subdirs

    @staticmethod
    def rel(rel: bytes, name: bytes) -> bytes:
        return rel + b"/" + name if rel else name

    def _linked(self, st: os.stat_result, relpath: bytes) -> bool:
        """Whether ``relpath`` is another name of an inode already added (then added as a hard link)."""
        if st.st_nlink < 2:
            return False
        key = (st.st_dev, st.st_ino)
        first = self.links.get(key)
        if first is None:
            self.links[key] = relpath
            return False
        self.writer.add_hardlink(relpath, first)
        return True

    def file(self, dir_fd: int, name: bytes, relpath: bytes) -> None:
        where = self.where(relpath)
        try:
            fd = os.open(name, OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidImage(f"{where}: changed while being packed (now a symlink)") from exc
            if exc.errno == errno.ENOENT:
                raise InvalidImage(f"{where}: changed while being packed (removed)") from exc
            raise HostError(f"cannot read {where}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidImage(f"{where}: changed while being packed (no longer a regular file)")
            if self._linked(st, relpath):
                return
            self.writer.add_file(
                relpath, OpenFile(fd, where), size=st.st_size, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                mtime=_seconds(st), xattrs=self._xattrs(fd, relpath),
            )  # fmt: skip
        finally:
            os.close(fd)

    def other(self, dir_fd: int, name: bytes, relpath: bytes, st: os.stat_result) -> None:
        """A symlink, device, FIFO or socket: from its lstat, never opened."""
        where = self.where(relpath)
        kind = kind_of_mode(st.st_mode, where)
        if self._linked(st, relpath):
            return
        # The entry itself, found through the directory we hold open: not through a path.
        xattrs = self._xattrs(b"/proc/self/fd/%d/%s" % (dir_fd, name), relpath)
        w = self.writer
        attrs = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": _seconds(st), "xattrs": xattrs}
        if kind == InodeType.SYMLINK:
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):
                    raise InvalidImage(f"{where}: changed while being packed (no longer a symlink)") from exc
                raise HostError(f"cannot read symlink {where}: {exc.strerror}") from exc
            w.add_symlink(relpath, target, **attrs)  # type: ignore[arg-type]
        elif kind in (InodeType.BLKDEV, InodeType.CHRDEV):
            w.add_device(relpath, "b" if kind == InodeType.BLKDEV else "c", os.major(st.st_rdev), os.minor(st.st_rdev),
                         **attrs)  # type: ignore[arg-type]  # fmt: skip
        elif kind == InodeType.FIFO:
            w.add_fifo(relpath, **attrs)  # type: ignore[arg-type]
        else:
            w.add_socket(relpath, **attrs)  # type: ignore[arg-type]


def _seconds(st: os.stat_result) -> int:
    """The mtime in whole seconds, rounded down as ``st_mtime.tv_sec`` is (int() would round -0.5 up)."""
    return st.st_mtime_ns // 1_000_000_000


def pack(
    source: Path | str,
    dest: Path | str,
    options: SquashfsOptions | None = None,
    progress: Progress | None = None,
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
        excluded = _Excluded(Path(dest))
        writer = SquashfsWriter(dest, opts, progress, total_bytes=_tree_size(root_fd, excluded))
        with writer:
            excluded.add(writer.temp_path)
            _TreeScan(writer, src, excluded).run(root_fd)
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
    with SquashfsWriter(dest, options, progress, total_bytes=st.st_size) as writer:
        writer.add_directory("", mode=dir_mode, mtime=mtime)
        parts = arcname.strip("/").split("/")
        for i in range(1, len(parts)):
            writer.add_directory("/".join(parts[:i]), mode=dir_mode, mtime=mtime)
        writer.add_file(arcname, path, mode=mode, mtime=mtime)
        return writer.finish()
