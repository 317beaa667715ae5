"""`liveimg serve --dhcp full` on a network the test makes, asked by a real DHCP client.

BusyBox's udhcpc, in the namespace of :class:`tests.lan.Lan`, asks as a BIOS PXE client, a UEFI
x86-64 one (DHCP option 93) and iPXE (option 77, user class ``iPXE``) would, and gets a lease and
the boot file each must get; the TFTP server then sends that file.  As root only (namespaces).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from liveimg.serve.catalog import UNDIONLY
from tests.integration.running_build import descendants
from tests.lan import HTTP_PORT, SERVER, Lan
from tests.serve.fakebuild import fake_build
from tests.support import need, need_file, need_root

#: What the client says it is (udhcpc -x options), and the boot file it must be offered.
CLIENTS = {
    "bios": ((), "pxelinux.0"),
    "uefi-x86_64": (("-x", "0x5d:0007"), "shimx64.efi"),
    "uefi-bc": (("-x", "0x5d:0009"), "shimx64.efi"),
    "ipxe-bios": (("-x", "0x4d:69505845"), f"http://{SERVER}:{HTTP_PORT}/boot.ipxe"),
}

SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip boot_file=$boot_file siaddr=$siaddr" >> "$0.out"
exit 0
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_root()
    need("dnsmasq", "busybox", "ip", "curl")
    need_file("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    return fake_build(tmp_path_factory.mktemp("serve") / "out", efi=True)


def _ask(lan: Lan, tmp_path: Path, kind: str, options: tuple[str, ...]) -> str:
    """What udhcpc, sending ``options``, was offered (its script's line)."""
    script = tmp_path / f"{kind}.sh"
    script.write_text(SCRIPT)
    os.chmod(script, 0o755)
    done = lan.run("busybox", "udhcpc", "-i", lan.veth(), "-f", "-q", "-n", "-B", "-t", "5", "-T", "1",
                   "-s", str(script), *options)  # fmt: skip
    out = Path(f"{script}.out")
    assert done.returncode == 0 and out.exists(), (kind, done.stderr)
    return out.read_text()


def test_each_kind_of_client_gets_a_lease_and_its_boot_file(served: Path, tmp_path: Path) -> None:
    with Lan() as lan, lan.serve([served], "--dhcp", "full") as server:
        for kind, (options, bootfile) in CLIENTS.items():
            out = _ask(lan, tmp_path, kind, options)
            assert "ip=10.77.0." in out, (kind, out, server.lines("dnsmasq")[-10:])
            assert f"boot_file={bootfile} " in out, (kind, out)
            assert f"siaddr={SERVER}" in out, (kind, out)
        # the TFTP server sends the BIOS loader and the UEFI chain; nothing outside its tree
        for name in ("pxelinux.0", "shimx64.efi", "out/vmlinuz-6.1.0-9-amd64"):
            got = lan.run("curl", "-sS", "-o", str(tmp_path / "got"), f"tftp://{SERVER}/{name}")
            assert got.returncode == 0, (name, got.stderr)
        assert (tmp_path / "got").read_bytes() == (served / "vmlinuz-6.1.0-9-amd64").read_bytes()
        assert lan.run("curl", "-sS", "-o", "/dev/null", f"tftp://{SERVER}/../manifest.json").returncode != 0
        assert lan.run("curl", "-sS", "-o", "/dev/null", f"tftp://{SERVER}/out/manifest.json").returncode != 0
        dhcp = server.lines("dnsmasq")
    assert sum("DHCPACK(br0)" in line for line in dhcp) >= len(CLIENTS)


def test_bios_loader_ipxe_gives_other_pxe_firmware_ipxe_first(served: Path, tmp_path: Path) -> None:
    with Lan() as lan, lan.serve([served], "--dhcp", "full", "--bios-loader", "ipxe"):
        assert "boot_file=undionly.kpxe " in _ask(lan, tmp_path, "bios", ())
        # the iPXE it loads asks again, with its user class: the menu
        assert f"boot_file=http://{SERVER}:{HTTP_PORT}/boot.ipxe " in _ask(
            lan, tmp_path, "ipxe", CLIENTS["ipxe-bios"][0]
        )
        got = lan.run("curl", "-sS", "-o", str(tmp_path / "undionly"), f"tftp://{SERVER}/undionly.kpxe")
        assert got.returncode == 0 and (tmp_path / "undionly").read_bytes() == UNDIONLY.read_bytes()


def test_tftp_alone_serves_the_tree_and_answers_no_dhcp(served: Path, tmp_path: Path) -> None:
    with Lan() as lan, lan.serve([served], "--tftp") as server:
        got = lan.run("curl", "-sS", "-o", str(tmp_path / "pxelinux.0"), f"tftp://{SERVER}/pxelinux.0")
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "pxelinux.0").read_bytes() == Path("/usr/lib/PXELINUX/pxelinux.0").read_bytes()
        asked = lan.run(
            "busybox", "udhcpc", "-i", lan.veth(), "-f", "-q", "-n", "-t", "2", "-T", "1", "-s", "/bin/true"
        )
        assert asked.returncode != 0  # no lease: no DHCP server on this network
        assert not any("DHCP" in line for line in server.lines("dnsmasq") if "dnsmasq-dhcp" in line)


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""  # gone meanwhile


def _dnsmasq_of(server_pid: int) -> int:
    below = {pid: _name(pid) for pid, _ in descendants(server_pid)}
    pids = [pid for pid, name in below.items() if name == "dnsmasq"]
    assert len(pids) == 1, f"dnsmasq is not running under liveimg serve: {below}"
    return pids[0]


def test_serve_stops_dnsmasq_and_removes_its_files_when_stopped(served: Path) -> None:
    with Lan() as lan, lan.serve([served], "--dhcp", "full") as server:
        # `ip netns exec` runs liveimg in its own process: dnsmasq runs under it
        pid = _dnsmasq_of(server.proc.pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        conf = Path(next(a for a in cmdline if a.startswith(b"--conf-file=")).split(b"=", 1)[1].decode())
        private = conf.parent
        assert private.name.startswith("liveimg-serve-") and (private / "tftp" / "pxelinux.0").is_file()
        server.proc.send_signal(signal.SIGINT)  # Ctrl-C; SIGTERM is tests/serve/test_service.py's
        assert server.proc.wait(30) == 0
        assert not Path(f"/proc/{pid}").exists()
    assert not private.exists()


def test_dnsmasq_dies_with_a_killed_serve(served: Path) -> None:
    """SIGKILL leaves liveimg no time to stop anything: dnsmasq, which has changed to its own user
    (and so lost the parent-death signal of liveimg.run), must go all the same, and the next
    serve removes the private directory the killed one left."""
    with Lan() as lan, lan.serve([served], "--dhcp", "full") as server:
        pid = _dnsmasq_of(server.proc.pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        conf = Path(next(a for a in cmdline if a.startswith(b"--conf-file=")).split(b"=", 1)[1].decode())
        status = Path(f"/proc/{pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert uid != "0", "dnsmasq kept root: this test no longer shows what it is for"
        server.proc.kill()
        server.proc.wait(30)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "dnsmasq outlived the killed liveimg serve"
        assert conf.parent.is_dir()  # a killed process removes nothing: the next serve does
        with lan.serve([served], "--tftp"):
            assert not conf.parent.exists(), "the next serve left the killed one's directory"
