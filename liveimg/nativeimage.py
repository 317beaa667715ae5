"""Inspect a raw image on the host, without the libguestfs appliance, where that is as safe.

For a raw disk (or a bare filesystem image) whose partitions are all ext2/3/4 filesystems or
hold nothing, :class:`NativeImage` finds the partitions (:mod:`liveimg.parttable`), reads the
filesystems (:mod:`liveimg.extfs`) and hands them to the same role and description logic as
the appliance (:mod:`liveimg.imageinfo`, :mod:`liveimg.ostree`, through
:class:`~liveimg.fsview.GuestTree`), so both give the same :class:`~liveimg.imageinfo.ImageInfo`.

A partition that is not ext may hold nothing or swap (``blkid -p``, sandboxed, says which, as
it says it in the appliance).  Anything else -- another format than raw, LVM, xfs, btrfs, FAT,
LUKS, logical MBR partitions, a feature or a file the ext reader does not read exactly -- is
:class:`NativeRefused`, raised before or during inspection: ``--inspect auto`` then starts the
appliance, ``--inspect native`` makes it the error :class:`NativeUnavailable`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from liveimg import sandbox
from liveimg.errors import InvalidImage, ToolError
from liveimg.extfs import ExtFS, ExtRefused, ExtTree, probe_superblock
from liveimg.fsview import GuestTree, MergedFS
from liveimg.guest import ImageFormat, Layout, describe_layout
from liveimg.imageinfo import ImageInfo, Partition, Probe, choose_roles, probe_tree
from liveimg.parttable import TableRefused, read_table

log = logging.getLogger(__name__)

#: Bytes of a non-ext partition that must be all zeros for it to count as holding no
#: filesystem (the signatures blkid looks for lie there).
_EMPTY_CHECK = 1 << 20
_DEVICE = "/dev/sda"
#: What blkid may find on a partition that is not ext for the native reader to go on: nothing,
#: or swap (the appliance mounts neither; anything else it would mount, assemble or open).
_NOT_MOUNTED = (None, "swap")


class NativeRefused(Exception):  # a verdict: the appliance reads this image instead
    """The native reader does not read this image exactly as the appliance would (its text says why)."""


class NativeUnavailable(InvalidImage):
    """``--inspect native`` was asked for an image only the appliance reads."""


class NativeImage:
    """A raw image open for inspection on the host: the same interface as :class:`liveimg.guest.Guest`
    for what the guest stage and the preflight use (:meth:`layout`, :meth:`inspect`, :meth:`tree`),
    and :meth:`boot_source` for the rootfs stage.
    """

    backend = "native"

    def __init__(self, fmt: ImageFormat) -> None:
        if fmt.format != "raw":
            raise NativeRefused(f"a {fmt.format} image (the native reader reads raw images)")
        if fmt.file is None:
            raise NativeRefused("the input is not open")
        self.format = fmt
        self.image = fmt.path
        self._fd = fmt.file.fd
        self._layout: Layout | None = None
        self._fs: dict[str, ExtFS] = {}

    # --- discovery ---------------------------------------------------------------------------

    def _partitions(self) -> tuple[str | None, list[Partition]]:
        size = self.format.virtual_size
        try:
            table = read_table(self._fd, size, self.image)
        except TableRefused as exc:
            raise NativeRefused(f"its partition table: {exc}") from None
        if table is None:
            part = self._describe(_DEVICE, 0, size, number=None, parttype=None, partuuid=None, partlabel=None)
            if part.fstype is None:
                raise NativeRefused("no partition table and no ext filesystem")
            return None, [part]
        parts = [
            self._describe(
                f"{_DEVICE}{e.number}",
                e.offset,
                e.length,
                number=e.number,
                parttype=e.parttype,
                partuuid=e.partuuid,
                partlabel=e.partlabel,
            )
            for e in table.entries
        ]
        return table.kind, parts

    def _describe(
        self, device: str, offset: int, length: int, *, number: int | None, parttype: str | None,
        partuuid: str | None, partlabel: str | None,
    ) -> Partition:  # fmt: skip
        head = _read(self._fd, offset, min(length, _EMPTY_CHECK))
        try:
            sb = probe_superblock(head)
        except ExtRefused as exc:
            raise NativeRefused(f"{device}: {exc}") from None
        if sb is None:
            fstype = label = uuid = None
            if head.strip(b"\0"):  # not empty: what blkid (the appliance's prober) finds there, in the sandbox
                found = self._blkid(offset, length)
                if found.get("TYPE") not in _NOT_MOUNTED:
                    raise NativeRefused(f"{device} holds {found.get('TYPE')}, not an ext filesystem")
                fstype, label, uuid = found.get("TYPE") or None, found.get("LABEL") or None, found.get("UUID") or None
        else:
            if head[:4] == b"XFSB" or head[65536 + 64 : 65536 + 72] == b"_BHRfS_M" or head[512:520] == b"LABELONE":
                raise NativeRefused(f"{device}: an ext superblock beside another filesystem's signature")
            fstype, label, uuid = sb.fstype, sb.label, sb.uuid
        return Partition(device=device, fstype=fstype, size=length, label=label, uuid=uuid, number=number,
                         offset=offset, length=length, parttype=parttype, partuuid=partuuid,
                         partlabel=partlabel)  # fmt: skip

    def _blkid(self, offset: int, length: int) -> dict[str, str]:
        """``blkid -p`` on ``length`` bytes of the image from ``offset`` (sandboxed, as the input's probe)."""
        from liveimg.guest import PROBE_LIMITS  # noqa: PLC0415

        argv: list[str | sandbox.File] = ["blkid", "-p", "-o", "export", "-O", str(offset), "-S", str(length),
                                          sandbox.File(Path(self.format.reader_path))]  # fmt: skip
        try:
            result = sandbox.run(argv, what="blkid", limits=PROBE_LIMITS, check=False)
        except (sandbox.LimitExceeded, ToolError) as exc:
            raise NativeRefused(f"blkid: {exc}") from None
        if result.returncode not in (0, 2):  # 2: nothing found
            raise NativeRefused(f"blkid failed at byte {offset} ({result.returncode})")
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    def filesystem(self, part: Partition) -> ExtFS:
        if part.device not in self._fs:
            assert part.offset is not None and part.length is not None
            try:
                self._fs[part.device] = ExtFS(self._fd, part.offset, part.length, f"{self.image} {part.device}")
            except ExtRefused as exc:
                raise NativeRefused(str(exc)) from None
        return self._fs[part.device]

    def layout(self) -> Layout:
        """The partitions and filesystems and their roles, found once (as :meth:`liveimg.guest.Guest.layout`)."""
        if self._layout is None:
            started = time.monotonic()
            try:
                table, parts = self._partitions()
                probes: list[tuple[Partition, Probe, GuestTree]] = []
                trees: dict[str, GuestTree] = {}
                for part in parts:
                    if part.fstype not in ("ext2", "ext3", "ext4"):
                        continue  # nothing, or swap: the appliance does not mount them either
                    tree = GuestTree(self.filesystem(part))
                    trees[part.device] = tree
                    probes.append((part, probe_tree(tree), tree))
                roles = choose_roles(str(self.image), probes, [], looked_at=parts)
                mounts = {"/": trees[roles.root.device].fs}
                if roles.boot is not None:
                    mounts["/boot"] = trees[roles.boot.device].fs
            except ExtRefused as exc:
                raise NativeRefused(str(exc)) from None
            merged = GuestTree(MergedFS(mounts, label=str(self.image)))
            self._layout = Layout(table, tuple(parts), roles.root, roles.boot, roles.esp, roles.warnings, merged)
            log.debug("native discovery of %s took %.2f s", self.image, time.monotonic() - started)
        return self._layout

    def tree(self) -> GuestTree:
        """The physical root with /boot merged, for reading guest files safely."""
        return self.layout().tree

    def inspect(self, deployment: str | int | None = None, kernel: str | None = None) -> ImageInfo:
        """As :meth:`liveimg.guest.Guest.inspect`; :class:`NativeRefused` when the reader gives up on a file."""
        try:
            return describe_layout(self.image, self.format, self.layout(), deployment, kernel)
        except ExtRefused as exc:
            raise NativeRefused(str(exc)) from None

    def boot_source(self, info: ImageInfo) -> ExtTree | None:
        """The separate boot filesystem as a tree source for the rootfs stage (None if /boot is on the root)."""
        return ExtTree(self.filesystem(info.boot)) if info.boot is not None else None


def _read(fd: int, offset: int, size: int) -> bytes:
    return os.pread(fd, size, offset)
