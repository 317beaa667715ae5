"""A fourth layout is one class and its entry in the registry: a toy one, defined and registered here.

The toy serves ``LiveOS/rootfs.img`` itself as the live file (dmsquash-live also boots a bare
filesystem image), asks the image's dracut for a driver, appends an initramfs hook, and says
in the manifest how it "packed".  ``build()`` runs it through the layout protocol with nothing
else changed; the stages that need a real appliance are stand-ins (tests/stages/standins.py),
the others are real.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liveimg import cli, layouts
from liveimg.context import Build
from liveimg.dracut import Initramfs
from liveimg.errors import InvalidOptions
from liveimg.layouts import ROOTFS_IMG, Hook, Layout
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from liveimg.pxe import PxeOptions
from tests.stages import standins
from tests.stages.standins import KERNEL, KVER, PRE_MOUNT


@dataclass(frozen=True)
class Copied:
    path: Path
    size: int


class PlainExt4(Layout):
    """The live file is ``LiveOS/rootfs.img`` itself, uncompressed."""

    name = "toy-ext4"
    summary = "LiveOS/rootfs.img itself, uncompressed"
    file_name = "live-rootfs.ext4.img"
    packer = "copy"
    rootfs_image = None
    dracut_args = ("--add-drivers", "ext4")
    hooks = (Hook("pre-mount", "10-toy.sh", "echo the toy layout\n"),)

    def check(self, options: BuildOptions) -> None:
        if options.compression != "xz":
            raise InvalidOptions("the toy layout compresses nothing: leave --compression alone")

    def preflight(self, ctx: Build) -> None:
        self.kver = ctx.info.kernel.version

    def pack(self, ctx: Build) -> Copied:
        dest = ctx.txn.out / self.file_name
        shutil.copyfile(ctx.rootfs.path, dest)
        self.packed = Copied(dest, dest.stat().st_size)
        return self.packed

    def manifest(self, ctx: Build) -> dict[str, Any]:
        return {"from": ROOTFS_IMG, "kver": self.kver, "size": self.packed.size}


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(layouts.LAYOUTS, PlainExt4.name, PlainExt4)  # the registry entry


def test_build_runs_a_new_layout_through_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered: None
) -> None:
    events: list[str] = []
    dracut = standins.use(monkeypatch, events)
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    out = tmp_path / "out"

    result = build(image, out, BuildOptions(rootfs_type="toy-ext4", pxe=PxeOptions(url="http://pxe.example/toy")))

    live = out / "live-rootfs.ext4.img"
    with open(live, "rb") as f:  # the stand-in's rootfs.img: an ext4 superblock (magic, label) at 1024
        f.seek(1024 + 0x38)
        assert f.read(2) == b"\x53\xef"
        f.seek(1024 + 0x78)
        assert f.read(16).rstrip(b"\0") == b"LiveOS"
    assert isinstance(result.squashfs, Copied) and result.squashfs.size == live.stat().st_size
    assert events == ["inspect", "dracut planned", "appliance closed"]  # closed before pack: it does not read the guest
    assert dracut.options is not None and dracut.options.extra_args[-2:] == ("--add-drivers", "ext4")
    with Initramfs(out / f"initramfs-{KVER}.img") as ird:
        assert ird.read(f"{PRE_MOUNT}/10-toy.sh") == b"echo the toy layout\n"
    assert (out / f"vmlinuz-{KVER}").read_bytes() == KERNEL
    assert "root=live:http://pxe.example/toy/live-rootfs.ext4.img " in (out / "pxelinux.cfg/default").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    rootfs = manifest["rootfs"]
    assert (rootfs["file"], rootfs["type"], rootfs["image"]) == ("live-rootfs.ext4.img", "toy-ext4", None)
    assert manifest["copy"] == {"from": "LiveOS/rootfs.img", "kver": KVER, "size": live.stat().st_size}
    assert set(manifest["stages"]) == {"guest", "rootfs", "copy", "dracut", "initramfs", "pxe"}
    assert manifest["artifacts"]["live-rootfs.ext4.img"]["size"] == live.stat().st_size
    assert manifest["boot"]["squashfs"] == "live-rootfs.ext4.img"


def test_the_new_layouts_check_runs_before_anything_is_touched(tmp_path: Path, registered: None) -> None:
    with pytest.raises(InvalidOptions, match="the toy layout compresses nothing"):
        build(tmp_path / "disk.raw", tmp_path / "out", BuildOptions(rootfs_type="toy-ext4", compression="zstd"))
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_offers_the_new_layout(capsys: pytest.CaptureFixture[str], registered: None) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["build", "--help"])
    assert exited.value.code == 0
    assert "toy-ext4: LiveOS/rootfs.img itself, uncompressed" in " ".join(capsys.readouterr().out.split())
