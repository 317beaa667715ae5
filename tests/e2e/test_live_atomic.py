"""atomic sample -> `liveimg build` (lorax's defaults: xz + BCJ, xz initramfs) -> PXE boot in QEMU.

One build, booted over pxelinux and TFTP (with rd.live.overlay.size and a write that needs
it), checked from inside: / is the live device, the deployment that booted is the one chosen,
ostree says so.  iPXE over HTTP (with rd.writable.fsimg=1) boots the erofs build
(test_live_erofs.py), so that the e2e tier stays within its time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from liveimg.boottest import BootTestOptions, BootTestResult, boot_test
from liveimg.pxe import sha256_file
from tests.samples import sample_image
from tests.support import need, need_root

URL = "http://192.0.2.1/live"  # where a user would serve it; the boot test uses its own loopback URL


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    need_root()
    need("qemu-system-x86_64", "socat", "mksquashfs")
    image = sample_image("atomic")
    before = sha256_file(image)
    out = tmp_path_factory.mktemp("atomic") / "out"
    cmd = [sys.executable, "-m", "liveimg", "build", str(image), "-o", str(out), "--url", URL,
           "--kernel-arg", "rd.live.overlay.size=1024", "--progress", "json"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["stage"] for e in events if e.get("event") == "end"} >= {"guest", "rootfs", "squashfs", "dracut", "pxe"}
    return image, out, before


def _check(result: BootTestResult) -> None:
    assert result.ok, result.summary() + "\n" + result.boot.explain()


def test_artifacts_and_manifest(built: tuple[Path, Path, str]) -> None:
    image, out, before = built
    assert sha256_file(image) == before, "the input image changed"
    manifest = json.loads((out / "manifest.json").read_text())
    kver = manifest["kernel"]["version"]
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {
        "live-rootfs.squashfs.img", f"vmlinuz-{kver}", f"initramfs-{kver}.img", "PXE_CONFIG",
        "pxelinux.cfg/default", "boot.ipxe", "grub.cfg", "manifest.json",
    }  # fmt: skip
    assert manifest["input"]["sha256"] == before
    for name, art in manifest["artifacts"].items():
        assert sha256_file(out / name) == art["sha256"]
    ostree = manifest["deployment"]["ostree"]
    assert ostree.startswith("/ostree/boot.")
    assert manifest["squashfs"]["comp"] == "xz" and manifest["squashfs"]["Xbcj"] == ["x86"]
    assert manifest["initramfs"]["compression"] == "xz"
    assert any(e["module"] == "dmsquash-live-ntfs" for e in manifest["initramfs"]["left_out"])  # no ntfs-3g
    pxe = (out / "PXE_CONFIG").read_text().splitlines()
    assert pxe[1] == f"kernel <PXE_DIR>/vmlinuz-{kver}"
    assert pxe[2].startswith(f"append initrd=<PXE_DIR>/initramfs-{kver}.img root=live:<URL>/live-rootfs.squashfs.img ")
    assert f"ostree={ostree}" in pxe[2]
    assert f"root=live:{URL}/live-rootfs.squashfs.img" in (out / "pxelinux.cfg/default").read_text()
    listing = subprocess.run(["unsquashfs", "-lls", str(out / "live-rootfs.squashfs.img")],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "squashfs-root/LiveOS/rootfs.img" in listing


def test_pxelinux_boot_with_a_larger_overlay(built: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, out, _ = built
    result = boot_test(out, BootTestOptions(via="pxelinux", write_mib=600, workdir=tmp_path))
    _check(result)
    assert result.checks["ostree-booted"] == "yes"
    assert result.checks["write"] == "ok"
    assert result.overlay_bytes == 1024 * 1024**2  # rd.live.overlay.size=1024 from the build
    assert "BOOTIF=" in result.boot.console_log.read_text(errors="replace")  # pxelinux's IPAPPEND 2
