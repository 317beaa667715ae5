"""atomic sample -> `liveimg build --efi` -> UEFI network boot in QEMU with Secure Boot.

One build of the atomic sample, whose image carries Debian's signed shim and network GRUB
(and a kernel Debian signed): OUTDIR holds them with the grub.cfg that GRUB reads.
``boot_test(..., via="uefi-pxe")`` boots it as a UEFI machine with no local disk would: OVMF's
own virtio-net driver and PXE get shim from QEMU's TFTP server, shim loads GRUB, GRUB the
kernel and initramfs, dracut's livenet the squashfs over HTTP.  Booted two ways:

1. OVMF's Secure Boot build with Microsoft's keys (``secure_boot=True``): the firmware verifies
   shim, shim GRUB, GRUB (through shim) the kernel; the live system says Secure Boot is on;
2. the same, with the Authenticode signature of the kernel, GRUB or shim stripped: GRUB, shim
   or the firmware refuses it, and the boot test says so (reason ``secure-boot``) as soon as
   the console does, long before its timeout.

The same chain with Secure Boot off is booted by ``tests/e2e/test_live_serve.py``, from
``liveimg serve`` on a network the test makes (OVMF's own PXE, shim, GRUB's menu).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from liveimg.boottest import OVMF_CODE, OVMF_SECURE_CODE, OVMF_SECURE_VARS, OVMF_VARS, BootTestOptions, boot_test
from liveimg.console import Outcome
from tests.authenticode import certificate_table, unsigned_copy
from tests.e2e.live import build_with_cli
from tests.support import need, need_file, need_root

#: A refused kernel is reported when GRUB says so: far below the timeout given.
REFUSED_WITHIN = 300.0
TIMEOUT = 1800.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    need_root()
    need("qemu-system-x86_64", "socat")
    for path in (OVMF_CODE, OVMF_VARS, OVMF_SECURE_CODE, OVMF_SECURE_VARS):
        need_file(str(path), "ovmf")
    out = tmp_path_factory.mktemp("uefi") / "out"
    return out, build_with_cli("atomic", out, "--efi")


def test_the_build_carries_the_signed_boot_chain(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    efi = manifest["boot"]["efi"]
    assert efi["shim"] and efi["grub"]
    for name in (efi["shim"], efi["grub"], manifest["boot"]["kernel"]):
        assert certificate_table((out / name).read_bytes())[1] > 0, f"{name} is not signed"


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
