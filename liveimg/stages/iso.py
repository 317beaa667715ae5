"""The iso stage, with ``--iso``: the hybrid live ISO of the artifacts (:mod:`liveimg.iso`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg.iso import build_iso, default_label

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    options = ctx.options.iso
    if options is None:
        return
    os_release = ctx.info.os_release
    label = options.label or default_label(os_release.get("ID"), os_release.get("VERSION_ID"), ctx.info.arch)
    with ctx.stage("iso"):
        ctx.iso = build_iso(ctx.txn.out, ctx.boot, ctx.options.pxe, label, ctx.progress)
