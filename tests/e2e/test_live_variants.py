"""The other samples through the whole pipeline and a boot: classic, root on LVM+xfs, the flat squashfs type.

Fast codecs here (lz4 squashfs, zstd initramfs): the codecs are not the point, and the
default ones are exercised by test_live_atomic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.dracut import Compression, DracutOptions
from liveimg.pipeline import BuildOptions, RootfsType, build
from liveimg.pxe import sha256_file
from liveimg.rootfs import Method
from tests.samples import sample_image
from tests.support import need, need_root

FAST = {"compression": "lz4", "dracut": DracutOptions(compression=Compression.ZSTD, level=3)}


def _build(variant: str, out: Path, **options: object) -> dict[str, object]:
    need_root()
    need("qemu-system-x86_64", "socat")
    image = sample_image(variant)
    before = sha256_file(image)
    result = build(image, out, BuildOptions(**{**FAST, **options}))  # type: ignore[arg-type]
    assert sha256_file(image) == before, "the input image changed"
    manifest: dict[str, object] = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    return manifest


def test_classic_boots_from_the_squashfs_disk(tmp_path: Path) -> None:
    manifest = _build("classic", tmp_path / "out")
    assert manifest["deployment"] is None
    assert "ostree=" not in (tmp_path / "out/PXE_CONFIG").read_text()
    result = boot_test(tmp_path / "out", BootTestOptions(via="disk", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    assert result.checks["ostree-booted"] == "no"
    assert result.checks["root"].startswith("/dev/mapper/live-rw")


def test_xfs_on_lvm_goes_through_the_copy_path_and_boots(tmp_path: Path) -> None:
    manifest = _build("atomic-xfs-lvm", tmp_path / "out")
    assert manifest["rootfs"]["method"] == Method.COPY.value  # type: ignore[index]
    result = boot_test(tmp_path / "out", BootTestOptions(via="kernel", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    assert result.checks["ostree-booted"] == "yes"
    assert result.checks["fstype"] == "ext4"


def test_flat_squashfs_boots_under_an_overlay(tmp_path: Path) -> None:
    manifest = _build("atomic", tmp_path / "out", rootfs_type=RootfsType.SQUASHFS)
    assert manifest["rootfs"]["type"] == "squashfs"  # type: ignore[index]
    result = boot_test(tmp_path / "out", BootTestOptions(via="kernel", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    assert result.checks["fstype"] == "overlay"
    assert result.checks["ostree-booted"] == "yes"


@pytest.mark.parametrize("variant", ["atomic-2deploy"])
def test_second_deployment_by_choice(variant: str, tmp_path: Path) -> None:
    manifest = _build(variant, tmp_path / "out", deployment="1")
    deployment = manifest["deployment"]
    assert isinstance(deployment, dict)
    result = boot_test(tmp_path / "out", BootTestOptions(via="kernel", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    booted = [line for line in result.ostree_status if line.lstrip().startswith("*")]
    assert f"{deployment['checksum']}.{deployment['serial']}" in booted[0]
