"""The pxe stage: lorax's PXE_CONFIG, the ready boot configurations, the cloud-init seed (:mod:`liveimg.pxe`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg.pxe import LiveBoot, write_pxe

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    info = ctx.info
    deployment = info.deployment
    ctx.boot = LiveBoot(
        kernel=ctx.kernel,
        initramfs=ctx.initrd.path.name,
        kver=info.kernel.version,
        title=info.os_release.get("PRETTY_NAME") or info.os_release.get("NAME") or "Linux",
        ostree_arg=deployment.ostree_arg if deployment is not None else None,
        image_args=tuple(deployment.options) if deployment is not None else (),
        squashfs=ctx.layout.file_name,
        seed_id=ctx.input_digest.result(),
        efi=ctx.efi,
        embedded=ctx.embedded.file if ctx.has("embedded") and ctx.embedded is not None else None,
        ram_floor_mib=ctx.ram_floor.need_mib,
    )
    with ctx.stage("pxe"), ctx.progress.stage("pxe"):
        ctx.pxe = write_pxe(ctx.txn.out, ctx.boot, ctx.options.pxe)
