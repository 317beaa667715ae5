"""The live file, packed by the layout: the squashfs or erofs stage (the layout's ``packer`` names it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    layout = ctx.layout
    if not layout.reads_guest:
        ctx.close_appliance()  # before the long host-side packing, to give it the appliance's memory
    with ctx.stage(layout.packer):
        ctx.live = layout.pack(ctx)
    ctx.close_appliance()
