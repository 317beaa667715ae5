"""``squashfs-ext4``, the default layout: ``LiveOS/rootfs.img`` (ext4) inside a squashfs, as lorax makes it.

Every dracut's dmsquash-live boots it: it mounts the squashfs, then the ext4 image in it as the
root (under a device-mapper snapshot or an overlay).  The squashfs is packed on the host, by
liveimg's own writer or mksquashfs (``--squashfs-backend``), once the appliance is shut down.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from liveimg.layouts.base import ROOTFS_IMG, Layout
from liveimg.manifest import jsonable
from liveimg.options import squashfs_options
from liveimg.pxe import SQUASHFS_NAME
from liveimg.squashfs import SquashfsOptions, SquashfsResult, write_squashfs_file

if TYPE_CHECKING:
    from liveimg.context import Build


class SquashfsExt4(Layout):
    name = "squashfs-ext4"
    summary = "LiveOS/rootfs.img inside the squashfs, as lorax does"
    file_name = SQUASHFS_NAME
    packer = "squashfs"
    pack_options: SquashfsOptions  # set by preflight

    def preflight(self, ctx: Build) -> None:
        self.pack_options = squashfs_options(ctx.options, ctx.info.arch)

    def pack(self, ctx: Build) -> SquashfsResult:
        return write_squashfs_file(
            ctx.rootfs.path, ctx.txn.out / self.file_name, ROOTFS_IMG, self.pack_options, ctx.progress,
            backend=ctx.options.squashfs_backend, cache=ctx.cache,
        )  # fmt: skip

    def manifest(self, ctx: Build) -> dict[str, Any]:
        return {"backend": ctx.options.squashfs_backend, **jsonable(asdict(self.pack_options))}


__all__ = ["SquashfsExt4"]
