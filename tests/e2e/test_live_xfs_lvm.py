"""Root on LVM with xfs: rootfs.img is made by the copy method in the appliance, and the result boots.

The build also carries a cloud-init NoCloud seed: the boot test serves it over HTTP and the
booted live system fetches its meta-data (the sample has no cloud-init to apply it).
"""

from __future__ import annotations

from pathlib import Path

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.pxe import CloudInitSeed, PxeOptions
from liveimg.rootfs import Method
from tests.e2e.live import build_sample


def test_xfs_on_lvm_goes_through_the_copy_path_and_boots(tmp_path: Path) -> None:
    seed = CloudInitSeed(hostname="liveimg-seeded")
    manifest = build_sample(
        "atomic-xfs-lvm", tmp_path / "out", pxe=PxeOptions(url="http://192.0.2.1/live", cloud_init=seed)
    )
    assert manifest["rootfs"]["method"] == Method.COPY.value
    assert (tmp_path / "out/cloud-init/meta-data").is_file()
    result = boot_test(tmp_path / "out", BootTestOptions(via="kernel", workdir=tmp_path / "boot"))
    assert result.ok, result.summary() + "\n" + result.boot.explain()
    assert result.checks["ostree-booted"] == "yes"
    assert result.checks["fstype"] == "ext4"
    assert result.checks["seed"] == "ok" and result.checks["seed-hostname"] == "liveimg-seeded"
    http = (result.workdir / "http.log").read_text()
    assert "GET /cloud-init/meta-data 200" in http
