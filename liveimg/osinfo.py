"""What operating system a guest tree holds: os-release fields and the CPU architecture.

os-release (``os-release(5)``): lines ``KEY=value``, the value optionally in single or double
quotes with shell escapes; ``#`` starts a comment.  ostree deployments are read from
``/usr/lib/os-release`` first (as ostree does for its BLS titles), classic roots from
``/etc/os-release`` first (as systemd does).  The specification says "non-printable characters
should not be used": they are dropped, so that no value (``PRETTY_NAME`` becomes a menu title,
and ``liveimg inspect`` prints it) carries a control character or a terminal escape.

Architecture, normalised to ``uname -m`` names (``x86_64``, ``aarch64``, ``ppc64le``,
``s390x``, ...), is needed for the squashfs BCJ filter, which lorax wrongly takes from the
*host*.  In order of trust:

1. the ELF header of a program of the tree (``e_machine``, ``EI_CLASS`` and ``EI_DATA``:
   bytes 4, 5 and 18-19 of the file);
2. the kernel image's boot header: x86 ``HdrS`` at 0x202 (64-bit if bit 0 of ``xloadflags``
   at 0x236), arm64 ``ARM\\x64`` at 0x38, or the PE/COFF machine of an EFI stub or zboot image;
3. the kernel version's suffix (``.x86_64``, ``-amd64``, ...).
"""

from __future__ import annotations

import logging
import re
import shlex
import struct
from collections.abc import Mapping

from liveimg.errors import InvalidImage
from liveimg.fsview import GuestTree

log = logging.getLogger(__name__)

OS_RELEASE_LIMIT = 64 * 1024

#: ELF e_machine -> architecture, for 64-bit (class 2) and 32-bit (class 1) little/big endian.
_ELF_MACHINES: Mapping[tuple[int, int, int], str] = {
    (0x3E, 2, 1): "x86_64",
    (0x03, 1, 1): "i686",
    (0xB7, 2, 1): "aarch64",
    (0x28, 1, 1): "armv7l",
    (0x15, 2, 1): "ppc64le",
    (0x15, 2, 2): "ppc64",
    (0x14, 1, 2): "ppc",
    (0x16, 2, 2): "s390x",
    (0xF3, 2, 1): "riscv64",
    (0x102, 2, 1): "loongarch64",
    (0x08, 2, 1): "mips64el",
}
_PE_MACHINES: Mapping[int, str] = {
    0x8664: "x86_64",
    0xAA64: "aarch64",
    0x5064: "riscv64",
    0x6264: "loongarch64",
    0x14C: "i686",
    0x1C2: "armv7l",
}
#: Kernel version suffixes (rpm arch or Debian flavour) -> architecture.
_KVER_SUFFIXES: Mapping[str, str] = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "cloud-amd64": "x86_64",
    "rt-amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "ppc64le": "ppc64le",
    "powerpc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "i686": "i686",
    "686": "i686",
    "686-pae": "i686",
    "armmp": "armv7l",
}
#: Programs whose ELF header tells the architecture (the first that exists is read).
ELF_PROBES = ("/usr/bin/true", "/usr/bin/sh", "/usr/bin/bash", "/usr/bin/ls", "/usr/lib/systemd/systemd", "/bin/sh")


def parse_os_release(text: str) -> dict[str, str]:
    """The fields of an os-release file; malformed lines are skipped."""
    fields: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        try:
            words = shlex.split(value, comments=False, posix=True)
        except ValueError:
            words = [value.strip("\"'")]
        fields[key] = "".join(c for c in " ".join(words) if c.isprintable())
    return fields


def read_os_release(tree: GuestTree, *, usr_first: bool) -> dict[str, str]:
    """os-release of ``tree``; {} if it has none or it is unreadable (a warning is logged)."""
    paths = ["/usr/lib/os-release", "/etc/os-release"]
    if not usr_first:
        paths.reverse()
    for path in paths:
        if tree.is_file(path):
            try:
                return parse_os_release(tree.read_text(path, limit=OS_RELEASE_LIMIT))
            except InvalidImage as exc:
                log.warning("%s", exc)
    return {}


def elf_arch(header: bytes) -> str | None:
    """Architecture from an ELF header (the first 20 bytes suffice); None if not ELF or unknown."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    ei_class, ei_data = header[4], header[5]
    if ei_data not in (1, 2):
        return None
    (machine,) = struct.unpack_from("<H" if ei_data == 1 else ">H", header, 18)
    return _ELF_MACHINES.get((machine, ei_class, ei_data))


def kernel_arch(header: bytes) -> str | None:
    """Architecture from the start of a kernel image (4 KiB suffice); None if unknown."""
    if len(header) >= 0x240 and header[0x202:0x206] == b"HdrS":
        (xloadflags,) = struct.unpack_from("<H", header, 0x236)
        return "x86_64" if xloadflags & 1 else "i686"
    if len(header) >= 0x40 and header[0x38:0x3C] == b"ARM\x64":
        return "aarch64"
    if len(header) >= 0x40 and header[:2] == b"MZ":
        (pe_offset,) = struct.unpack_from("<I", header, 0x3C)
        if pe_offset + 6 <= len(header) and header[pe_offset : pe_offset + 4] == b"PE\0\0":
            (machine,) = struct.unpack_from("<H", header, pe_offset + 4)
            return _PE_MACHINES.get(machine)
    return elf_arch(header)  # vmlinux images (ppc64le, s390x) are plain ELF


def kver_arch(version: str) -> str | None:
    """Architecture from a kernel version's suffix (``6.8.5-301.fc40.x86_64``, ``6.1.0-13-amd64``)."""
    for suffix in sorted(_KVER_SUFFIXES, key=len, reverse=True):
        if version.endswith(("." + suffix, "-" + suffix)):
            return _KVER_SUFFIXES[suffix]
    return None


def detect_arch(userland: GuestTree, kernel_tree: GuestTree, kernel: str | None, kver: str | None) -> str | None:
    """The architecture of a system: its programs' ELF headers, else its kernel, else its version."""
    for path in ELF_PROBES:
        if userland.is_file(path):
            try:
                arch = elf_arch(userland.read_head(path, 64))
            except InvalidImage:
                continue
            if arch:
                return arch
    if kernel is not None:
        try:
            arch = kernel_arch(kernel_tree.read_head(kernel, 4096))
        except InvalidImage:
            arch = None
        if arch:
            return arch
    if kver:
        return kver_arch(kver)
    return None
