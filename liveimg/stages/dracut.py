"""The dracut stage: the image's own dracut started on ``rootfs.img``, in the background.

dracut needs only ``rootfs.img``, not the live file: it runs (:class:`liveimg.background.Job`)
while the pack stage writes the live file, and the initramfs stage
(:mod:`liveimg.stages.initramfs`) waits for it.  A build that fails or is interrupted before
then kills it and waits for its thread (the job is one of the build's resources).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg.background import Job
from liveimg.dracut import Initrd, build_initramfs

if TYPE_CHECKING:
    from liveimg.context import Build
    from liveimg.progress import Progress


def run(ctx: Build) -> None:
    """Start the image's dracut beside the stages that follow; the initramfs stage takes its result."""
    info = ctx.info
    kver = info.kernel.version
    rootfs, work = ctx.rootfs.path, ctx.txn.work

    def dracut(progress: Progress) -> Initrd:
        with ctx.stage("dracut"):
            return build_initramfs(
                kver=kver,
                output=ctx.txn.out / f"initramfs-{kver}.img",
                rootfs=rootfs,
                deployment=info.deployment.path if info.deployment is not None else "/",
                options=ctx.options.dracut,
                workdir=work,
                log_path=work / "dracut.log",
                ostree=info.ostree,
                progress=progress,
                cache=ctx.cache,
            )

    job = Job("dracut", dracut, ctx.progress)
    ctx.resources.callback(job.cancel)  # a build that fails before run() kills it and waits for it
    ctx.dracut_job = job
