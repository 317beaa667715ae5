"""The rootfs stage: ``LiveOS/rootfs.img``, the physical root with /boot merged, ext4 (:mod:`liveimg.rootfs`).

Every layout's initramfs is built from it, and the kernel copied out of it, whatever the
live file then holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg.rootfs import build_rootfs

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    with ctx.stage("rootfs"):
        live_os = ctx.txn.work / "LiveOS"
        live_os.mkdir()
        ctx.rootfs = build_rootfs(
            ctx.guest, ctx.info, live_os / "rootfs.img", ctx.options.rootfs, workdir=ctx.txn.work,
            work_drive=(ctx.drive, ctx.guest.work_devices[0]), progress=ctx.progress,
        )  # fmt: skip
