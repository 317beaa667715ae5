"""The guest stage: what the image holds (root, /boot, deployment, kernel), inspected natively or in the appliance."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from liveimg.nativeimage import NativeRefused, NativeUnavailable

if TYPE_CHECKING:
    from liveimg.context import Build

log = logging.getLogger(__name__)


def run(ctx: Build) -> None:
    with ctx.stage("guest"), ctx.progress.stage("guest"):
        try:
            ctx.info = ctx.inspector.inspect(deployment=ctx.options.deployment, kernel=ctx.options.kernel)
        except NativeRefused as exc:
            if ctx.options.inspect == "native":
                raise NativeUnavailable(f"{ctx.image}: the native reader gave up: {exc}",
                                        hint="use --inspect auto") from None  # fmt: skip
            log.info("inspection: appliance (the native reader gave up: %s)", exc)
            ctx.inspector = ctx.appliance(f"the native reader gave up: {exc}")
            ctx.info = ctx.inspector.inspect(deployment=ctx.options.deployment, kernel=ctx.options.kernel)
    for warning in ctx.info.warnings:
        log.warning("%s", warning)
