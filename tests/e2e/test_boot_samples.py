"""The samples are working installs: they boot in QEMU to their marker line, directly and over PXE.

Each boot takes about two minutes under TCG, so the tier stays small: the atomic sample with
its own kernel, initramfs and BLS arguments (issue 3's proof that the input works), then the
same kernel and initramfs over real PXE: pxelinux over QEMU's TFTP, and lpxelinux over HTTP
from our loopback server through the restricted network's forward.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from liveimg.boot import BootResult, DirectKernel, Disk, HttpServer, Machine, boot, prepare_pxelinux
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


def test_atomic_sample_boots_over_pxelinux_tftp(
    atomic_image: Path, atomic_boot_files: samples.BootFiles, tmp_path: Path
) -> None:
    support.need("qemu-system-x86_64", "socat")
    support.need_file("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    support.need_file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu")
    files = atomic_boot_files
    netboot = prepare_pxelinux(tmp_path / "tftp", kernel=files.kernel, initrd=files.initrd, append=files.options)
    machine = Machine(disks=(Disk(atomic_image),), netboot=netboot)
    result = boot(machine, tmp_path / "boot", timeout=BOOT_TIMEOUT)
    check_atomic_marker(result, atomic_image)
    console = result.console_log.read_text(errors="replace")
    # it really went through pxelinux: its messages, and the BOOT_IMAGE= it adds to the command line
    assert "Loading vmlinuz" in console
    assert "Command line: BOOT_IMAGE=vmlinuz initrd=initramfs.img " in console


def test_atomic_sample_boots_over_lpxelinux_http(
    atomic_image: Path, atomic_boot_files: samples.BootFiles, tmp_path: Path
) -> None:
    support.need("qemu-system-x86_64", "socat")
    support.need_file("/usr/lib/PXELINUX/lpxelinux.0", "pxelinux")
    support.need_file("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu")
    files = atomic_boot_files
    www = tmp_path / "www"
    www.mkdir()
    for path in (files.kernel, files.initrd):
        (www / path.name).symlink_to(path)
    with HttpServer(www) as server:
        netboot = prepare_pxelinux(
            tmp_path / "tftp",
            kernel=server.guest_url(files.kernel.name),
            initrd=server.guest_url(files.initrd.name),
            append=files.options,
            http=True,
        )
        machine = Machine(disks=(Disk(atomic_image),), netboot=netboot, forwards=(server.forward(),))
        result = boot(machine, tmp_path / "boot", timeout=BOOT_TIMEOUT)
        served = {(r.path, r.bytes_sent) for r in server.requests if r.method == "GET"}
    check_atomic_marker(result, atomic_image)
    assert f"Command line: BOOT_IMAGE={server.guest_url(files.kernel.name)} " in result.console_log.read_text()
    for path in (files.kernel, files.initrd):
        assert (f"/{path.name}", path.stat().st_size) in served, served
