"""Synthetic EFI binaries for the tests: PE files, GRUB images (a ``mods`` section) and shims, made byte by byte.

They are built from the formats' definitions (the PE/COFF specification; GRUB's module info
header and objects; ELF), small, and shaped as a test needs, so that every parser path --
and every hostile variation of it -- can be reached without a real binary.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

X64 = 0x8664
AA64 = 0xAA64
#: GRUB's module info magic (``mimg``) and object types.
MAGIC = 0x676D696D
ELF, MEMDISK, CONFIG, PREFIX = 0, 1, 2, 3
#: What Debian's signed grubnetx64.efi.signed has for the network (no http).
NET_MODULES = ("normal", "linux", "net", "efinet", "tftp", "configfile", "memdisk")


def elf_module(name: bytes, *, elf_class: int = 2) -> bytes:
    """A GRUB module: an ELF relocatable file whose ``.modname`` section holds ``name``."""
    shstrtab = b"\0.shstrtab\0.modname\0"
    modname = name + b"\0"
    if elf_class == 2:
        ehsize, shentsize, section = 64, 64, "<IIQQQQIIQQ"
    else:
        ehsize, shentsize, section = 52, 40, "<IIIIIIIIII"
    data_at = ehsize
    names_at = data_at
    modname_at = names_at + len(shstrtab)
    shoff = modname_at + len(modname)
    shoff += -shoff % 8
    headers = b"".join(
        struct.pack(section, *fields)
        for fields in (
            (0,) * 10,
            (1, 3, 0, 0, names_at, len(shstrtab), 0, 0, 1, 0),
            (11, 1, 0, 0, modname_at, len(modname), 0, 0, 1, 0),
        )
    )
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + b"\0" * 9
    if elf_class == 2:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, ehsize, 0, 0, shentsize, 3, 1)
    else:
        header = ident + struct.pack("<HHIIIIIHHHHHH", 1, 3, 1, 0, 0, shoff, 0, ehsize, 0, 0, shentsize, 3, 1)
    body = header + shstrtab + modname
    return body + b"\0" * (shoff - len(body)) + headers


def obj(kind: int, body: bytes, *, size: int | None = None) -> bytes:
    """One object of GRUB's mods section (its size, the 8-byte header included, padded to 8)."""
    body += b"\0" * (-len(body) % 8)
    return struct.pack("<II", kind, 8 + len(body) if size is None else size) + body


def mods(objects: Iterable[bytes], *, magic: int = MAGIC, offset: int = 24, size: int | None = None) -> bytes:
    """GRUB's mods section: the module info header (magic, padding, offset, size) and ``objects``."""
    body = b"".join(objects)
    total = 24 + len(body) if size is None else size
    return struct.pack("<IIQQ", magic, 0, offset, total) + body


def grub_mods(
    modules: Sequence[str] = NET_MODULES,
    *,
    prefix: str | None = "/grub",
    config: str | None = "normal (memdisk)/grub.cfg\n",
    memdisk: bool = True,
) -> bytes:
    """A GRUB image's mods section with ``modules`` built in, a prefix, an embedded config and a memdisk."""
    objects = [obj(ELF, elf_module(m.encode())) for m in modules]
    if memdisk:
        objects.append(obj(MEMDISK, b"\xeb<\x90mkfs.fat\0" + b"\0" * 500))
    if config is not None:
        objects.append(obj(CONFIG, config.encode() + b"\0"))
    if prefix is not None:
        objects.append(obj(PREFIX, prefix.encode() + b"\0"))
    return mods(objects)


def pe(
    sections: Sequence[tuple[str, bytes]],
    *,
    machine: int = X64,
    signed: bool = False,
    optional_magic: int = 0x20B,
) -> bytes:
    """A PE32+ file with ``sections`` (name, data); names longer than 8 go to the COFF string table."""
    header_size = 0x40 + 4 + 20 + 240 + 40 * len(sections)
    at = header_size + (-header_size % 0x200)
    table: list[bytes] = []
    blobs = b""
    strings = b""
    for name, data in sections:
        raw_name = name.encode()
        if len(raw_name) > 8:
            raw_name = f"/{4 + len(strings)}".encode()
            strings += name.encode() + b"\0"
        table.append(struct.pack("<8sIIIIIIHHI", raw_name, len(data), 0x1000 + len(blobs), len(data), at + len(blobs),
                                 0, 0, 0, 0, 0x40000040))  # fmt: skip
        blobs += data + b"\0" * (-len(data) % 0x200)
    symbols = at + len(blobs)
    string_table = struct.pack("<I", 4 + len(strings)) + strings
    end = symbols + len(string_table)
    certificate = b"\x08\x00\x00\x00\x00\x02\x02\x00" + b"signature" * 8 if signed else b""
    dirs = [(0, 0)] * 16
    if signed:
        dirs[4] = (end, len(certificate))
    optional = struct.pack("<H", optional_magic) + b"\0" * 106 + struct.pack("<I", 16)
    optional += b"".join(struct.pack("<II", *d) for d in dirs)
    coff = struct.pack("<HHIIIHH", machine, len(sections), 0, symbols, 0, len(optional), 0x22)
    head = b"MZ" + b"\0" * 58 + struct.pack("<I", 0x40) + b"PE\0\0" + coff + optional + b"".join(table)
    return head + b"\0" * (at - len(head)) + blobs + string_table + certificate


def grub_efi(
    modules: Sequence[str] = NET_MODULES,
    *,
    machine: int = X64,
    signed: bool = True,
    prefix: str | None = "/grub",
    config: str | None = "normal (memdisk)/grub.cfg\n",
) -> bytes:
    """A GRUB EFI image (``.text``, ``mods``) with ``modules`` built in."""
    sections = [(".text", b"\xc3" * 64), ("mods", grub_mods(modules, prefix=prefix, config=config))]
    return pe(sections, machine=machine, signed=signed)


def shim_efi(*, machine: int = X64, signed: bool = True) -> bytes:
    """A shim: a PE file with a ``.vendor_cert`` section (a long name, in the string table)."""
    return pe([(".text", b"\xc3" * 64), (".vendor_cert", b"\x30\x82" + b"cert" * 16), (".sbat", b"sbat,1\n")],
              machine=machine, signed=signed)  # fmt: skip
