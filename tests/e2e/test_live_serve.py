"""atomic sample -> `liveimg build --efi` -> `liveimg serve` on a real network -> diskless machines boot.

One build of the atomic sample, whose image carries Debian's signed shim and network GRUB
(and a kernel Debian signed).

On a network the test makes (:mod:`tests.lan`: a namespace, a bridge, a tap device per
machine), ``liveimg serve`` serves two builds (the newest the default) with dnsmasq's full DHCP
and TFTP and liveimg's HTTP server, and a diskless QEMU guest boots from its network card's
firmware, to the live system's checks:

1. SeaBIOS, the NIC's iPXE ROM doing PXE, ``--bios-loader pxelinux``: pxelinux over TFTP, its
   menu, the kernel and initramfs over TFTP, the live file over HTTP;
2. the same firmware, ``--bios-loader auto``: DHCP sees iPXE's user class and names the iPXE
   menu's URL; iPXE loads the kernel and initramfs over HTTP;
3. OVMF, its own PXE (client architecture 7): shim and GRUB over TFTP, GRUB's menu, the
   kernel and initramfs over TFTP.

Each boot also shows the live initramfs checking the file it downloaded from ``liveimg serve``
(:mod:`liveimg.liveverify`: size and sha256, the line asserted).  The same chain under Secure
Boot is ``tests/e2e/test_live_uefi.py``'s.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from liveimg import qemu
from liveimg.boottest import OVMF_CODE, OVMF_VARS
from tests.e2e.live import build_with_cli
from tests.lan import SERVER, Lan, checked_outdir
from tests.support import need, need_file, need_root

TIMEOUT = 1800.0
#: dnsmasq's line for a file its TFTP server sent (from liveimg serve's private tree).
SENT = re.compile(r"dnsmasq-tftp\[\d+\]: sent /\S+/tftp/(\S+) to (10\.77\.0\.\d+)$")
#: liveimg serve's request log: common log format.
REQUEST = re.compile(r'^(10\.77\.0\.\d+) - - \[[^]]+\] "(GET|HEAD) (\S+) HTTP/1\.[01]" (\d{3}) (\d+)$')


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    need_root()
    need("qemu-system-x86_64", "dnsmasq", "ip")
    need_file(str(OVMF_CODE), "ovmf")
    out = tmp_path_factory.mktemp("serve") / "out"
    return out, build_with_cli("atomic", out, "--efi")


@pytest.fixture(scope="module")
def two_builds(built: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The build twice, each with boot-test's checker in its initramfs: "older", then "newest"."""
    out, _ = built
    where = tmp_path_factory.mktemp("served")
    older = checked_outdir(out, where / "older")
    newest = checked_outdir(out, where / "newest")
    stamp = (older / "manifest.json").stat().st_mtime
    os.utime(newest / "manifest.json", (stamp + 60, stamp + 60))
    return [older, newest]


LAN_WAYS = {
    # way: (liveimg serve options, firmware, the boot file DHCP names, how the kernel comes)
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
    kernel, live = manifest["boot"]["kernel"], manifest["boot"]["squashfs"]
    # loglevel=6: the live initramfs's notices (the download checked) reach the console
    serve = ["--dhcp", "full", "--kernel-arg", "console=ttyS0,115200", "--kernel-arg", "loglevel=6", *options]
    with Lan() as lan, lan.serve(two_builds, *serve) as served:
        assert [b["name"] for b in served.info["builds"]] == ["newest", "older"]
        uefi = None
        if firmware == "uefi":
            shutil.copyfile(OVMF_VARS, tmp_path / OVMF_VARS.name)
            uefi = qemu.Uefi(OVMF_CODE, tmp_path / OVMF_VARS.name)
        booted = lan.boot(manifest, tmp_path / "boot", uefi=uefi, timeout=TIMEOUT)
        dhcp, http = served.lines("dnsmasq"), served.lines("http")
    explain = "\n".join([booted.result.explain(), *dhcp[-15:], *http[-10:]])
    assert booted.result.ok and not booted.problems, booted.problems or explain
    assert booted.fields["firmware"] == firmware
    # dnsmasq leased an address (full DHCP) and named the boot file this client needs
    assert any(re.search(r"DHCPACK\(br0\) 10\.77\.0\.\d+ 52:54:00:77:00:", line) for line in dhcp), explain
    named = f"http://{SERVER}:8080/{bootfile}" if bootfile.endswith("ipxe") else bootfile
    # in the BOOTP file field, or as option 67 when the client asks for it
    assert any(line.endswith((f"bootfile name: {named}", f"option: 67 bootfile-name  {named}")) for line in dhcp), (
        explain
    )
    sent = [m.group(1) for m in map(SENT.search, dhcp) if m]
    requests = [(m.group(3), m.group(4)) for m in map(REQUEST.match, http) if m]
    if bootfile.endswith("ipxe"):
        assert ("/boot.ipxe", "200") in requests, explain
    else:
        assert bootfile in sent, explain
    # the menu's default, the newest build, is what booted: its kernel, and its live file over HTTP
    if kernel_over == "tftp":
        assert f"newest/{kernel}" in sent, explain
    else:
        assert (f"/newest/{kernel}", "200") in requests, explain
    assert any(path == f"/newest/{live}" and status in ("200", "206") for path, status in requests), explain
    assert not any("older/" in name for name in sent) and not any("/older/" in p for p, _ in requests), explain
    # and the live initramfs checked what it downloaded from liveimg serve against the build
    artifact = manifest["artifacts"][live]
    checked = (
        f"liveimg: http://{SERVER}:8080/newest/{live} checked: {artifact['size']} bytes, sha256 {artifact['sha256']}"
    )
    assert checked in booted.result.console_log.read_text(errors="replace"), explain
    print(f"liveimg serve, {way}: booted in {booted.result.seconds:.0f} s")
