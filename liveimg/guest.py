"""Open an input image read-only with libguestfs and describe it.

::

    with open_guest(Path("disk.qcow2")) as guest:       # one appliance launch
        info = guest.inspect()                            # ImageInfo: root, /boot, deployment, kernel...
        info.deployment.ostree_arg                        # /ostree/boot.1/fedora/<bootcsum>/0
        guest.g                                           # the raw guestfs handle, for later stages

Safety: the input is opened once (:class:`InputFile`) and every reader -- the probes,
libguestfs, the rootfs stage -- reads that open file, so a file swapped in at the path
meanwhile is never read.  The format is detected with ``qemu-img info`` and passed explicitly
(qemu never guesses it, see CVE-2010-3851); images that would make qemu read *other* host files
(a qcow2 backing file or external data file, a multi-file vmdk) are refused; the input is
attached with ``readonly=True``, so every write, even a journal replay, lands in a throw-away
overlay and the input is never modified.  Raw inputs are checked with ``blkid -p`` before any
appliance is started, so a text file fails in milliseconds.  ``qemu-img``, ``blkid`` and
``sfdisk`` parse the image's bytes: they run in :mod:`liveimg.sandbox`, with a memory limit.

Drives and devices (libguestfs names them in the order they are added): the input is
``/dev/sda``; ``work_drives`` are attached WRITABLE, as raw, after it: ``/dev/sdb``,
``/dev/sdc``, ... (:attr:`Guest.work_devices`).  libguestfs's direct backend cannot hot-add
drives, so stages that need scratch space in the same appliance (the rootfs file-copy path,
dracut in the appliance) must ask for it when the guest is opened.

Mounts inside the appliance: nothing is mounted on ``/``.  Inspection mounts every readable
filesystem of the input read-only on its own mount point ``/liveimg-<n>`` (:attr:`Guest.mounts`
maps device to mount point; :attr:`Guest.root_mountpoint`, :attr:`Guest.boot_mountpoint` after
:meth:`Guest.inspect`).  :meth:`Guest.mount_ro` mounts more, :meth:`Guest.unmount_all` clears
them.  Guest files should be read through :meth:`Guest.tree` (resolution inside the guest root,
see :mod:`liveimg.fsview`), never by following guest paths in the appliance.

Cost: the appliance's launch dominates (``benchmarks/README.md``, stage *guest*); each daemon
call that runs a helper program (``blkid``, ``mount``) is slow under TCG, so discovery uses one
``blkid -p`` per device (it gives the partition's exact offset and size too) instead of
``list_filesystems`` or ``part_list``; file lookups are cached (the input is read-only).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import posixpath
import re
import signal
import stat
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from liveimg import cancel, sandbox, tcg
from liveimg import run as runner
from liveimg.accel import Accel, choose_accel, default_cache_dir
from liveimg.errors import HostError, ImageNotFound, InvalidImage, ToolError
from liveimg.fsview import FileStat, GuestTree, MergedFS
from liveimg.imageinfo import (
    ImageInfo,
    NoRootFilesystem,
    NotADiskImage,
    Partition,
    Probe,
    UnreadableFilesystem,
    choose_roles,
    describe_root,
    probe_tree,
)
from liveimg.progress import Progress

log = logging.getLogger(__name__)

__all__ = [
    "Guest",
    "GuestfsFS",
    "ImageFormat",
    "ImageInfo",
    "InputFile",
    "Layout",
    "NoRootFilesystem",
    "NotADiskImage",
    "Partition",
    "UnreadableFilesystem",
    "inspect_image",
    "open_guest",
    "partition_from_blkid",
    "probe_image",
]

#: Formats accepted as input (all single-file formats qemu reads).
FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed")
#: Filesystems worth mounting to look for a root or /boot.
_MOUNTABLE = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "msdos", "f2fs", "jfs", "reiserfs", "iso9660", "udf")
_SECTOR = 512  # libblkid reports PART_ENTRY_OFFSET/SIZE in 512-byte sectors whatever the device's sector size
MOUNT_PREFIX = "/liveimg-"


class InputFile:
    """The input image, opened once: every later reader reads this open file, never the path again.

    A file swapped in at the same path after the probe is never read.  Readers in this process
    or its children open :attr:`reader_path` (``/proc/<pid>/fd/<fd>``, which leads to this open
    file whatever the path now names); sandboxed tools get the descriptor itself.  The
    descriptor is closed when the object is collected, or by :meth:`close`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        self._closer = weakref.finalize(self, os.close, self.fd)
        self.stat = os.fstat(self.fd)

    @property
    def reader_path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        self._closer()


