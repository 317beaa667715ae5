"""build() as its stages: the options and the layout checked first, each stage named in its own errors.

The stages that need a real appliance are stand-ins (tests/stages/standins.py); whole builds
are in tests/integration/test_pipeline.py and tests/e2e.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from liveimg import pipeline
from liveimg.errors import HostError, InternalError, InvalidOptions
from liveimg.iso import IsoOptions
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from liveimg.pxe import CloudInitSeed, PxeOptions
from liveimg.stages import (
    appliance,
    dracut,
    efi,
    embed,
    guest,
    initramfs,
    iso,
    kernel,
    manifest,
    pack,
    preflight,
    pxe,
    rootfs,
)
from tests.stages import standins
from tests.support import need


def test_the_stages_run_in_this_order() -> None:
    assert (
        appliance.run, guest.run, preflight.run, rootfs.run, dracut.run, pack.run, initramfs.run, embed.run,
        kernel.run, efi.run, pxe.run, iso.run, manifest.run,
    ) == pipeline.STAGES  # fmt: skip


def test_an_unknown_rootfs_type_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptions) as excinfo:
        build(tmp_path / "disk.raw", tmp_path / "out", BuildOptions(rootfs_type="ext4"))
    assert str(excinfo.value) == "unknown rootfs type 'ext4' (choose one of squashfs-ext4, squashfs, erofs)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"iso": IsoOptions()}, "--embed-rootfs and --iso cannot be used together"),
        ({"pxe": PxeOptions(url="http://pxe.example.com/live")}, "--url means nothing with --embed-rootfs"),
    ],
)
def test_embed_rootfs_with_what_it_does_not_go_with_is_refused_before_anything_is_touched(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOptions, match=message):
        build(tmp_path / "disk.raw", tmp_path / "out", BuildOptions(embed_rootfs=True, **options))
    assert list(tmp_path.iterdir()) == []


def test_embed_rootfs_takes_a_url_for_the_cloud_init_seed() -> None:
    pxe_options = PxeOptions(url="http://pxe.example.com/live", cloud_init=CloudInitSeed())
    pipeline.check_embed(BuildOptions(embed_rootfs=True, pxe=pxe_options))
    pipeline.check_embed(BuildOptions(iso=IsoOptions(), pxe=PxeOptions(url="http://pxe.example.com/live")))


def test_the_flat_layout_refuses_mksquashfs_before_anything_is_touched(tmp_path: Path) -> None:
    options = BuildOptions(rootfs_type="squashfs", squashfs_backend="mksquashfs")
    with pytest.raises(InvalidOptions, match="use --squashfs-backend native"):
        build(tmp_path / "disk.raw", tmp_path / "out", options)
    assert list(tmp_path.iterdir()) == []


def test_the_erofs_layouts_driver_reaches_dracut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout's dracut arguments are added to the options every stage sees (the dracut preflight too)."""
    need("mkfs.erofs")
    seen: list[Any] = []
    monkeypatch.setattr(pipeline, "STAGES", (lambda ctx: seen.append(ctx.options.dracut.extra_args),))
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 4096)
    with pytest.raises(InternalError, match=r"^the build has no info yet"):  # the one stage made nothing
        build(image, tmp_path / "out", BuildOptions(rootfs_type="erofs", compression="lz4"))
    assert seen == [("--install", "sha256sum tee", "--add-drivers", "erofs")]


@pytest.mark.parametrize("verify", [True, False])
def test_the_live_check_s_tools_reach_dracut_unless_no_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(pipeline, "STAGES", (lambda ctx: seen.append(ctx.options.dracut.extra_args),))
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 4096)
    with pytest.raises(InternalError, match=r"^the build has no info yet"):
        build(image, tmp_path / "out", BuildOptions(verify=verify))
    assert seen == [("--install", "sha256sum tee") if verify else ()]


def test_a_full_disk_in_the_rootfs_stage_is_said_for_the_rootfs_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not for the appliance stage: the appliance is not a stage around the ones that use it."""
    standins.use(monkeypatch, [])
    monkeypatch.setattr(pipeline, "STAGES", tuple(rootfs.run if s is standins.rootfs else s for s in pipeline.STAGES))

    def full(_guest: Any, _info: Any, dest: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))

    monkeypatch.setattr(rootfs, "build_rootfs", full)
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 4096)
    with pytest.raises(HostError) as excinfo:
        build(image, tmp_path / "out", BuildOptions())
    assert str(excinfo.value).startswith(f"no space left on device in {tmp_path} during the rootfs stage (")
    assert sorted(os.listdir(tmp_path)) == ["disk.raw"]
