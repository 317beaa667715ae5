"""The Build context: artifacts set by one stage and read by later ones, and the stage guard with its timing."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liveimg.context import Build
from liveimg.errors import HostError, InternalError
from liveimg.layouts import get_layout
from liveimg.options import BuildOptions
from liveimg.outdir import OutdirTransaction
from liveimg.progress import Progress
from tests.stages.standins import FakeGuest, image_info


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Build]:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 4096)
    txn = OutdirTransaction(tmp_path / "out")
    try:
        yield Build(image, BuildOptions(), get_layout("squashfs-ext4"), txn, Progress())
    finally:
        txn.close()


def test_an_artifact_read_before_its_stage_ran_is_an_internal_error(ctx: Build) -> None:
    assert not ctx.has("info")
    with pytest.raises(InternalError) as excinfo:
        ctx.info  # noqa: B018
    assert str(excinfo.value) == "the build has no info yet: a stage reads it before the one that makes it"
    ctx.info = image_info(ctx.image)
    assert ctx.has("info") and ctx.info.kernel.version == "6.1.0-9-amd64"


def test_a_stages_time_is_added_up_under_its_name(ctx: Build) -> None:
    with ctx.stage("dracut"):
        time.sleep(0.05)
    with ctx.stage("dracut"):  # the kernel's copy is part of the dracut stage
        time.sleep(0.05)
    with ctx.stage("manifest", timed=False):
        pass
    assert list(ctx.timings) == ["dracut"] and 0.1 <= ctx.timings["dracut"] < 5


def test_a_full_disk_in_a_stage_names_the_stage(ctx: Build) -> None:
    with pytest.raises(HostError) as excinfo, ctx.stage("squashfs"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.txn.out / "live.img"))
    assert str(excinfo.value).startswith(f"no space left on device in {ctx.image.parent} during the squashfs stage (")
    assert "squashfs" in ctx.timings  # a failed stage's time is kept too


def test_the_appliance_is_closed_once_and_only_if_it_was_opened(ctx: Build) -> None:
    ctx.close_appliance()  # none yet: nothing to do
    events: list[str] = []
    fake: Any = FakeGuest(image_info(ctx.image), events)
    ctx.guest = fake
    ctx.close_appliance()
    ctx.close_appliance()
    assert events == ["appliance closed"]


def test_a_result_asked_for_before_the_stages_made_it_is_an_internal_error(ctx: Build) -> None:
    with pytest.raises(InternalError, match=r"^the build has no info yet"):
        ctx.result()
