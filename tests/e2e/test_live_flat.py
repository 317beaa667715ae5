"""The flat squashfs rootfs type: the tree itself in the squashfs, the root an OverlayFS over it."""

from __future__ import annotations

from pathlib import Path

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.options import RootfsType
from tests.e2e.live import build_sample


def test_flat_squashfs_boots_under_an_overlay(tmp_path: Path) -> None:
    manifest = build_sample("atomic", tmp_path / "out", rootfs_type=RootfsType.SQUASHFS)
    assert manifest["rootfs"]["type"] == "squashfs"
    result = boot_test(tmp_path / "out", BootTestOptions(via="kernel", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    assert result.checks["fstype"] == "overlay"
    assert result.checks["ostree-booted"] == "yes"
