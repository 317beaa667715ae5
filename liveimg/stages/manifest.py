"""The manifest stage: ``manifest.json``, what the build made, from what and how (:mod:`liveimg.manifest`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg.manifest import describe, write_manifest

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    with ctx.stage("manifest", timed=False):
        ctx.manifest = describe(ctx)
        write_manifest(ctx.txn.out, ctx.manifest)
