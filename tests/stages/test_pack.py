"""The pack stage: the appliance shut down before a layout packs from rootfs.img, after one that reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from liveimg.context import Build
from liveimg.layouts import Layout
from liveimg.options import BuildOptions
from liveimg.outdir import OutdirTransaction
from liveimg.progress import Progress
from liveimg.stages import pack
from tests.stages.standins import FakeGuest, image_info


class Recorded(Layout):
    name = "recorded"
    summary = "notes when it packs"
    file_name = "live.img"
    packer = "record"

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def pack(self, ctx: Build) -> Any:
        self.events.append("packed")
        (ctx.txn.out / self.file_name).write_bytes(b"live")
        return ctx.txn.out / self.file_name

    def manifest(self, ctx: Build) -> dict[str, Any]:
        return {}


class FromGuest(Recorded):
    reads_guest = True


@pytest.mark.parametrize(
    ("layout", "order"),
    [(Recorded, ["appliance closed", "packed"]), (FromGuest, ["packed", "appliance closed"])],
)
def test_the_appliance_is_shut_down_when_the_layout_no_longer_needs_it(
    tmp_path: Path, txn: OutdirTransaction, layout: type[Recorded], order: list[str]
) -> None:
    events: list[str] = []
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 4096)
    ctx = Build(image, BuildOptions(), layout(events), txn, Progress())
    fake: Any = FakeGuest(image_info(image), events)
    ctx.guest = fake
    pack.run(ctx)
    assert events == order
    assert ctx.live == txn.out / "live.img"
    assert set(ctx.timings) == {"record"}  # timed under the layout's packer name
