"""atomic sample -> `liveimg build --efi` -> `liveimg serve` on a real network, and UEFI with Secure Boot.

One build of the atomic sample, whose image carries Debian's signed shim and network GRUB
(and a kernel Debian signed).

On a network the test makes (:mod:`tests.e2e.lan`: a namespace, a bridge, a tap device per
machine), ``liveimg serve`` serves two builds (the newest the default) with dnsmasq's full DHCP
and TFTP and liveimg's HTTP server, and a diskless QEMU guest boots from its network card's
firmware, to the live system's checks:

1. SeaBIOS, the NIC's iPXE ROM doing PXE, ``--bios-loader pxelinux``: pxelinux over TFTP, its
   menu, the kernel and initramfs over TFTP, the live file over HTTP;
2. the same firmware, ``--bios-loader auto``: DHCP sees iPXE's user class and names the iPXE
   menu's URL; iPXE loads the kernel and initramfs over HTTP;
3. OVMF, its own PXE (client architecture 7): shim and GRUB over TFTP, GRUB's menu, the
   kernel and initramfs over TFTP.

Then ``boot_test(..., via="uefi-pxe", secure_boot=True)``: OVMF's Secure Boot build with
Microsoft's keys verifies shim, shim GRUB, GRUB (through shim) the kernel; the live system
says Secure Boot is on.  With the Authenticode signature of the kernel, GRUB or shim stripped,
GRUB, shim or the firmware refuses it, and the boot test says so (reason ``secure-boot``) as
soon as the console does, long before its timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from liveimg.boottest import OVMF_CODE, OVMF_SECURE_CODE, OVMF_SECURE_VARS, OVMF_VARS, BootTestOptions, boot_test
from liveimg.console import Outcome
from tests.authenticode import certificate_table, unsigned_copy
from tests.lan import SERVER, Lan, checked_outdir
from tests.e2e.live import FAST_ARGS
from tests.samples import sample_image
from tests.support import need, need_file, need_root

REPO = Path(__file__).resolve().parents[2]
#: A refused kernel is reported when GRUB says so: far below the timeout given.
REFUSED_WITHIN = 300.0
TIMEOUT = 1800.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    need_root()
    need("qemu-system-x86_64", "socat")
    for path in (OVMF_CODE, OVMF_VARS, OVMF_SECURE_CODE, OVMF_SECURE_VARS):
        need_file(str(path), "ovmf")
    image = sample_image("atomic")
    out = tmp_path_factory.mktemp("uefi") / "out"
    argv = [sys.executable, "-m", "liveimg", "--progress", "none", "build", str(image), "-o", str(out), "--efi",
            *FAST_ARGS]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return out, manifest


def test_the_build_carries_the_signed_boot_chain(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    efi = manifest["boot"]["efi"]
    assert efi["shim"] and efi["grub"]
    for name in (efi["shim"], efi["grub"], manifest["boot"]["kernel"]):
        assert certificate_table((out / name).read_bytes())[1] > 0, f"{name} is not signed"


@pytest.fixture(scope="module")
def two_builds(built: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The build twice, each with boot-test's checker in its initramfs: "older", then "newest"."""
    need("dnsmasq", "ip")
    out, _ = built
    where = tmp_path_factory.mktemp("served")
    older = checked_outdir(out, where / "older")
    newest = checked_outdir(out, where / "newest")
    stamp = (older / "manifest.json").stat().st_mtime
    os.utime(newest / "manifest.json", (stamp + 60, stamp + 60))
    return [older, newest]


LAN_WAYS = {
    # way: (liveimg serve options, firmware, what DHCP names, how the kernel came)
    "pxelinux": (("--bios-loader", "pxelinux"), "bios", "pxelinux.0", "tftp"),
    "ipxe": (("--bios-loader", "auto"), "bios", "boot.ipxe", "http"),
    "uefi-grub": ((), "uefi", "shimx64.efi", "tftp"),
}


