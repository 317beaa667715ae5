"""The atomic sample is a working install: it boots in QEMU from its own disk to its marker line.

Its own kernel, initramfs and BLS arguments, before liveimg touches it.  (PXE itself is
exercised with liveimg's artifacts: tests/e2e/test_live_atomic.py boots them with pxelinux
over TFTP and with iPXE over HTTP.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from liveimg.console import BootResult
from liveimg.qemu import DirectKernel, Disk, Machine, boot
from tests import samples, support

log = logging.getLogger(__name__)
BOOT_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def atomic_boot_files(atomic_image: Path, tmp_path_factory: pytest.TempPathFactory) -> samples.BootFiles:
    return samples.boot_files(atomic_image, tmp_path_factory.mktemp("atomic-boot"))


def check_atomic_marker(result: BootResult, image: Path) -> None:
    assert result.ok, result.explain()
    assert result.reason == "marker", result.explain()
    meta = samples.manifest(image)
    assert result.marker["ostree-booted"] == "yes"
    # / is the deployment directory on the root partition (vda3), not the physical root
    root = result.marker["root"]
    assert root.startswith(f"/dev/vda3[/ostree/deploy/{meta['os_name']}/deploy/"), root
    assert result.marker["fstype"] == "ext4"
    assert result.marker["hostname"] == "liveimg-sample"
    print(f"boot to marker: {result.seconds:.0f} s")


def test_atomic_sample_boots_with_its_own_kernel_and_bls_args(
    atomic_image: Path, atomic_boot_files: samples.BootFiles, tmp_path: Path
) -> None:
    support.need("qemu-system-x86_64")
    files = atomic_boot_files
    assert "ostree=/ostree/boot." in files.options
    before = atomic_image.stat().st_mtime_ns
    machine = Machine(disks=(Disk(atomic_image),), kernel=DirectKernel(files.kernel, files.initrd, files.options))
    result = boot(machine, tmp_path, timeout=BOOT_TIMEOUT)
    check_atomic_marker(result, atomic_image)
    assert atomic_image.stat().st_mtime_ns == before  # snapshot=on: the input was never written