@dataclass(frozen=True)
class ImageFormat:
    """What ``qemu-img info`` says about the input: its format and virtual size in bytes.

    ``file`` is the input as :func:`probe_image` opened it; :attr:`reader_path` names that open
    file for every later reader (libguestfs, the rootfs stage).
    """

    path: Path
    format: str
    virtual_size: int
    file: InputFile | None = field(default=None, compare=False, repr=False)

    @property
    def reader_path(self) -> str:
        return self.file.reader_path if self.file is not None else os.fspath(self.path)


#: What a probe of the input may use: these tools read headers and tables, and write nothing.
PROBE_LIMITS = sandbox.Limits(seconds=60, tasks=64, memory=1 * sandbox.GiB, file_size=sandbox.MiB,
                              output=16 * sandbox.MiB)  # fmt: skip


def _probe(argv: list[str | sandbox.File], *, check: bool = True) -> runner.Completed:
    return sandbox.run(argv, what=str(argv[0]), limits=PROBE_LIMITS, check=check)


def probe_image(image: Path) -> ImageFormat:
    """Check the input file and detect its format, before any appliance is started.

    The file is opened once (:class:`InputFile`); ``qemu-img``, ``blkid`` and ``sfdisk`` read
    that open file in :mod:`liveimg.sandbox`, with a memory limit.  Raises
    :class:`ImageNotFound`, :class:`NotADiskImage` (empty, a text file, a directory),
    :class:`InvalidImage` (an unsupported format, a backing file or another external file) or
    :class:`HostError` (unreadable, or unreadable by the sandbox user when liveimg runs as root).
    """
    image = Path(image)
    if not image.exists():
        raise ImageNotFound(f"{image}: no such file")
    if image.is_dir():
        raise NotADiskImage(f"{image}: not a disk image but a directory")
    try:
        opened = InputFile(image)
    except PermissionError:
        raise HostError(f"{image}: cannot read it (permission denied)") from None
    except OSError as exc:
        raise HostError(f"{image}: cannot open it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(opened.stat.st_mode) and not stat.S_ISBLK(opened.stat.st_mode):
        opened.close()
        raise NotADiskImage(f"{image}: not a disk image but a special file")
    ids = sandbox.sandbox_ids()
    if not sandbox.can_read(opened.stat, ids):
        opened.close()
        assert ids is not None
        raise HostError(
            f"{image}: liveimg's sandbox user (uid {ids[0]}), which reads the image when liveimg runs as root, "
            f"cannot read it (mode {stat.S_IMODE(opened.stat.st_mode):04o}, owner uid {opened.stat.st_uid})",
            hint=f"make it readable to that user (setfacl -m u:{ids[0]}:r {image}), or set "
            f"${sandbox.SANDBOX_USER_ENV} to a user who can read it",
        )
    source = sandbox.File(Path(opened.reader_path))
    try:
        result = _probe(["qemu-img", "info", "--output=json", "-U", source])
    except sandbox.LimitExceeded as exc:
        raise InvalidImage(f"{image}: qemu-img info was stopped: {exc.message}") from None
    except ToolError as exc:
        if exc.returncode is None:  # not installed, or timed out
            raise
        last = (exc.stderr.strip().splitlines() or [str(exc)])[-1]
        raise NotADiskImage(f"{image}: not a readable disk image: {last}") from None
    try:
        info = json.loads(result.stdout)
        fmt = str(info.get("format", ""))
        size = int(info.get("virtual-size", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ToolError(result.argv, 0, message=f"qemu-img info printed no JSON: {exc}") from None
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        raise InvalidImage(
            f"{image}: a {fmt} image with a backing file ({backing}) is refused: reading it would read another "
            "file of this host",
            hint=f"flatten it first: qemu-img convert -O {fmt} {image} flat.{fmt}",
        )
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise InvalidImage(
            f"{image}: a {fmt} image with an external data file ({data['data-file']}) is refused",
            hint=f"flatten it first: qemu-img convert -O {fmt} {image} flat.{fmt}",
        )
    for extent in data.get("extents") or ():
        name = extent.get("filename")
        if name and name != info.get("filename"):
            raise InvalidImage(f"{image}: a {fmt} image made of several files ({name}) is refused")
    if fmt not in FORMATS:
        raise InvalidImage(f"{image}: unsupported image format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if size <= 0:
        raise NotADiskImage(f"{image}: not a disk image: it is empty")
    if fmt == "raw":
        found = _probe(["blkid", "-p", "-o", "export", source], check=False)
        if found.returncode == 2:
            raise NotADiskImage(
                f"{image}: not a disk image: no partition table and no filesystem signature (blkid -p found none)"
            )
        if "PTTYPE=" in found.stdout:
            _check_partition_table(image, source, size)
    return ImageFormat(image, fmt, size, opened)


def _check_partition_table(image: Path, source: sandbox.File, size: int) -> None:
    """Refuse a raw disk whose partition table points past its end (the appliance checks others)."""
    result = _probe(["sfdisk", "--json", source], check=False)
    if result.returncode != 0:
        return  # a table sfdisk does not read: the appliance's blkid still checks every partition
    try:
        table = json.loads(result.stdout)["partitiontable"]
        device = str(table["device"])
        sector = int(table.get("sectorsize", _SECTOR))
        entries = [(str(p["node"]), int(p["start"]), int(p["size"])) for p in table.get("partitions", ())]
    except (ValueError, KeyError, TypeError):
        return
    for node, start, length in entries:
        if (start + length) * sector > size:
            number = re.sub(r"^p(?=[0-9])", "", node.removeprefix(device)) or node  # /dev/fd/3 + p1
            raise InvalidImage(
                f"{image}: partition {number} (bytes {start * sector}+{length * sector}) extends beyond the end "
                f"of the disk ({size} bytes): a truncated or hostile image"
            )


class GuestfsFS:
    """A filesystem mounted in the libguestfs appliance, as a :class:`~liveimg.fsview.ReadOnlyFS`.

    Results are cached: the input is read-only, and each call is a round trip to the appliance.
    Errors other than "does not exist" (EIO on a corrupt filesystem...) are
    :class:`UnreadableFilesystem`.
    """

    def __init__(self, g: Any, mountpoint: str, label: str) -> None:
        self.g = g
        self.mountpoint = mountpoint
        self.label = label
        self._lstat: dict[str, FileStat | None] = {}
        self._links: dict[str, str] = {}
        self._dirs: dict[str, list[str]] = {}

    def _path(self, path: str) -> str:
        rel = path.lstrip("/")
        return posixpath.join(self.mountpoint, rel) if rel else self.mountpoint

    def _fail(self, what: str, path: str, exc: RuntimeError) -> UnreadableFilesystem:
        return UnreadableFilesystem(f"{self.label}: cannot {what} {path}: {exc}")

    def lstat(self, path: str) -> FileStat | None:
        if path not in self._lstat:
            try:
                st = self.g.lstatns(self._path(path))
                self._lstat[path] = FileStat.from_mode(int(st["st_mode"]), int(st["st_size"]))
            except RuntimeError as exc:
                if not _is_errno(exc, errno.ENOENT, errno.ENOTDIR):
                    raise self._fail("stat", path, exc) from None
                self._lstat[path] = None
        return self._lstat[path]

    def readlink(self, path: str) -> str:
        if path not in self._links:
            try:
                self._links[path] = str(self.g.readlink(self._path(path)))
            except RuntimeError as exc:
                raise self._fail("read the link", path, exc) from None
        return self._links[path]

    def listdir(self, path: str) -> list[str]:
        if path not in self._dirs:
            try:
                self._dirs[path] = [str(n) for n in self.g.ls(self._path(path))]
            except RuntimeError as exc:
                raise self._fail("list", path, exc) from None
        return list(self._dirs[path])

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        chunks: list[bytes] = []
        try:
            while size > 0:
                chunk = bytes(self.g.pread(self._path(path), min(size, 1 << 20), offset))
                if not chunk:
                    break
                chunks.append(chunk)
                size -= len(chunk)
                offset += len(chunk)
        except RuntimeError as exc:
            raise self._fail("read", path, exc) from None
        return b"".join(chunks)


def partition_from_blkid(
    device: str, info: dict[str, str], *, disk_size: int, image: Path, size: int = 0, lvm: bool = False
) -> Partition:
    """A :class:`Partition` from ``blkid -p -o export`` fields.

    For a partition of the disk, ``PART_ENTRY_OFFSET``/``PART_ENTRY_SIZE`` (512-byte sectors, as
    libblkid always counts them, absolute even for logical partitions) give the exact byte range;
    a range beyond the end of the disk is a hostile or truncated image and :class:`InvalidImage`.
    """

    def get(key: str) -> str | None:
        return info.get(key) or None

    number = offset = length = None
    if "PART_ENTRY_OFFSET" in info:
        number = int(info["PART_ENTRY_NUMBER"])
        offset = int(info["PART_ENTRY_OFFSET"]) * _SECTOR
        length = int(info["PART_ENTRY_SIZE"]) * _SECTOR
        size = length
        if offset + length > disk_size:
            raise InvalidImage(
                f"{image}: partition {number} (bytes {offset}+{length}) extends beyond the end of the disk "
                f"({disk_size} bytes): a truncated or hostile image"
            )
    parttype = get("PART_ENTRY_TYPE")
    return Partition(
        device=device,
        fstype=get("TYPE"),
        size=size,
        label=get("LABEL"),
        uuid=get("UUID"),
        number=number,
        offset=offset,
        length=length,
        parttype=parttype.lower() if parttype else None,
        partuuid=get("PART_ENTRY_UUID"),
        partlabel=get("PART_ENTRY_NAME"),
        lvm=lvm,
    )


@dataclass(frozen=True)
class Layout:
    """The filesystems of the input and their roles, found once per :class:`Guest`.

    ``tree`` is the physical root with the boot filesystem merged at ``/boot``; ``warnings``
    are oddities (unreadable filesystems, several candidates for a role).
    """

    partition_table: str | None
    partitions: tuple[Partition, ...]
    root: Partition
    boot: Partition | None
    esp: Partition | None
    warnings: tuple[str, ...]
    tree: GuestTree


class Guest:
    """An input image opened in a libguestfs appliance; make it with :func:`open_guest`.

    ``g`` is the guestfs handle, ``image`` the input, ``input_device`` its device in the
    appliance (``/dev/sda``), ``work_devices`` the writable work drives (``/dev/sdb``, ...).
    """

    #: Who reads the image (the manifest's ``guest.backend``; :class:`liveimg.nativeimage.NativeImage` says native).
    backend = "appliance"

    def __init__(
        self, g: Any, fmt: ImageFormat, work_drives: Sequence[Path], resources: contextlib.ExitStack | None = None
    ) -> None:
        self.g = g
        self._resources = resources or contextlib.ExitStack()
        self.image = fmt.path
        self.format = fmt
        # libguestfs names drives /dev/sda, /dev/sdb, ... in the order they were added (guestfs(3)
        # "BLOCK DEVICE NAMING"); asking with list_devices costs a udev settle (~1 s under TCG).
        names = [_drive_name(i) for i in range(1 + len(work_drives))]
        self.input_device = names[0]
        self.work_devices: tuple[str, ...] = tuple(names[1:])
        self.mounts: dict[str, str] = {}
        self._discovery: Layout | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Shut the appliance down (flushing the work drives) and free the handle."""
        if self._closed:
            return
        self._closed = True
        try:
            self.g.shutdown()
        except RuntimeError as exc:
            # A cancelled build killed QEMU on purpose (liveimg.cancel): nothing to report then.
            log.log(logging.DEBUG if cancel.requested() else logging.WARNING, "libguestfs shutdown: %s", exc)
        finally:
            try:
                self.g.close()
            finally:
                self._resources.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- mounts --------------------------------------------------------------------------

    def mount_ro(self, device: Partition | str, mountpoint: str | None = None) -> str:
        """Mount a filesystem of the image read-only; return its mount point in the appliance.

        ``device`` is a :class:`Partition` or its ``device`` (``btrfsvol:`` names work).  Without
        ``mountpoint`` one is made (``/liveimg-<n>``).  A filesystem already mounted is not
        mounted twice.  Raises :class:`UnreadableFilesystem` if the kernel refuses it.
        """
        if isinstance(device, Partition):
            device = device.device
        if device in self.mounts:
            return self.mounts[device]
        if mountpoint is None:
            mountpoint = f"{MOUNT_PREFIX}{len(self.mounts) + 1}"
            while mountpoint in self.mounts.values():
                mountpoint += "x"
        try:
            self.g.mkmountpoint(mountpoint)
        except RuntimeError as exc:
            if not _is_errno(exc, errno.EEXIST):
                raise HostError(f"cannot make the mount point {mountpoint} in the appliance: {exc}") from None
        try:
            self.g.mount_ro(device, mountpoint)
        except RuntimeError as exc:
            raise UnreadableFilesystem(
                f"{self.image}: cannot mount {device}: {_mount_error(exc)}", hint="is the image corrupt?"
            ) from None
        self.mounts[device] = mountpoint
        return mountpoint

    def unmount_all(self) -> None:
        """Unmount everything this object mounted.

        :class:`ImageInfo` objects already returned stay valid (they are plain data); the next
        :meth:`layout`, :meth:`tree` or :meth:`inspect` mounts the filesystems again.
        """
        for device, mountpoint in sorted(self.mounts.items(), key=lambda kv: len(kv[1]), reverse=True):
            try:
                self.g.umount(mountpoint)
            except RuntimeError as exc:
                log.warning("cannot unmount %s from %s: %s", device, mountpoint, exc)
        self.mounts.clear()
        self._discovery = None

    @property
    def root_mountpoint(self) -> str:
        """Where the physical root is mounted read-only in the appliance (after :meth:`inspect`)."""
        return self.mounts[self.layout().root.device]

    @property
    def boot_mountpoint(self) -> str | None:
        """Where the separate /boot filesystem is mounted read-only, None if /boot is a directory of the root."""
        boot = self.layout().boot
        return self.mounts[boot.device] if boot else None

    def tree(self) -> GuestTree:
        """The physical root with /boot merged, for reading guest files safely."""
        return self.layout().tree

    # --- discovery -----------------------------------------------------------------------

    def _blkid(self, device: str) -> dict[str, str]:
        try:
            return {str(k): str(v) for k, v in self.g.blkid(device).items()}
        except RuntimeError as exc:
            log.debug("blkid %s: %s", device, exc)
            return {}

    def _find_partitions(self) -> tuple[str | None, list[Partition]]:
        disk = self._blkid(self.input_device)
        table = disk.get("PTTYPE") or None
        parts: list[Partition] = []
        if table:
            pattern = re.compile(re.escape(self.input_device) + r"[0-9]+")
            devices = [str(p) for p in self.g.list_partitions() if pattern.fullmatch(str(p))]
            for device in sorted(devices, key=lambda d: int(d[len(self.input_device) :])):
                parts.append(
                    partition_from_blkid(
                        device, self._blkid(device), disk_size=self.format.virtual_size, image=self.image
                    )
                )
        elif disk.get("TYPE"):
            parts.append(
                Partition(
                    device=self.input_device,
                    fstype=disk["TYPE"],
                    size=self.format.virtual_size,
                    label=disk.get("LABEL") or None,
                    uuid=disk.get("UUID") or None,
                    offset=0,
                    length=self.format.virtual_size,
                )
            )
        else:
            raise NotADiskImage(f"{self.image}: not a disk image: no partition table and no filesystem on it")
        if any(p.fstype == "LVM2_member" for p in parts):
            parts += self._logical_volumes([p.device for p in parts if p.fstype == "LVM2_member"])
        return table, parts

    def _logical_volumes(self, pvs: list[str]) -> list[Partition]:
        volumes: list[Partition] = []
        ours = self._our_vgs(pvs)
        for lv in self.g.lvs():
            device = str(lv)
            if ours is not None and device.split("/")[2] not in ours:
                continue
            info = self._blkid(device)
            try:
                size = int(self.g.blockdev_getsize64(device))
            except RuntimeError:
                size = 0
            volumes.append(
                partition_from_blkid(
                    device, info, disk_size=self.format.virtual_size, image=self.image, size=size, lvm=True
                )
            )
        return volumes

    def _our_vgs(self, pvs: list[str]) -> set[str] | None:
        """Volume groups whose physical volumes are all on the input (None: no work drive, all are).

        PV UUIDs are compared as ``pvuuid`` and ``vgpvuuids`` print them (``pvs_full`` uses another
        format and the appliance's internal device names).
        """
        if not self.work_devices:
            return None
        on_input = {str(self.g.pvuuid(pv)) for pv in pvs}
        return {str(vg) for vg in self.g.vgs() if {str(u) for u in self.g.vgpvuuids(vg)} <= on_input}

    def _subvolumes(self, part: Partition, mountpoint: str) -> list[Partition]:
        try:
            listed = self.g.btrfs_subvolume_list(mountpoint)
        except RuntimeError as exc:
            log.warning("%s: cannot list the btrfs subvolumes of %s: %s", self.image, part.device, exc)
            return []
        subvolumes = []
        for sub in listed:
            path = str(sub["btrfssubvolume_path"]).strip("/")
            if path:
                subvolumes.append(
                    Partition(
                        device=f"btrfsvol:{part.device}/{path}",
                        fstype="btrfs",
                        size=part.size,
                        label=part.label,
                        uuid=part.uuid,
                        lvm=part.lvm,
                        subvolume=path,
                    )
                )
        return subvolumes

    def layout(self) -> Layout:
        """Find the partitions and filesystems and decide the roles (once; cached).

        Raises :class:`NotADiskImage`, :class:`NoRootFilesystem`, :class:`UnreadableFilesystem`.
        """
        if self._discovery is None:
            try:
                self._discovery = self._discover_now()
            except RuntimeError as exc:  # a libguestfs call failed where nothing more specific applies
                raise UnreadableFilesystem(f"{self.image}: libguestfs: {_one_line(exc)}") from None
        return self._discovery

    def _discover_now(self) -> Layout:
        started = time.monotonic()
        table, parts = self._find_partitions()
        probes: list[tuple[Partition, Probe, GuestTree]] = []
        failures: list[tuple[Partition, str]] = []
        trees: dict[str, GuestTree] = {}
        queue = list(parts)
        all_parts: list[Partition] = []
        while queue:
            part = queue.pop(0)
            all_parts.append(part)
            if part.fstype not in _MOUNTABLE:
                continue
            try:
                mountpoint = self.mount_ro(part.device)
            except UnreadableFilesystem as exc:
                failures.append((part, exc.message.rsplit(": ", 1)[-1]))
                continue
            tree = GuestTree(GuestfsFS(self.g, mountpoint, f"{self.image} {part.device}"))
            trees[part.device] = tree
            try:
                probes.append((part, probe_tree(tree), tree))
            except UnreadableFilesystem as exc:
                failures.append((part, str(exc)))
                continue
            if part.fstype == "btrfs" and part.subvolume is None:
                queue[0:0] = self._subvolumes(part, mountpoint)
        roles = choose_roles(str(self.image), probes, failures, looked_at=all_parts)
        mounts = {"/": trees[roles.root.device].fs}
        if roles.boot is not None:
            mounts["/boot"] = trees[roles.boot.device].fs
        tree = GuestTree(MergedFS(mounts, label=str(self.image)))
        log.debug("discovery of %s took %.1f s", self.image, time.monotonic() - started)
        return Layout(table, tuple(all_parts), roles.root, roles.boot, roles.esp, roles.warnings, tree)

    def inspect(self, deployment: str | int | None = None, kernel: str | None = None) -> ImageInfo:
        """Describe the image and choose a deployment (ostree: default, or by index, osname or
        checksum prefix) and a kernel (classic: newest, or by version).  May be called again with
        other choices; the filesystems are found once."""
        return describe_layout(self.image, self.format, self.layout(), deployment, kernel)


def describe_layout(
    image: Path, fmt: ImageFormat, found: Layout, deployment: str | int | None, kernel: str | None
) -> ImageInfo:
    """The :class:`ImageInfo` of an input whose filesystems ``found`` holds, whoever read them
    (the appliance, or :mod:`liveimg.nativeimage`): its root described, a deployment and a kernel chosen."""
    desc = describe_root(found.tree, image=str(image), boot_separate=found.boot is not None,
                         deployment=deployment, kernel=kernel)  # fmt: skip
    return ImageInfo(
        image=image,
        format=fmt.format,
        virtual_size=fmt.virtual_size,
        partition_table=found.partition_table,
        partitions=found.partitions,
        root=found.root,
        boot=found.boot,
        esp=found.esp,
        os_release=desc.os_release,
        arch=desc.arch,
        ostree=desc.ostree,
        deployments=desc.deployments,
        deployment=desc.deployment,
        kernels=desc.kernels,
        kernel=desc.kernel,
        warnings=found.warnings + desc.warnings,
    )


def _drive_name(index: int) -> str:
    """libguestfs's name of the drive added ``index``-th: /dev/sda, ..., /dev/sdz, /dev/sdaa, ..."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return "/dev/sd" + letters


def _is_errno(exc: RuntimeError, *codes: int) -> bool:
    """Whether a libguestfs error is one of these errnos (the Python bindings do not expose
    ``guestfs_last_errno``; the daemon's message ends with the C library's ``strerror``)."""
    return str(exc).rstrip().endswith(tuple(os.strerror(code) for code in codes))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _mount_error(exc: BaseException) -> str:
    """The kernel's reason from a libguestfs mount error, without the command echo."""
    text = _one_line(exc)
    return text.rsplit("mount: ", 1)[-1].replace("/sysroot", "") if "mount: " in text else text


def _bound_tcg_cache(g: Any) -> None:
    """Give the appliance's QEMU a bounded translation cache (see :mod:`liveimg.tcg`)."""
    size = tcg.tb_size_mib()
    if not size:
        return
    try:
        wrapper = tcg.qemu_wrapper(g.get_hv(), size, default_cache_dir())
    except OSError as exc:
        log.warning("QEMU keeps its default TCG cache: cannot write its wrapper (%s)", exc)
        return
    g.set_hv(str(wrapper))


def _appliance_killer(programs: frozenset[str]) -> Callable[[], None]:
    """Kill this process's children that run one of ``programs``: the appliance's QEMU (or its wrapper).

    libguestfs forks QEMU itself and tells its pid only after the launch (its handle's lock
    holds any other call until then), so a cancelled build finds it in ``/proc``: a child of
    this process whose command starts with the hypervisor libguestfs was given.
    """
    parent = os.getpid()

    def kill() -> None:
        for pid in _children_running(parent, programs):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    return kill


def _children_running(parent: int, programs: frozenset[str]) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])  # after "(comm)": state, ppid
            if ppid != parent:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                head = f.read().split(b"\0")[:3]  # a wrapper's script is its interpreter's first or second argument
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if any(os.fsdecode(arg) in programs for arg in head):
            found.append(int(entry.name))
    return found


def open_guest(
    image: Path | str | ImageFormat,
    *,
    accel: str | None = None,
    work_drives: Sequence[Path] = (),
    memsize: int | None = None,
    progress: Progress | None = None,
    tmpdir: Path | None = None,
) -> Guest:
    """Open ``image`` read-only in a libguestfs appliance, launched now and once.

    ``image`` is a path, probed first (:func:`probe_image`), or what a probe returned: the file
    it opened is the one the appliance reads.

    The :class:`Guest` is a context manager (``with open_guest(img) as guest:``); a caller that
    keeps it across stages calls :meth:`Guest.close` itself.  ``accel`` is passed to
    :func:`~liveimg.accel.choose_accel` (None: ``$LIVEIMG_ACCEL``, else the probe's cached
    answer).  ``work_drives`` are existing raw files attached writable as ``/dev/sdb``,
    ``/dev/sdc``, ...  ``memsize`` is the appliance's RAM in MiB (libguestfs's default otherwise;
    ``$LIBGUESTFS_MEMSIZE`` wins over both).  ``tmpdir`` is where libguestfs keeps its
    temporary files (the input's overlay): a build gives its own work directory, so that
    what a killed build leaves is removed with it (only the socket directory stays in
    ``$XDG_RUNTIME_DIR`` or /tmp: these bindings cannot move it).
    """
    fmt = image if isinstance(image, ImageFormat) else probe_image(Path(image))
    for drive in work_drives:
        if not Path(drive).is_file():
            raise HostError(f"work drive {drive} does not exist", hint="create it first, e.g. with truncate -s 4G")
    try:
        import guestfs  # noqa: PLC0415  # lazily: the rest of liveimg works without the bindings
    except ImportError:
        raise HostError(
            "the libguestfs Python bindings are missing",
            hint="install the Debian package python3-guestfs and use a venv made with --system-site-packages",
        ) from None
    choice = choose_accel(accel)
    g = guestfs.GuestFS(python_return_dict=True)
    resources = contextlib.ExitStack()
    try:
        g.set_identifier("liveimg")
        g.set_backend("direct")
        g.set_backend_settings(choice.libguestfs_settings())
        # How QEMU dies with liveimg.  Its own process group: a terminal's Ctrl-C reaches liveimg
        # alone, which closes the appliance on its way out (liveimg.cancel kills it at once).
        # libguestfs's recovery process (its default, asked for here all the same) kills QEMU
        # within 2 s of liveimg's death, even by SIGKILL, when nobody closed the handle.
        g.set_pgroup(True)
        g.set_recovery_proc(True)
        if tmpdir is not None:
            g.set_tmpdir(str(Path(tmpdir).absolute()))
        hypervisor = g.get_hv()
        if choice.accel is Accel.TCG:
            _bound_tcg_cache(g)
        resources.enter_context(runner.killer(_appliance_killer(frozenset({hypervisor, g.get_hv()}))))
        if memsize and not os.environ.get("LIBGUESTFS_MEMSIZE"):  # the user's setting wins
            g.set_memsize(memsize)
        g.add_drive(fmt.reader_path, readonly=True, format=fmt.format)  # the file probe_image opened
        for drive in work_drives:
            g.add_drive(str(drive), readonly=False, format="raw")
        started = time.monotonic()
        stage = progress.stage("appliance") if progress else contextlib.nullcontext()
        with stage:
            try:
                g.launch()
            except RuntimeError as exc:
                raise HostError(
                    f"the libguestfs appliance did not start ({choice.accel}): {_one_line(exc)}",
                    hint="run libguestfs-test-tool to see why",
                ) from None
    except RuntimeError as exc:  # add_drive and friends: an unexpected libguestfs refusal
        with contextlib.suppress(RuntimeError):
            g.close()
        resources.close()
        raise HostError(f"{fmt.path}: libguestfs: {_one_line(exc)}") from None
    except BaseException:
        with contextlib.suppress(RuntimeError):
            g.close()
        resources.close()
        raise
    log.debug("libguestfs appliance up in %.1f s (%s: %s)", time.monotonic() - started, choice.accel, choice.reason)
    return Guest(g, fmt, work_drives, resources)


def inspect_image(
    image: Path | str,
    *,
    deployment: str | int | None = None,
    kernel: str | None = None,
    accel: str | None = None,
    progress: Progress | None = None,
    backend: str = "auto",
) -> ImageInfo:
    """Open, inspect and close: for callers that need only the description.

    ``backend`` as ``--inspect``: ``auto`` reads the image on the host where
    :mod:`liveimg.nativeimage` reads it, else in the appliance; ``native`` or ``appliance`` only.
    """
    from liveimg.nativeimage import NativeImage, NativeRefused, NativeUnavailable  # noqa: PLC0415  # it imports this

    fmt = probe_image(Path(image))
    if backend != "appliance":
        try:
            return NativeImage(fmt).inspect(deployment=deployment, kernel=kernel)
        except NativeRefused as exc:
            if backend == "native":
                raise NativeUnavailable(f"{fmt.path}: the native reader does not read it: {exc}") from None
            log.info("inspection: appliance (the native reader does not read it: %s)", exc)
    with open_guest(fmt, accel=accel, progress=progress) as guest:
        with progress.stage("inspect") if progress else contextlib.nullcontext():
            return guest.inspect(deployment=deployment, kernel=kernel)
