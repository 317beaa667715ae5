"""dnsmasq's configuration for `liveimg serve`: read back by dnsmasq itself (``--test``)."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from liveimg.errors import InvalidOptions, ToolError
from liveimg.serve.catalog import BiosLoader, load_builds, plan
from liveimg.serve.dnsmasq import DhcpMode, Dnsmasq, Network, check_interface, config, lease_range
from tests.serve.fakebuild import fake_build
from tests.support import need, need_file

NET = Network("br0", ipaddress.IPv4Interface("10.77.0.1/24"))
BASE = "http://10.77.0.1:8080"


@pytest.fixture
def builds(tmp_path: Path) -> list[Path]:
    need_file("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    return [fake_build(tmp_path / "out", efi=True)]


def dnsmasq_accepts(text: str, tmp_path: Path) -> None:
    need("dnsmasq")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(text)
    done = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "syntax check OK" in done.stderr, done.stderr


def boot_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("dhcp-boot=", "pxe-service="))]


def test_full_dhcp_names_one_boot_file_per_kind_of_client(builds: list[Path], tmp_path: Path) -> None:
    the_plan = plan(load_builds(builds), BASE)
    text = config(the_plan, DhcpMode.FULL, tftp_root=tmp_path / "tftp", network=NET, leases=tmp_path / "leases")
    dnsmasq_accepts(text, tmp_path)
    assert "port=0" in text.splitlines()  # no DNS server
    assert "interface=br0" in text.splitlines() and "bind-interfaces" in text.splitlines()
    assert "dhcp-range=10.77.0.128,10.77.0.254,255.255.255.0,1h" in text.splitlines()
    assert "dhcp-userclass=set:ipxe,iPXE" in text.splitlines()
    assert "dhcp-option=option:router" in text.splitlines()  # an empty option: no router named
    assert {"dhcp-match=set:efi64,option:client-arch,7", "dhcp-match=set:efi64,option:client-arch,9"} <= set(
        text.splitlines()
    )
    assert boot_lines(text) == [
        f"dhcp-boot=tag:ipxe,{BASE}/boot.ipxe,,10.77.0.1",
        "dhcp-boot=tag:!ipxe,tag:!efi64,pxelinux.0,,10.77.0.1",
        "dhcp-boot=tag:!ipxe,tag:efi64,shimx64.efi,,10.77.0.1",
    ]
    # pxelinux for every BIOS client, iPXE ones too; iPXE on UEFI still runs the script
    pxelinux = config(plan(load_builds(builds), BASE, loader=BiosLoader.PXELINUX), DhcpMode.FULL,
                      tftp_root=tmp_path, network=NET)  # fmt: skip
    assert boot_lines(pxelinux) == [
        f"dhcp-boot=tag:ipxe,tag:efi64,{BASE}/boot.ipxe,,10.77.0.1",
        "dhcp-boot=tag:!efi64,pxelinux.0,,10.77.0.1",
        "dhcp-boot=tag:!ipxe,tag:efi64,shimx64.efi,,10.77.0.1",
    ]


def test_proxy_dhcp_leases_nothing_and_offers_pxe_services(builds: list[Path], tmp_path: Path) -> None:
    text = config(plan(load_builds(builds), BASE), DhcpMode.PROXY, tftp_root=tmp_path, network=NET)
    dnsmasq_accepts(text, tmp_path)
    assert "dhcp-range=10.77.0.0,proxy,255.255.255.0" in text.splitlines()
    assert not any(line.startswith("dhcp-leasefile") or "dhcp-authoritative" in line for line in text.splitlines())
    assert boot_lines(text) == [
        f"dhcp-boot=tag:ipxe,{BASE}/boot.ipxe,,10.77.0.1",
        'pxe-service=tag:!ipxe,tag:!efi64,x86PC,"liveimg",pxelinux.0,10.77.0.1',
        'pxe-service=tag:!ipxe,tag:efi64,x86-64_EFI,"liveimg",shimx64.efi,10.77.0.1',
    ]


def test_tftp_only_and_what_dhcp_needs(builds: list[Path], tmp_path: Path) -> None:
    the_plan = plan(load_builds(builds), BASE)
    text = config(the_plan, DhcpMode.NONE, tftp_root=tmp_path / "tftp", network=None)
    dnsmasq_accepts(text, tmp_path)
    assert "enable-tftp" in text and not boot_lines(text) and "dhcp-range" not in text
    with pytest.raises(InvalidOptions, match="--interface"):
        config(the_plan, DhcpMode.FULL, tftp_root=tmp_path, network=None)
    with pytest.raises(InvalidOptions, match="--tftp"):
        config(the_plan, DhcpMode.PROXY, tftp_root=None, network=NET)
    with pytest.raises(InvalidOptions):
        config(the_plan, DhcpMode.NONE, tftp_root=tmp_path / "a,b", network=None)


@pytest.mark.parametrize(
    ("address", "first", "last"),
    [
        ("10.77.0.1/24", "10.77.0.128", "10.77.0.254"),
        ("10.77.0.200/24", "10.77.0.128", "10.77.0.254"),  # the server's own address is never leased
        ("192.168.0.1/30", "192.168.0.2", "192.168.0.2"),
        ("10.0.0.1/8", "10.255.255.55", "10.255.255.254"),
    ],
)
def test_lease_range(address: str, first: str, last: str) -> None:
    assert lease_range(Network("x", ipaddress.IPv4Interface(address))) == (
        ipaddress.IPv4Address(first),
        ipaddress.IPv4Address(last),
    )
    with pytest.raises(InvalidOptions):
        lease_range(Network("x", ipaddress.IPv4Interface("10.0.0.1/31")))


@pytest.mark.parametrize("name", ["", "a b", "x" * 16, "eth0,tftp-root=/", "..", "br0\n"])
def test_bad_interface_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidOptions):
        check_interface(name)


def test_a_dnsmasq_that_cannot_start_is_one_error_with_its_message(tmp_path: Path) -> None:
    need("dnsmasq")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("port=0\nenable-tftp\ntftp-root=/nonexistent/liveimg-test\n")
    with pytest.raises(ToolError) as err, Dnsmasq(conf):
        pass
    assert "/nonexistent/liveimg-test" in str(err.value)