@pytest.mark.parametrize("way", LAN_WAYS)
def test_liveimg_serve_boots_a_diskless_machine_on_a_real_network(
    built: tuple[Path, dict[str, Any]], two_builds: list[Path], tmp_path: Path, way: str
) -> None:
    _, manifest = built
    options, firmware, bootfile, kernel_over = LAN_WAYS[way]
    kernel = manifest["boot"]["kernel"]
    with Lan() as lan, lan.serve(two_builds, "--dhcp", "full", "--kernel-arg", "console=ttyS0,115200",
                                 *options) as served:  # fmt: skip
        assert [b["name"] for b in served.info["builds"]] == ["newest", "older"]
        uefi = _uefi_firmware(tmp_path) if firmware == "uefi" else None
        booted = lan.boot(manifest, tmp_path / "boot", uefi=uefi, timeout=TIMEOUT)
        dhcp, http = served.lines("dnsmasq"), served.lines("http")
    explain = booted.result.explain() + "\n" + "\n".join(dhcp[-15:] + http[-10:])
    assert booted.result.ok and not booted.problems, booted.problems or explain
    assert booted.fields["firmware"] == firmware
    # dnsmasq leased the address and named the boot file the firmware asked for (option 93, user class)
    assert any("DHCPACK(br0) 10.77.0." in line for line in dhcp), explain
    assert any(f"DHCPACK" in line for line in dhcp)
    if bootfile.endswith("ipxe"):
        assert any(line.startswith(f"{SERVER} ") or "GET /boot.ipxe " in line for line in http), explain
        assert any('"GET /boot.ipxe ' in line for line in http), explain
    else:
        assert any(f"sent " in line and line.rstrip().endswith(bootfile) or f"/{bootfile} to " in line
                   for line in dhcp), explain  # fmt: skip
    # the default entry, the newest build, booted: its kernel and live file came from its own directory
    if kernel_over == "tftp":
        assert any(f"/newest/{kernel} to 10.77.0." in line for line in dhcp), explain
    else:
        assert any(f'"GET /newest/{kernel} ' in line for line in http), explain
    assert any(f'"GET /newest/{manifest["boot"]["squashfs"]} ' in line for line in http), explain
    assert not any("/older/" in line for line in dhcp + http), explain
    print(f"liveimg serve, {way}: booted in {booted.result.seconds:.0f} s")


def _uefi_firmware(work: Path) -> Any:
    from liveimg import qemu

    work.mkdir(parents=True, exist_ok=True)
    variables = work / OVMF_VARS.name
    variables.write_bytes(OVMF_VARS.read_bytes())
    return qemu.Uefi(OVMF_CODE, variables)


def test_uefi_pxe_with_secure_boot_verifies_the_chain(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = built
    result = boot_test(out, BootTestOptions(via="uefi-pxe", secure_boot=True, timeout=TIMEOUT, workdir=tmp_path))
    assert result.ok, result.summary() + "\n" + result.boot.explain()
    assert (result.checks["firmware"], result.checks["secure-boot"]) == ("uefi", "enabled")
    assert result.checks["mokutil-sb"] == "enabled"  # the sample has mokutil
    assert "EFI stub: UEFI Secure Boot is enabled." in result.boot.console_log.read_text(errors="replace")
    print(f"uefi-pxe --secure-boot: {result.boot.seconds:.0f} s")


#: Which file of the chain is stripped of its signature, and who refuses it with what message.
REFUSALS = {
    "kernel": "error: bad shim signature.",  # GRUB, through shim's protocol
    "grub": "Verification failed: (0x1A) Security Violation",  # shim, in a dialog box
    "shim": "Access Denied",  # the firmware: BdsDxe: failed to load Boot0001 ...: Access Denied
}


@pytest.mark.parametrize("unsigned", sorted(REFUSALS))
def test_secure_boot_refuses_an_unsigned_file(
    built: tuple[Path, dict[str, Any]], tmp_path: Path, unsigned: str
) -> None:
    out, manifest = built
    # OUTDIR again (hard links), with one file's signature stripped
    copy = tmp_path / "out"
    copy.mkdir()
    name = manifest["boot"]["kernel"] if unsigned == "kernel" else manifest["boot"]["efi"][unsigned]
    for path in out.iterdir():
        if path.is_file() and path.name != name:
            os.link(path, copy / path.name)
    unsigned_copy(out / name, copy / name)
    assert certificate_table((copy / name).read_bytes()) == (0, 0)
    options = BootTestOptions(via="uefi-pxe", secure_boot=True, timeout=TIMEOUT, workdir=tmp_path / "boot")
    result = boot_test(copy, options)
    assert (result.boot.outcome, result.boot.reason) == (Outcome.FAILURE, "secure-boot"), result.boot.explain()
    assert result.boot.line is not None and REFUSALS[unsigned] in result.boot.line
    assert result.boot.seconds < REFUSED_WITHIN
    print(f"uefi-pxe --secure-boot, unsigned {unsigned}: refused after {result.boot.seconds:.0f} s")
