"""Stage 2, rootfs: build ``LiveOS/rootfs.img``, a sparse ext4 image of the physical root with /boot merged.

What lorax does with loop devices, mounts and ``cp -a`` as root (lorax-reference.md
§1.3-1.4), done without root, mounts or a VM where the input allows it.

Two methods:

``partition`` (ext2/3/4 roots that are a plain partition or a bare filesystem image)
    The root partition's bytes are copied sparsely into the new file (``copy_file_range``
    for raw images; ``qemu-img convert`` with an offset for qcow2 and other formats); the
    copy is checked with ``e2fsck``, resized with ``resize2fs``, relabelled ``LiveOS``
    with no reserved blocks; the boot partition's files (read with every piece of metadata
    by the host's ext reader, :mod:`liveimg.extfs`, or through libguestfs) are written into
    its ``/boot`` with ``debugfs -w``; free blocks are discarded (``e2fsck -E discard``
    punches holes in a file) so that the squashfs stage sees them as holes.  Faster than a
    file-by-file copy in the appliance (the two are compared in ``benchmarks/README.md``),
    and byte-for-byte reproducible (``E2FSPROGS_FAKE_TIME`` from ``SOURCE_DATE_EPOCH``).

``copy`` (xfs, btrfs, LVM, or ext filesystems without 4 KiB blocks)
    A new ext4 filesystem is made on a work drive of the libguestfs appliance and the
    root, then the boot partition, are copied into it file by file (``cp -a``: owners,
    modes, hard links, xattrs with SELinux labels, ACLs, sparse files, devices, times).

Size modes: ``auto`` (the content, hard links counted once, plus headroom: 20 % and at
least 256 MiB, where lorax leaves the image nearly full), ``fixed`` (a size given by the
user, refused with the size needed when too small) and ``keep`` (the source root
partition's size).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from liveimg import e2fs, sandbox, sparse
from liveimg.errors import HostError, InternalError, InvalidImage, InvalidOptions
from liveimg.extfs import ExtRefused
from liveimg.progress import Progress
from liveimg.staging import AtomicOutput
from liveimg.tree import ApplianceTree, Entry, Kind, TreeSource

if TYPE_CHECKING:
    from liveimg.guest import Guest
    from liveimg.imageinfo import ImageInfo, Partition
    from liveimg.nativeimage import NativeImage

log = logging.getLogger(__name__)

MiB = 1024**2
GiB = 1024**3
LABEL = "LiveOS"
BLOCK_SIZE = 4096
AUTO_HEADROOM_FRACTION = 0.20
AUTO_HEADROOM_MIN = 256 * MiB

_UNITS = {"": GiB, "k": 1024, "m": MiB, "g": GiB, "t": 1024**4}


def parse_size(text: str) -> int:
    """A size in bytes from ``4`` (GiB, as lorax's ``--live-rootfs-size``), ``512M``, ``1.5GiB``, ``2T``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise InvalidOptions(f"invalid size {text!r}", hint="use a number of GiB, or a number with K, M, G or T")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise InvalidOptions(f"invalid size {text!r}: it must be more than 0")
    return size


class SizeMode(enum.StrEnum):
    AUTO = "auto"
    FIXED = "fixed"
    KEEP = "keep"


class Method(enum.StrEnum):
    AUTO = "auto"
    PARTITION = "partition"
    COPY = "copy"


@dataclass(frozen=True)
class RootfsOptions:
    """How to build ``rootfs.img``; ``size`` is required with ``SizeMode.FIXED``."""

    size_mode: SizeMode = SizeMode.AUTO
    size: int | None = None
    method: Method = Method.AUTO
    label: str = LABEL
    repair_source: bool = False

    def __post_init__(self) -> None:
        if (self.size_mode is SizeMode.FIXED) != (self.size is not None):
            raise InvalidOptions("a fixed rootfs size needs a size, and only the fixed mode takes one")
        if len(self.label.encode()) > 16:
            raise InvalidOptions(f"the ext4 label {self.label!r} is longer than 16 bytes")


@dataclass(frozen=True)
class RootfsImage:
    """The stage's result: an ext4 image file, sparse."""

    path: Path
    size: int  # apparent size, bytes
    allocated: int  # bytes on disk
    content: int  # bytes the files and metadata use
    method: Method
    label: str
    uuid: str
    boot_merged: bool


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def tree_bytes(entries: Sequence[Entry], block_size: int = BLOCK_SIZE) -> int:
    """Space a tree takes in ext4: data rounded to blocks, hard links once, a block per directory."""
    total = 0
    for entry in entries:
        if entry.hardlink is not None:
            continue
        if entry.kind in ("file", "dir"):
            total += max(_round_up(entry.size, block_size), block_size if entry.kind == "dir" else 0)
        elif entry.kind == "symlink" and len((entry.link_target or "").encode()) >= 60:
            total += block_size  # longer targets do not fit in the inode
        if entry.xattrs:
            total += block_size  # at worst an external xattr block
    return total


def target_size(mode: SizeMode, *, needed: int, requested: int | None, partition: int) -> int:
    """The rootfs size in bytes for a size mode, given the bytes the content needs."""
    if mode is SizeMode.AUTO:
        size = needed + max(math.ceil(needed * AUTO_HEADROOM_FRACTION), AUTO_HEADROOM_MIN)
    elif mode is SizeMode.FIXED:
        assert requested is not None
        size = requested
        if size < needed:
            raise InvalidOptions(
                f"the rootfs size {size / GiB:.2f} GiB is too small: the content needs {needed / GiB:.2f} GiB",
                hint=f"use --live-rootfs-size {math.ceil(needed / GiB)} or more, or the automatic size",
            )
    else:
        size = partition
        if size < needed:
            raise InvalidOptions(
                f"the source root partition ({size / GiB:.2f} GiB) is too small for its content with /boot "
                f"merged ({needed / GiB:.2f} GiB)",
                hint="use the automatic size or a fixed size instead of keeping the partition's size",
            )
    return _round_up(size, MiB)


# --- writing a tree into an ext4 image with debugfs ------------------------------------------


def _q(path: str) -> str:
    return e2fs.debugfs_quote(path)


def _times(path: str, entry: Entry, extra: bool) -> list[str]:
    cmds = []
    for field, ns in (("atime", entry.atime_ns), ("mtime", entry.mtime_ns), ("ctime", entry.ctime_ns)):
        seconds, nanos = divmod(ns, 10**9)
        cmds.append(f"sif {_q(path)} {field} @{seconds}")
        if extra:
            # The low two bits of *_extra extend the seconds past 2038; the rest is nanoseconds.
            cmds.append(f"sif {_q(path)} {field}_extra {(nanos << 2) | ((seconds >> 32) & 3)}")
    return cmds


def tree_commands(
    entries: Sequence[Entry],
    dest: str,
    content: Callable[[Entry], Path],
    *,
    extra_times: bool = True,
    xattr_file: Callable[[bytes], Path],
) -> list[str]:
    """debugfs commands that recreate ``entries`` below ``dest`` (an existing, empty directory).

    Directory metadata is set last, deepest first, because adding entries changes a
    directory's times.  Hard links (``entry.hardlink``) become ``ln`` plus the right link
    count.  Sockets are skipped (debugfs cannot make them, and they mean nothing in an image);
    so are the extended attributes of symlinks.
    """
    cmds: list[str] = []
    dirs: list[tuple[str, Entry]] = []
    link_counts: dict[str, int] = {}

    def image_path(rel: str) -> str:
        return str(PurePosixPath(dest) / rel) if rel else dest

    def meta(path: str, entry: Entry) -> None:
        cmds.append(f"sif {_q(path)} mode 0{entry.mode:o}")
        cmds.append(f"sif {_q(path)} uid {entry.uid}")
        cmds.append(f"sif {_q(path)} gid {entry.gid}")
        for name, value in entry.xattrs if entry.kind is not Kind.SYMLINK else ():
            cmds.append(f"ea_set -f {_q(str(xattr_file(value)))} {_q(path)} {_q(name)}")
        cmds.extend(_times(path, entry, extra_times))

    for entry in entries:
        path = image_path(entry.path)
        kind = entry.kind
        if entry.hardlink is not None:
            first = image_path(entry.hardlink)
            cmds.append(f"ln {_q(first)} {_q(path)}")
            link_counts[first] = link_counts.get(first, 1) + 1
            continue
        if kind is Kind.DIR:
            if entry.path:
                cmds.append(f"mkdir {_q(path)}")
            dirs.append((path, entry))
            continue
        if kind is Kind.SOCKET:
            log.warning("skipping socket %s: sockets cannot be stored in an image", path)
            continue
        if kind is Kind.FILE:
            cmds.append(f"write {_q(str(content(entry)))} {_q(path)}")
        elif kind is Kind.SYMLINK:
            cmds.append(f"symlink {_q(path)} {_q(entry.link_target or '')}")
        else:
            # mknod takes a name in the current directory, not a path.
            parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
            major, minor = entry.rdev
            node = "p" if kind is Kind.FIFO else f"{'c' if kind is Kind.CHARDEV else 'b'} {major} {minor}"
            cmds += [f"cd {_q(parent)}", f"mknod {_q(name)} {node}", "cd /"]
        meta(path, entry)
    for path, count in link_counts.items():
        if count > 1:
            cmds.append(f"sif {_q(path)} links_count {count}")
    for path, entry in reversed(dirs):
        meta(path, entry)
    return cmds


#: Where :func:`write_tree` shows the files it writes, inside debugfs's sandbox.
_CONTENT_DIR = "/liveimg-in"


def write_tree(
    image: Path,
    tree: TreeSource,
    dest: str,
    workdir: Path,
    *,
    limit: int | None = None,
    inode_size: int | None = None,
    staging: Path | None = None,
) -> int:
    """Copy a tree into the directory ``dest`` of the ext4 filesystem in ``image``; return its entries.

    ``dest`` must exist and be empty.  ``limit`` bounds the total size of the files
    (hostile guests can claim absurd sizes).  The files are fetched into a directory below
    ``workdir`` that debugfs, in its sandbox, sees read-only (or into ``staging``, an empty
    directory of the caller's, which the caller removes).  ``inode_size`` is the filesystem's
    (read from it when not given).
    """
    entries = tree.entries()
    total = sum(e.size for e in entries if e.kind == "file")
    if limit is not None and total > limit:
        raise InvalidImage(f"the files to copy into {dest} claim {total} bytes, more than their filesystem holds")
    if inode_size is None:
        inode_size = e2fs.superblock(image).inode_size
    with contextlib.ExitStack() as stack:
        tmpdir = staging or Path(stack.enter_context(tempfile.TemporaryDirectory(dir=workdir, prefix="tree-")))
        counter = iter(range(1 << 62))

        def content(entry: Entry) -> Path:
            name = f"f{next(counter)}"
            tree.fetch(entry, tmpdir / name)
            return Path(_CONTENT_DIR, name)

        xattr_files: dict[bytes, Path] = {}

        def xattr_file(value: bytes) -> Path:
            if value not in xattr_files:
                name = f"x{next(counter)}"
                (tmpdir / name).write_bytes(value)
                xattr_files[value] = Path(_CONTENT_DIR, name)
            return xattr_files[value]

        cmds = tree_commands(entries, dest, content, extra_times=inode_size > 128, xattr_file=xattr_file)
        sandbox.hand_over(tmpdir, recursive=True)
        e2fs.debugfs_script(image, cmds, writable=True, mounts=[sandbox.Bind(tmpdir, _CONTENT_DIR)])
    return len(entries)


# --- the partition method ------------------------------------------------------------------


_BENIGN_FSCK = re.compile(
    r"(Free (blocks|inodes) count wrong|Padding at end of inode bitmap|Directories count wrong|"
    r"Setting free (blocks|inodes) count|Clearing orphaned inode|Inode bitmap differences|Block bitmap differences"
    r"|^(Fix|Clear|Salvage|Recreate|Relocate)\? no$|^\s*[-+(]?[0-9, -]+\)?\s*$)"
)


def _source_problems(output: str) -> list[str]:
    """Lines of an ``e2fsck -n`` report that are real damage, not stale summary counters."""
    problems = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith(("Pass ", "e2fsck ")) or "WARNING: Filesystem still has errors" in line:
            continue
        if re.match(r"^\S+: \d+/\d+ files", line) or _BENIGN_FSCK.search(line):
            continue
        problems.append(line)
    return problems


def extract_partition(image: Path, image_format: str, offset: int, length: int, dest: Path) -> None:
    """Copy ``length`` bytes at ``offset`` of a disk image's virtual disk into a sparse raw file.

    A raw image is copied on the host (``copy_file_range``: no parsing).  Other formats are
    read by ``qemu-img convert`` in the sandbox, given the image as an open file and writing
    into ``dest``, made here at its final size.
    """
    if image_format == "raw":
        sparse.copy_range(image, offset, length, dest)
        return
    spec = f"driver=raw,offset={offset},size={length},file.driver={image_format},file.file.driver=file,"
    with open(dest, "wb") as f:
        f.truncate(length)
    try:
        with e2fs.lend(dest, writable=True):
            sandbox.run(
                ["qemu-img", "convert", "-U", "-n", "--target-is-zero", "-O", "raw", "--image-opts",
                 sandbox.File(image, template=spec + "file.file.filename={}"), sandbox.File(dest, writable=True)],
                what="qemu-img convert",
                limits=sandbox.Limits(seconds=3600, tasks=64, memory=2 * GiB, file_size=max(length, MiB),
                                      disk=length),
            )  # fmt: skip
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def check_source_copy(copy: Path, what: str, *, repair: bool, sb: e2fs.Superblock | None = None) -> bool:
    """Refuse a source root filesystem with errors (checked on liveimg's copy), unless asked to repair the copy.

    ``sb`` is the copy's superblock if the caller has read it.  Returns whether the copy was
    changed (a journal replayed, errors repaired).
    """
    sb = sb or e2fs.superblock(copy)
    changed = "needs_recovery" in sb.features
    if changed:
        log.info("%s: replaying the journal of an unclean unmount (in liveimg's copy)", what)
        e2fs.replay_journal(copy)
    check = e2fs.fsck(copy, repair=False)
    problems = [] if check.clean else _source_problems(check.output)
    if problems and not repair:
        raise InvalidImage(
            f"{what} has filesystem errors: {problems[0]}",
            hint="repair the image, or let liveimg repair its own copy (--repair-source; the input is never changed)",
        )
    if not check.clean:
        result = e2fs.fsck(copy, repair=True, what=what)
        log.warning("%s: e2fsck corrected its copy (status %d)", what, result.status)
        changed = True
    return changed


def boot_is_empty(image: Path, directory: str, workdir: Path) -> bool:
    """Whether ``directory`` in the image exists and is empty (a mount point waiting for /boot)."""
    del workdir  # debugfs reads its commands from stdin now
    out = e2fs.debugfs_script(image, [f"ls -p {_q(directory)}"], writable=False)
    names = [line.split("/")[5] for line in out.splitlines() if line.startswith("/") and line.count("/") >= 6]
    unexpected = [n for n in names if n not in (".", "..", "lost+found")]
    return not unexpected


def from_partition(
    *,
    image: Path,
    image_format: str,
    offset: int,
    length: int,
    boot: TreeSource | None,
    boot_limit: int | None,
    dest: Path,
    options: RootfsOptions,
    workdir: Path,
    what: str,
) -> RootfsImage:
    """The ``partition`` method (see the module docstring); ``dest`` is written whole or not at all."""
    if image_format == "raw":
        check_space(dest.parent, _raw_data_bytes(image, offset, length))
    boot_entries = boot.entries() if boot is not None else []
    boot_bytes = tree_bytes(boot_entries) + 16 * MiB
    # The largest the image may grow to (resize2fs's file size limit in the sandbox).
    largest = max(options.size or 0, length, int(1.25 * (length + boot_bytes)) + AUTO_HEADROOM_MIN)
    content = Path(tempfile.mkdtemp(dir=workdir, prefix="tree-"))  # the /boot files, for debugfs
    mounts = [sandbox.Bind(content, _CONTENT_DIR)] if boot is not None else []
    try:
        # A work file (the squashfs stage reads it at once, a crash restarts the build): not flushed.
        with AtomicOutput(dest, durable=False) as tmp:
            extract_partition(image, image_format, offset, length, tmp)
            # One sandbox for the e2fsprogs calls below (each would otherwise start its own).
            with e2fs.session(tmp, writable=True, mounts=mounts, max_size=largest):
                sb = e2fs.superblock(tmp)
                if sb.block_size != BLOCK_SIZE:
                    raise InvalidImage(
                        f"{what} has {sb.block_size}-byte blocks; the partition method needs {BLOCK_SIZE}"
                    )
                if check_source_copy(tmp, what, repair=options.repair_source, sb=sb):
                    sb = e2fs.superblock(tmp)  # after a replay or repair: its counts are right now
                # Growing (or keeping the size) only needs room for /boot; shrinking is bounded by
                # what resize2fs can pack the filesystem into, which is more than the data it holds.
                needed = sb.used_bytes + boot_bytes
                grows = options.size_mode is SizeMode.KEEP or (
                    options.size_mode is SizeMode.FIXED and (options.size or 0) >= sb.size
                )
                if not grows:
                    needed = max(needed, e2fs.min_size_blocks(tmp) * BLOCK_SIZE + boot_bytes)
                size = target_size(options.size_mode, needed=needed, requested=options.size, partition=length)
                e2fs.resize(tmp, size // BLOCK_SIZE, BLOCK_SIZE)
                e2fs.tune(tmp, label=options.label, reserved_percent=0)
                if boot is not None:
                    if not boot_is_empty(tmp, "/boot", workdir):
                        raise InvalidImage(
                            f"{what}: /boot on the root filesystem is not empty although a boot partition exists",
                            hint="liveimg merges the boot partition into an empty /boot, as a mount would show it",
                        )
                    write_tree(tmp, _Prefetched(boot, boot_entries), "/boot", workdir, limit=boot_limit,
                               inode_size=sb.inode_size, staging=content)  # fmt: skip
                _finish_image(tmp, what)
                final = e2fs.superblock(tmp)
    finally:
        shutil.rmtree(content, ignore_errors=True)
    return _result(dest, Method.PARTITION, boot_merged=boot is not None, sb=final)


def _native_boot(native: NativeImage | None, info: ImageInfo) -> TreeSource | None:
    """The boot filesystem listed by the host's reader, or None (none, or the appliance must read it)."""
    from liveimg.nativeimage import NativeRefused  # noqa: PLC0415  # it imports the appliance's module

    if native is None or info.boot is None:
        return None
    try:
        source = native.boot_source(info)
        assert source is not None
        return _Prefetched(source, source.entries())
    except (NativeRefused, ExtRefused) as exc:
        log.info("rootfs: /boot read in the appliance (the native reader gave up: %s)", exc)
        return None


class _Prefetched:
    """A tree source whose entries were already listed (listing through libguestfs costs time)."""

    def __init__(self, source: TreeSource, entries: list[Entry]) -> None:
        self.source = source
        self._entries = entries

    def entries(self) -> list[Entry]:
        return self._entries

    def fetch(self, entry: Entry, dest: Path) -> None:
        self.source.fetch(entry, dest)


def check_space(directory: Path, needed: int) -> None:
    """Refuse to start when ``directory`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise HostError(
            f"not enough free space in {directory}: {free / GiB:.2f} GiB free, {needed / GiB:.2f} GiB needed",
            hint="free space or choose another --workdir",
        )


def _raw_data_bytes(image: Path, offset: int, length: int) -> int:
    with open(image, "rb") as f:
        return sum(n for _, n in sparse.data_extents(f.fileno(), offset, offset + length))


# --- the copy method (in the libguestfs appliance) and the stage's entry point -----------------

EXT_TYPES = ("ext2", "ext3", "ext4")
#: Work drive size for the copy method: the sparse file costs nothing until written.
WORK_DRIVE_MIN = 8 * GiB


def work_drive_size(virtual_size: int, options: RootfsOptions) -> int:
    """Size of the sparse work drive to attach to the appliance for the copy method."""
    return _round_up(max(2 * virtual_size, options.size or 0, WORK_DRIVE_MIN), MiB)


def choose_method(info: ImageInfo, options: RootfsOptions) -> tuple[Method, str]:
    """The method to use for this image, and why."""
    root = info.root
    partition_ok = (
        root.fstype in EXT_TYPES and root.offset is not None and root.length is not None and not root.lvm
    ) and not root.subvolume
    why = "the root is a plain ext2/3/4 partition" if partition_ok else f"the root is {_describe(root)}"
    if options.method is Method.PARTITION:
        if not partition_ok:
            raise InvalidOptions(
                f"the partition method needs an ext2/3/4 root on a plain partition, but {why}",
                hint="use the copy method (or the default, auto)",
            )
        return Method.PARTITION, why
    if options.method is Method.COPY:
        return Method.COPY, "asked for"
    return (Method.PARTITION if partition_ok else Method.COPY), why


def _describe(part: Partition) -> str:
    if part.lvm:
        return f"an LVM logical volume ({part.fstype})"
    if part.subvolume:
        return f"a btrfs subvolume ({part.subvolume})"
    return f"{part.fstype or 'an unknown filesystem'} on {part.device}"


def _used_bytes(g: Any, mountpoint: str) -> tuple[int, int]:
    """Bytes and inodes in use on a mounted filesystem (hard links count once)."""
    st = g.statvfs(mountpoint)
    used = (int(st["blocks"]) - int(st["bfree"])) * int(st["frsize"] or st["bsize"])
    inodes = int(st["files"]) - int(st["ffree"])
    return used, max(inodes, 0)


def by_copy(
    guest: Guest, info: ImageInfo, *, drive: Path, device: str, dest: Path, options: RootfsOptions
) -> RootfsImage:
    """The ``copy`` method: a new ext4 on the appliance's work drive, filled with ``cp -a``."""
    g = guest.g
    root_mp = guest.root_mountpoint
    boot_mp = guest.boot_mountpoint
    used, inodes = _used_bytes(g, root_mp)
    if boot_mp is not None:
        boot_used, boot_inodes = _used_bytes(g, boot_mp)
        used, inodes = used + boot_used, inodes + boot_inodes
    # ext4 needs room for its inode tables and journal beyond the data: a few percent plus a fixed part.
    needed = _round_up(int(used * 1.05) + inodes * 256 + 64 * MiB, MiB)
    partition = info.root.length or info.root.size
    size = target_size(options.size_mode, needed=needed, requested=options.size, partition=partition)
    drive_size = drive.stat().st_size
    if size > drive_size:
        raise InternalError(f"the work drive ({drive_size} bytes) is smaller than the rootfs ({size} bytes)")
    out_mp = "/liveimg-rootfs"
    try:
        g.mke2fs(device, blockscount=size // BLOCK_SIZE, blocksize=BLOCK_SIZE, fstype="ext4", label=options.label,
                 reservedblockspercentage=0)  # fmt: skip
        g.mkmountpoint(out_mp)
        g.mount(device, out_mp)
        # cp -a keeps owners, modes, hard links, xattrs (SELinux labels, ACLs), sparse files, devices, times.
        g.cp_a(f"{root_mp}/.", out_mp)
        if boot_mp is not None:
            g.cp_a(f"{boot_mp}/.", f"{out_mp}/boot")
        g.umount(out_mp)
        g.sync()
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        if "No space left on device" in text:
            raise InvalidOptions(
                f"the rootfs ({size / GiB:.2f} GiB) is too small for the image's files",
                hint="use a larger --live-rootfs-size, or the automatic size",
            ) from None
        raise InvalidImage(f"{info.image}: copying the root filesystem failed: {text}") from None
    # The appliance is done with the drive: it becomes rootfs.img, cut to the filesystem's size.
    with AtomicOutput(dest, durable=False) as tmp:  # a work file, as in from_partition
        os.replace(drive, tmp)
        os.truncate(tmp, size)
        _finish_image(tmp, str(info.root.device))
    return _result(dest, Method.COPY, boot_merged=boot_mp is not None)


def _finish_image(image: Path, what: str) -> None:
    """Discard free blocks (holes for the squashfs stage) and make sure the result checks clean."""
    e2fs.fsck(image, repair=True, discard=True, what=what)
    final = e2fs.fsck(image, repair=False)
    if not final.clean:
        raise InternalError(f"the new rootfs.img does not check clean: {final.output.splitlines()[-1]}")


def _result(path: Path, method: Method, *, boot_merged: bool, sb: e2fs.Superblock | None = None) -> RootfsImage:
    sb = sb or e2fs.superblock(path)
    return RootfsImage(
        path=path,
        size=path.stat().st_size,
        allocated=sparse.allocated_bytes(path),
        content=sb.used_bytes,
        method=method,
        label=sb.label,
        uuid=sb.uuid,
        boot_merged=boot_merged,
    )


def build_rootfs(
    guest: Guest | Callable[[], Guest],
    info: ImageInfo,
    dest: Path,
    options: RootfsOptions,
    *,
    workdir: Path,
    work_drive: tuple[Path, str] | Callable[[], tuple[Path, str]] | None = None,
    progress: Progress | None = None,
    native: NativeImage | None = None,
) -> RootfsImage:
    """Stage 2: build ``dest`` (``LiveOS/rootfs.img``) from the inspected image.

    ``guest`` is the image in the appliance, or what launches it when first needed (the copy
    method; /boot with the partition method, unless ``native``, the host's reader of the
    image, reads it).  ``work_drive`` is the (host file, appliance device) of the writable
    drive attached to the appliance at launch (see :func:`work_drive_size`), or what gives it;
    the copy method needs it.
    """
    progress = progress or Progress()
    method, why = choose_method(info, options)
    log.info("rootfs: %s method (%s)", method, why)

    def appliance() -> Guest:
        return guest if not callable(guest) else guest()

    with progress.stage("rootfs") as stage:
        stage.message(f"{method} method: {why}")
        if method is Method.COPY:
            g = appliance()
            drive = work_drive() if callable(work_drive) else work_drive
            if drive is None:
                raise InternalError("the copy method needs a work drive attached to the appliance")
            return by_copy(g, info, drive=drive[0], device=drive[1], dest=dest, options=options)
        root = info.root
        assert root.offset is not None and root.length is not None
        boot = _native_boot(native, info)
        reader = native.format.reader_path if native is not None else None
        if boot is None and info.boot is not None:
            g = appliance()
            boot_mp = g.boot_mountpoint
            boot = ApplianceTree(g.g, boot_mp, workdir) if boot_mp is not None else None
            reader = g.format.reader_path
        elif reader is None:
            reader = appliance().format.reader_path
        boot_limit = info.boot.size if info.boot is not None else None
        return from_partition(
            image=Path(reader),  # the input as the guest stage opened it, not its path again
            image_format=info.format,
            offset=root.offset,
            length=root.length,
            boot=boot,
            boot_limit=boot_limit,
            dest=dest,
            options=options,
            workdir=workdir,
            what=f"the root filesystem {root.device} of {info.image.name}",
        )
