"""The appliance stage: the input probed and opened once; that open file is hashed and given to libguestfs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from liveimg import run as runner
from liveimg.context import Build
from liveimg.layouts import get_layout
from liveimg.nativeimage import NativeImage, NativeUnavailable
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
    ctx = Build(image, BuildOptions(inspect="appliance"), get_layout("squashfs-ext4"), txn, Progress())
    appliance.run(ctx)
    assert launched["image"] is ctx.input  # not a path to probe again
    assert (ctx.input.format, ctx.input.virtual_size) == ("raw", 4 << 20)
    assert ctx.input_digest.result() == original
    assert launched["work_drives"] == [ctx.drive] and ctx.drive.parent == txn.work
    assert ctx.drive.stat().st_size == work_drive_size(4 << 20, BuildOptions().rootfs)
    assert launched["memsize"] == appliance.APPLIANCE_MEMORY_MIB and launched["tmpdir"] == txn.work
    assert ctx.inspector is ctx.guest and ctx.appliance_reasons == ["--inspect appliance"]
    assert isinstance(ctx.guest, FakeGuest)


def _launches(monkeypatch: pytest.MonkeyPatch, image: Path) -> list[Any]:
    launched: list[Any] = []

    def open_guest(probed: Any, **options: Any) -> FakeGuest:
        launched.append(probed)
        return FakeGuest(image_info(image), [])

    monkeypatch.setattr(appliance, "open_guest", open_guest)
    return launched


def test_auto_reads_an_ext4_image_natively_and_launches_no_appliance(
    tmp_path: Path, txn: OutdirTransaction, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("mkfs.ext4")
    image = tmp_path / "root.ext4"
    (tmp_path / "tree/etc").mkdir(parents=True)
    (tmp_path / "tree/etc/os-release").write_text("ID=toy\n")
    runner.run(["mkfs.ext4", "-q", "-d", str(tmp_path / "tree"), str(image), "4M"])
    launched = _launches(monkeypatch, image)
    ctx = Build(image, BuildOptions(), get_layout("squashfs-ext4"), txn, Progress())
    appliance.run(ctx)
    assert isinstance(ctx.inspector, NativeImage) and launched == [] and not ctx.has("guest")
    # a stage that needs the appliance launches it then, once, and says why
    assert ctx.appliance("a test needs it") is ctx.appliance("again")
    assert len(launched) == 1 and ctx.appliance_reasons == ["a test needs it"]


def test_auto_launches_the_appliance_for_a_qcow2_and_native_refuses_it(
    tmp_path: Path, txn: OutdirTransaction, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("qemu-img")
    image = tmp_path / "disk.qcow2"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "4M"])
    launched = _launches(monkeypatch, image)
    ctx = Build(image, BuildOptions(), get_layout("squashfs-ext4"), txn, Progress())
    appliance.run(ctx)
    assert len(launched) == 1 and ctx.inspector is ctx.guest
    assert ctx.appliance_reasons == [
        "the native reader does not read the image: a qcow2 image (the native reader reads raw images)"
    ]
    ctx = Build(image, BuildOptions(inspect="native"), get_layout("squashfs-ext4"), txn, Progress())
    with pytest.raises(NativeUnavailable, match="a qcow2 image"):
        appliance.run(ctx)
    assert len(launched) == 1
