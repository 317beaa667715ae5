"""``erofs``: ``LiveOS/rootfs.img`` (ext4) inside an EROFS image packed by ``mkfs.erofs`` (lorax's erofs-ext4).

Only dracut-ng mounts it, and only a kernel with EROFS and the chosen compressor reads it:
:mod:`liveimg.erofs` reads both from the image, so that one that could not boot the result is
refused before the long stages.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from liveimg import erofs
from liveimg.layouts.base import ROOTFS_IMG, Layout
from liveimg.manifest import jsonable

if TYPE_CHECKING:
    from liveimg.context import Build
    from liveimg.options import BuildOptions


class ErofsExt4(Layout):
    name = "erofs"
    summary = "LiveOS/rootfs.img inside an EROFS image (mkfs.erofs; the image's dracut must be dracut-ng)"
    file_name = erofs.EROFS_NAME
    packer = "erofs"
    # dracut-ng loads erofs itself; naming the driver also serves dracuts that mount with -t auto.
    dracut_args = ("--add-drivers", "erofs")
    pack_options: erofs.ErofsOptions  # set by preflight
    packed: erofs.ErofsResult  # set by pack

    def check(self, options: BuildOptions) -> None:
        # Said before the appliance starts: no erofs-utils, or a compression erofs does not have.
        erofs.host_tool()
        erofs.compressor_name(options.compression)

    def preflight(self, ctx: Build) -> None:
        host = erofs.host_tool()  # missing erofs-utils: said now, not after the rootfs stage
        kver = ctx.info.kernel.version
        support = erofs.guest_support(ctx.system_tree(), kver)
        erofs.check_guest(support, kver)
        compressor = erofs.choose_compressor(ctx.options.compression, support, host)
        self.pack_options = erofs.ErofsOptions.from_compress_args(compressor, ctx.options.compress_args)

    def pack(self, ctx: Build) -> erofs.ErofsResult:
        dest = ctx.txn.out / self.file_name
        self.packed = erofs.pack_file(ctx.rootfs.path, dest, ROOTFS_IMG, self.pack_options, ctx.progress)
        return self.packed

    def manifest(self, ctx: Build) -> dict[str, Any]:
        return {"tool": f"mkfs.erofs {self.packed.tool_version}", **jsonable(asdict(self.packed.options))}


__all__ = ["ErofsExt4"]
