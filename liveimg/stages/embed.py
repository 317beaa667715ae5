"""The embed stage, with ``--embed-rootfs``: the live file as a second initrd (:mod:`liveimg.embed`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from liveimg.embed import CPIO_NAME, size_warnings, write_embedded

if TYPE_CHECKING:
    from liveimg.context import Build

log = logging.getLogger(__name__)


def run(ctx: Build) -> None:
    if not ctx.options.embed_rootfs:
        ctx.embedded = None
        return
    with ctx.stage("embed"), ctx.progress.stage("embed") as stage:
        ctx.embedded = write_embedded(Path(ctx.live.path), ctx.txn.out / CPIO_NAME)
        ctx.embed_warnings = tuple(
            size_warnings(ctx.embedded.size, ctx.initrd.path.stat().st_size, ctx.ram_floor.initramfs_bytes)
        )
        for warning in ctx.embed_warnings:
            log.warning("embed: %s", warning)
            stage.message(warning)
