"""atomic sample -> `liveimg.build` (lorax's defaults: xz + BCJ, xz initramfs) -> PXE boot in QEMU.

The README's Python example, run as written (on the sample as qcow2): one build, booted over
pxelinux and TFTP (with rd.live.overlay.size and a write that needs it), checked from inside:
/ is the live device, the deployment that booted is the one chosen, ostree says so.  The same
build boots again via grub-bios: SeaBIOS PXE into the host's BIOS GRUB, which reads the
grub/grub.cfg liveimg wrote (the build has the sample's UEFI chain).  iPXE over
HTTP (with rd.writable.fsimg=1) boots the erofs build (test_live_erofs.py), so that the e2e
tier stays within its time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liveimg.boottest import GRUB_BIOS_DIR, BootTestOptions, BootTestResult, boot_test
from liveimg.manifest import sha256_file
from tests.samples import sample_image
from tests.support import need, need_file, need_root

URL = "http://pxe.example.com/atomic"  # the README's; the boot test uses its own loopback URL
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The Python block of the README's "Using it from Python"."""
    text = README.read_text()
    section = text[text.index("## Using it from Python") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")]


@dataclass
class Built:
    image: Path
    out: Path
    before: str
    events: list[dict[str, Any]]
    boot: BootTestResult


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The README's example, run as written, on the atomic sample as qcow2 (its "atomic.qcow2")."""
    need_root()
    need("qemu-system-x86_64", "socat", "mksquashfs")
    image = sample_image("atomic", "qcow2")
    before = sha256_file(image)
    where = tmp_path_factory.mktemp("atomic")
    code = readme_example()
    assert code.count('"atomic.qcow2"') == 1, code
    namespace: dict[str, Any] = {}
    stdout = io.StringIO()
    cwd = os.getcwd()
    os.chdir(where)  # the example writes "out" where it runs
    try:
        with contextlib.redirect_stdout(stdout):
            exec(compile(code.replace('"atomic.qcow2"', repr(str(image))), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    lines = stdout.getvalue().splitlines()
    events = [json.loads(line) for line in lines[:-1]]
    assert lines[-1].startswith(namespace["result"].manifest["deployment"]["ostree"] + " {")
    return Built(image, where / "out", before, events, namespace["boot"])


def _check(result: BootTestResult) -> None:
    assert result.ok, result.summary() + "\n" + result.boot.explain()


def test_artifacts_and_manifest(built: Built) -> None:
    image, out, before = built.image, built.out, built.before
    assert {e["stage"] for e in built.events if e["event"] == "end"} >= {"guest", "rootfs", "squashfs", "dracut", "pxe"}
    assert sha256_file(image) == before, "the input image changed"
    manifest = json.loads((out / "manifest.json").read_text())
    kver = manifest["kernel"]["version"]
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {
        "live-rootfs.squashfs.img", f"vmlinuz-{kver}", f"initramfs-{kver}.img", "PXE_CONFIG",
        "pxelinux.cfg/default", "boot.ipxe", "grub.cfg", "manifest.json",
        # the sample's signed UEFI chain, included by default, and grub.cfg where its GRUB reads it
        "shimx64.efi", "grubx64.efi", "grub/grub.cfg",
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


def test_pxelinux_boot_with_a_larger_overlay(built: Built) -> None:
    result = built.boot
    _check(result)
    assert result.checks["ostree-booted"] == "yes"
    assert result.checks["write"] == "ok"
    assert result.overlay_bytes == 1024 * 1024**2  # rd.live.overlay.size=1024 from the build
    assert "BOOTIF=" in result.boot.console_log.read_text(errors="replace")  # pxelinux's IPAPPEND 2


def test_grub_bios_boot(built: Built) -> None:
    """SeaBIOS and the NIC's PXE ROM load the host's BIOS GRUB, which reads grub/grub.cfg and loads the kernel."""
    need_file(str(GRUB_BIOS_DIR / "linux.mod"), "grub-pc-bin")
    result = boot_test(built.out, BootTestOptions(via="grub-bios", workdir=built.out.parent / "grub-bios"))
    _check(result)
    assert result.checks["firmware"] == "bios"
    assert result.checks["ostree-booted"] == "yes"
    log = result.boot.console_log.read_text(errors="replace")
    # GRUB's menu (its serial console) before the kernel; GRUB's BOOT_IMAGE, not pxelinux's IPAPPEND
    assert "GNU GRUB" in log and log.index("GNU GRUB") < log.index("Linux version")
    kernel = json.loads((built.out / "manifest.json").read_text())["kernel"]["version"]
    assert f"Command line: BOOT_IMAGE=/vmlinuz-{kernel} " in log
    assert "BOOTIF=" not in log
