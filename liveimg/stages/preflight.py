"""The preflight, part of the guest stage: what cannot work is refused before the long stages.

An image whose dracut cannot build a live initramfs (:func:`liveimg.dracut.plan_dracut`), or
that cannot boot the chosen layout (:meth:`~liveimg.layouts.Layout.preflight`); and the UEFI
network boot chain is found (:func:`liveimg.efi.locate`: ``--efi`` without one is refused here),
while the appliance can still read the installed system, for the efi stage to copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg import livenbd
from liveimg.dracut import plan_dracut
from liveimg.efi import locate

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    with ctx.stage("guest", timed=False):
        info = ctx.info
        plan_dracut(ctx.system_tree(), kver=info.kernel.version, ostree=info.ostree, options=ctx.options.dracut,
                    output="/run/initramfs.cpio")  # fmt: skip
        ctx.layout.preflight(ctx)
        if livenbd.wanted(ctx.options.pxe.url):
            livenbd.check_image(ctx.system_tree())
        ctx.efi_chain = locate(ctx.system_tree(), info.arch, ctx.options.efi)
