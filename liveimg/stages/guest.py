"""The guest stage: what the image holds (root, /boot, deployment, kernel), inspected in the appliance."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liveimg.context import Build

log = logging.getLogger(__name__)


def run(ctx: Build) -> None:
    with ctx.stage("guest"), ctx.progress.stage("guest"):
        ctx.info = ctx.guest.inspect(deployment=ctx.options.deployment, kernel=ctx.options.kernel)
    for warning in ctx.info.warnings:
        log.warning("%s", warning)
