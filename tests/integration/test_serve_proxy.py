"""`liveimg serve --dhcp proxy` beside a network's own DHCP server, asked by real PXE firmware.

On a network the test makes (:class:`tests.lan.Lan`), a plain dnsmasq in a namespace of its own
leases the addresses and names no boot file; ``liveimg serve --dhcp proxy`` answers only as PXE's
proxy DHCP.  A diskless QEMU guest's firmware -- SeaBIOS with the NIC's iPXE ROM, and OVMF's own
PXE (client architecture 7) -- gets its address from the one and its boot file from the other,
and fetches that file over TFTP: pxelinux.0, or shim.  The guest is stopped there (what follows
is the full-DHCP e2e boot's, ``tests/e2e/test_live_serve.py``).  As root only (namespaces).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from liveimg import qemu
from liveimg import run as runner
from liveimg.boottest import OVMF_CODE, OVMF_VARS
from tests.lan import Lan
from tests.serve.fakebuild import fake_build
from tests.support import need, need_file, need_root

#: How long the firmware may take to fetch its boot file under TCG.
FETCH_TIMEOUT = 240.0
#: dnsmasq's line for a file its TFTP server sent (the tree is liveimg serve's private one).
SENT = "/tftp/{} to 10.77.0."


@pytest.mark.parametrize(("firmware", "bootfile"), [("bios", "pxelinux.0"), ("uefi", "shimx64.efi")])
def test_pxe_firmware_gets_its_boot_file_by_proxy_dhcp(tmp_path: Path, firmware: str, bootfile: str) -> None:
    need_root()
    need("dnsmasq", "ip", "qemu-system-x86_64")
    need_file("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    need_file(str(OVMF_CODE), "ovmf")
    out = fake_build(tmp_path / "out", efi=True)
    with (
        Lan() as lan,
        lan.other_dhcp_server(tmp_path / "leases") as other,
        lan.serve([out], "--dhcp", "proxy", "--bios-loader", "pxelinux") as served,
    ):
        uefi = None
        if firmware == "uefi":
            shutil.copyfile(OVMF_VARS, tmp_path / OVMF_VARS.name)
            uefi = qemu.Uefi(OVMF_CODE, tmp_path / OVMF_VARS.name)
        machine = qemu.Machine(memory_mib=512, tap=qemu.Tap(lan.tap(), netns=lan.netns), uefi=uefi)
        argv = qemu.qemu_argv(machine, tmp_path / "console.log")
        sent = False
        with runner.spawn(argv):
            deadline = time.monotonic() + FETCH_TIMEOUT
            while time.monotonic() < deadline and not sent:
                sent = any(SENT.format(bootfile) in line for line in served.lines("dnsmasq"))
                time.sleep(1)
        proxy = served.lines("dnsmasq")
        leases = list(other)
    explain = "\n".join(["proxy:", *proxy[-20:], "other:", *leases[-10:]])
    assert sent, explain
    # the address came from the other server; liveimg's dnsmasq leased nothing, it sent the proxy offer
    assert any("DHCPACK(vd1) 10.77.0." in line for line in leases), explain
    assert any("PXE(br0)" in line for line in proxy), explain
    assert not any("DHCPACK(br0)" in line for line in proxy), explain
