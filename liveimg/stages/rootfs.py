"""The rootfs stage: ``LiveOS/rootfs.img``, the physical root with /boot merged, ext4 (:mod:`liveimg.rootfs`).

Every layout's initramfs is built from it, and the kernel copied out of it, whatever the
live file then holds.  The appliance is launched here only if the method needs it (the copy
method, or a /boot the native reader does not read).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from liveimg.nativeimage import NativeImage
from liveimg.rootfs import build_rootfs

if TYPE_CHECKING:
    from liveimg.context import Build
    from liveimg.guest import Guest


def run(ctx: Build) -> None:
    with ctx.stage("rootfs"):
        live_os = ctx.txn.work / "LiveOS"
        live_os.mkdir()
        native = ctx.inspector if isinstance(ctx.inspector, NativeImage) else None

        def guest() -> Guest:
            return ctx.appliance("the rootfs stage reads the image in the appliance")

        def work_drive() -> tuple[Path, str]:
            return ctx.drive, guest().work_devices[0]

        ctx.rootfs = build_rootfs(
            guest, ctx.info, live_os / "rootfs.img", ctx.options.rootfs, workdir=ctx.txn.work,
            work_drive=work_drive, progress=ctx.progress, native=native,
        )  # fmt: skip
