"""os-release parsing and architecture detection (ELF, kernel headers, version suffixes)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from liveimg.fsview import GuestTree, HostFS
from liveimg.osinfo import detect_arch, elf_arch, kernel_arch, kver_arch, parse_os_release, read_os_release
from tests.ostree.layouts import elf_header, symlink, write
from tests.support import unavailable


def test_parse_os_release_quotes_escapes_and_junk() -> None:
    text = (
        "# comment\n"
        'NAME="Fedora Linux"\n'
        "ID=fedora\n"
        "VERSION_ID='40'\n"
        'PRETTY_NAME="Fedora \\"Forty\\""\n'
        'BROKEN="unterminated\n'
        "not a line\n"
        "lower_case=ok\n"
        "9BAD=x\n"
    )
    fields = parse_os_release(text)
    assert fields["NAME"] == "Fedora Linux" and fields["ID"] == "fedora" and fields["VERSION_ID"] == "40"
    assert fields["PRETTY_NAME"] == 'Fedora "Forty"'
    assert fields["BROKEN"] == "unterminated" and fields["lower_case"] == "ok"
    assert "9BAD" not in fields


def test_read_os_release_order(fs: object) -> None:
    root = Path("/r")
    write(root / "usr/lib/os-release", "ID=usr\n")
    write(root / "etc/os-release", "ID=etc\n")
    tree = GuestTree(HostFS(root))
    assert read_os_release(tree, usr_first=True) == {"ID": "usr"}
    assert read_os_release(tree, usr_first=False) == {"ID": "etc"}
    assert read_os_release(GuestTree(HostFS("/")), usr_first=True) == {}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64", "ppc64le", "s390x"])
def test_elf_arch(arch: str) -> None:
    assert elf_arch(elf_header(arch)) == arch


def test_elf_arch_rejects_junk() -> None:
    assert elf_arch(b"#!/bin/sh\n" + bytes(30)) is None
    assert elf_arch(b"\x7fELF") is None
    assert elf_arch(elf_header("x86_64")[:5] + b"\x07" + elf_header("x86_64")[6:]) is None


def test_real_host_binary_is_x86_64() -> None:
    assert elf_arch(Path("/usr/bin/true").read_bytes()[:64]) == "x86_64"


def _bzimage(xloadflags: int) -> bytes:
    data = bytearray(0x300)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x236, xloadflags)
    return bytes(data)


def _pe(machine: int) -> bytes:
    data = bytearray(0x100)
    data[:2] = b"MZ"
    struct.pack_into("<I", data, 0x3C, 0x80)
    data[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<H", data, 0x84, machine)
    return bytes(data)


def test_kernel_arch() -> None:
    assert kernel_arch(_bzimage(1)) == "x86_64"
    assert kernel_arch(_bzimage(0)) == "i686"
    arm = bytearray(0x40)
    arm[0x38:0x3C] = b"ARM\x64"
    assert kernel_arch(bytes(arm)) == "aarch64"
    assert kernel_arch(_pe(0xAA64)) == "aarch64"
    assert kernel_arch(_pe(0x5064)) == "riscv64"
    assert kernel_arch(elf_header("ppc64le")) == "ppc64le"
    assert kernel_arch(b"kernel 6.1") is None


def test_kernel_arch_of_the_hosts_kernel() -> None:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        unavailable("no kernel in /boot: install the Debian package linux-image-amd64")
    try:
        head = kernels[-1].read_bytes()[:4096]
    except PermissionError:
        unavailable(f"{kernels[-1]} is not readable by this user")
    assert kernel_arch(head) == "x86_64"


@pytest.mark.parametrize(
    ("kver", "arch"),
    [
        ("6.8.5-301.fc40.x86_64", "x86_64"),
        ("6.1.0-13-amd64", "x86_64"),
        ("6.1.0-13-cloud-amd64", "x86_64"),
        ("6.1.0-13-arm64", "aarch64"),
        ("5.14.0-427.el9.aarch64", "aarch64"),
        ("6.1.0-13-powerpc64le", "ppc64le"),
        ("5.14.0-427.el9.s390x", "s390x"),
        ("6.1.0-13-686-pae", "i686"),
        ("6.1.0-custom", None),
    ],
)
def test_kver_arch(kver: str, arch: str | None) -> None:
    assert kver_arch(kver) == arch


def test_detect_arch_prefers_programs_then_kernel_then_version(fs: object) -> None:
    root = Path("/r")
    write(root / "usr/bin/bash", elf_header("aarch64"))
    symlink(root / "usr/bin/sh", "bash")
    write(root / "boot/vmlinuz-6.1-amd64", _bzimage(1))
    tree = GuestTree(HostFS(root))
    assert detect_arch(tree, tree, "/boot/vmlinuz-6.1-amd64", "6.1-amd64") == "aarch64"
    empty = GuestTree(HostFS("/"))
    assert detect_arch(empty, tree, "/boot/vmlinuz-6.1-amd64", "6.1-arm64") == "x86_64"
    write(root / "boot/vmlinuz-junk", "not a kernel")
    assert detect_arch(empty, tree, "/boot/vmlinuz-junk", "6.1.0-13-s390x") == "s390x"
    assert detect_arch(empty, tree, None, None) is None


def test_non_printable_characters_are_dropped() -> None:
    """os-release(5): "non-printable characters should not be used"; PRETTY_NAME becomes a title."""
    text = 'PRETTY_NAME="Evil\\x1b[2J \x1b]0;title\x07 OS\u202e"\nNAME=a\x00b\n'
    fields = parse_os_release(text)
    assert fields["PRETTY_NAME"] == "Evil\\x1b[2J ]0;title OS"
    assert fields["NAME"] == "ab"
    assert all(v.isprintable() for v in fields.values())
