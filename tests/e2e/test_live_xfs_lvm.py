"""Root on LVM with xfs: rootfs.img is made by the copy method in the appliance, and the result boots."""

from __future__ import annotations

from pathlib import Path

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.rootfs import Method
from tests.e2e.live import build_sample


def test_xfs_on_lvm_goes_through_the_copy_path_and_boots(tmp_path: Path) -> None:
    manifest = build_sample("atomic-xfs-lvm", tmp_path / "out")
    assert manifest["rootfs"]["method"] == Method.COPY.value
    result = boot_test(tmp_path / "out", BootTestOptions(via="kernel", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    assert result.checks["ostree-booted"] == "yes"
    assert result.checks["fstype"] == "ext4"
