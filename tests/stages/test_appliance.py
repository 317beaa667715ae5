"""The appliance stage: the input probed and opened once; that open file is hashed and given to libguestfs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from liveimg import run as runner
from liveimg.context import Build
from liveimg.layouts import get_layout
from liveimg.options import BuildOptions
from liveimg.outdir import OutdirTransaction
from liveimg.progress import Progress
from liveimg.rootfs import work_drive_size
from liveimg.stages import appliance
from tests.stages.standins import FakeGuest, image_info
from tests.support import need


def test_the_input_is_probed_once_and_that_open_file_is_what_is_hashed_and_launched(
    tmp_path: Path, txn: OutdirTransaction, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("qemu-img", "mkfs.ext4")
    image = tmp_path / "root.ext4"
    runner.run(["mkfs.ext4", "-q", str(image), "4M"])
    original = hashlib.sha256(image.read_bytes()).hexdigest()
    launched: dict[str, Any] = {}

    def open_guest(probed: Any, **options: Any) -> FakeGuest:
        launched.update(options, image=probed)
        image.unlink()  # a file put at the path meanwhile is not the input any more
        image.write_bytes(b"another file")
        return FakeGuest(image_info(tmp_path / "root.ext4"), [])

    monkeypatch.setattr(appliance, "open_guest", open_guest)
    ctx = Build(image, BuildOptions(), get_layout("squashfs-ext4"), txn, Progress())
    appliance.run(ctx)
    assert launched["image"] is ctx.input  # not a path to probe again
    assert (ctx.input.format, ctx.input.virtual_size) == ("raw", 4 << 20)
    assert ctx.input_digest.result() == original
    assert launched["work_drives"] == [ctx.drive] and ctx.drive.parent == txn.work
    assert ctx.drive.stat().st_size == work_drive_size(4 << 20, BuildOptions().rootfs)
    assert launched["memsize"] == appliance.APPLIANCE_MEMORY_MIB and launched["tmpdir"] == txn.work
    assert isinstance(ctx.guest, FakeGuest)
