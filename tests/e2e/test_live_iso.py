"""atomic sample -> `liveimg build --iso` -> the live ISO booted as a CD and as a USB stick (BIOS, UEFI).

One build, as a user types it, with ``SOURCE_DATE_EPOCH`` set: ``live.iso`` is in OUTDIR and
in manifest.json with its sha256; ``liveimg iso OUTDIR`` makes it again, byte for byte (a PXE
build's OUTDIR is enough for an ISO); ``liveimg boot-test`` boots it ``--via iso-bios`` from a
CD-ROM with SeaBIOS (El Torito, isolinux), ``--via iso-uefi`` from a CD-ROM with OVMF (El
Torito's UEFI image, GRUB), ``--via usb`` from a USB stick with SeaBIOS (the isohybrid MBR)
and ``--via usb-uefi`` from the stick with OVMF (GRUB in the GPT's EFI partition): each
reaches the live system's checks, from the ISO's squashfs found by its label, with the
deployment the manifest names booted.
Then OUTDIR's own ``live.iso``, untouched, is put on a loop device by ``liveimg write`` and that
device boots as a USB stick with SeaBIOS to the sample's login prompt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liveimg import qemu
from liveimg.manifest import sha256_file
from tests.e2e.live import FAST_ARGS
from tests.samples import sample_image
from tests.support import need, need_file, need_root

REPO = Path(__file__).resolve().parents[2]
EPOCH = "1700000000"


def liveimg(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    argv = [sys.executable, "-m", "liveimg", "--progress", "none", *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    need_root()
    need("qemu-system-x86_64", "socat")
    need_file("/usr/lib/ISOLINUX/isolinux.bin", "isolinux")
    image = sample_image("atomic")
    out = tmp_path_factory.mktemp("iso") / "out"
    # A serial console on the ISO's own command line, for the stick booted as written (below).
    result = liveimg("build", str(image), "-o", str(out), "--iso", "--kernel-arg", "console=ttyS0,115200",
                     *FAST_ARGS, timeout=3600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return out, manifest


def boot(out: Path, via: str) -> dict[str, Any]:
    result = liveimg("boot-test", str(out), "--via", via, "--json", timeout=1900)
    report: dict[str, Any] = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], json.dumps(report, indent=2)
    return report


def test_the_iso_is_in_outdir_and_manifest(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    iso = manifest["iso"]
    assert iso["file"] == "live.iso" and iso["label"] == "DEBIAN_12_X86_64"
    assert iso["sha256"] == sha256_file(out / "live.iso") == manifest["artifacts"]["live.iso"]["sha256"]
    assert iso["kernel_args"][:3] == ["root=live:CDLABEL=DEBIAN_12_X86_64", "rd.live.image",
                                      f"ostree={manifest['deployment']['ostree']}"]  # fmt: skip
    assert manifest["stages"] is None  # SOURCE_DATE_EPOCH: no wall-clock times (liveimg.manifest)
    probe = subprocess.run(["blkid", "-p", "-o", "export", str(out / "live.iso")],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "TYPE=iso9660" in probe and "LABEL=DEBIAN_12_X86_64" in probe


def test_liveimg_iso_makes_the_same_bytes_from_the_outdir(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    first = sha256_file(out / "live.iso")
    (out / "live.iso").unlink()
    result = liveimg("iso", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    assert sha256_file(out / "live.iso") == first == manifest["iso"]["sha256"]


def test_boots_as_a_cd_with_bios(built: tuple[Path, dict[str, Any]]) -> None:
    out, _ = built
    report = boot(out, "iso-bios")
    assert report["checks"]["root"].startswith("/dev/mapper/live-rw")
    assert report["checks"]["ostree-booted"] == "yes"
    console = Path(report["console_log"]).read_text(errors="replace")
    assert "root=live:CDLABEL=DEBIAN_12_X86_64" in console  # the kernel's command line, from isolinux.cfg
    assert "QEMU DVD-ROM" in console


def test_boots_as_a_cd_with_uefi(built: tuple[Path, dict[str, Any]]) -> None:
    need_file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf")
    out, _ = built
    report = boot(out, "iso-uefi")
    assert report["checks"]["root"].startswith("/dev/mapper/live-rw")
    assert report["checks"]["ostree-booted"] == "yes"
    console = Path(report["console_log"]).read_text(errors="replace")
    assert "GNU GRUB" in console and "efi: EFI v" in console  # GRUB from the UEFI image, a kernel booted by UEFI
    assert "root=live:CDLABEL=DEBIAN_12_X86_64" in console


def test_boots_as_a_usb_stick(built: tuple[Path, dict[str, Any]]) -> None:
    out, _ = built
    report = boot(out, "usb")
    assert report["checks"]["root"].startswith("/dev/mapper/live-rw")
    assert report["checks"]["ostree-booted"] == "yes"
    console = Path(report["console_log"]).read_text(errors="replace")
    assert "QEMU USB HARDDRIVE" in console and "DVD-ROM" not in console


def test_boots_as_a_usb_stick_with_uefi(built: tuple[Path, dict[str, Any]]) -> None:
    need_file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf")
    out, _ = built
    report = boot(out, "usb-uefi")
    assert report["checks"]["root"].startswith("/dev/mapper/live-rw")
    assert report["checks"]["ostree-booted"] == "yes"
    console = Path(report["console_log"]).read_text(errors="replace")
    assert "GNU GRUB" in console and "efi: EFI v" in console
    assert "QEMU USB HARDDRIVE" in console and "DVD-ROM" not in console


@pytest.fixture
def stick(tmp_path: Path) -> Iterator[str]:
    """A 1 GiB loop device on a sparse file: a USB stick's stand-in (detached afterwards)."""
    need("losetup")
    backing = tmp_path / "stick.img"
    with open(backing, "wb") as f:
        f.truncate(1 << 30)
    node = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    try:
        yield node
    finally:
        subprocess.run(["losetup", "--detach", node], check=True)


def test_liveimg_write_puts_it_on_a_stick_that_boots(
    built: tuple[Path, dict[str, Any]], stick: str, tmp_path: Path
) -> None:
    out, manifest = built
    iso = out / "live.iso"
    assert sha256_file(iso) == manifest["iso"]["sha256"]
    result = liveimg("write", str(iso), stick, "--yes", "--yes-this-disk", timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"{iso.stat().st_size} bytes, read back and verified"), result.stdout
    machine = qemu.Machine(memory_mib=3072, disks=(qemu.Disk(Path(stick), mode="readonly", bus="usb"),))
    booted = qemu.boot(machine, tmp_path / "boot", timeout=1500)
    text = booted.console_log.read_text(errors="replace")
    assert booted.ok, booted.summary()
    assert "root=live:CDLABEL=DEBIAN_12_X86_64" in text and "QEMU USB HARDDRIVE" in text
