"""The UEFI network boot chain: shim and a network GRUB, found in the image (or given) and chosen by content.

Most machines that boot from the network are UEFI with Secure Boot on; they boot only binaries
signed with a key their firmware trusts.  Distributions ship such a chain: shim (signed by the
UEFI CA, carrying the distribution's key in its ``.vendor_cert`` section) and a GRUB signed
with that key.  liveimg copies the image's own chain into OUTDIR, which is laid out as a TFTP
root: ``shim<arch>.efi``, the network GRUB as ``grub<arch>.efi`` (the name shim loads from its
own directory) and, written by :func:`liveimg.pxe.write_pxe`, ``grub.cfg`` wherever that GRUB
reads it.

The binaries are chosen by what they hold, not by their names.  :func:`parse_pe` reads a PE
file's headers and sections; :func:`parse_grub` reads GRUB's ``mods`` section (the module info
header, then objects: ELF modules named by their ``.modname`` section, the memdisk, the
embedded configuration, the prefix).  Under Secure Boot GRUB refuses ``insmod``, so only the
modules built in count: a network GRUB has ``efinet`` and ``tftp`` or ``http``.  A shim is a
PE with a ``.vendor_cert`` section.  Both are guest bytes parsed on the host, by this
memory-safe code only: every offset and size is checked against the data before it is used,
counts are bounded, and whatever does not parse is an :class:`~liveimg.errors.InvalidImage`
naming the file (a candidate that fails is passed over, not fatal).

Where distributions keep them (:data:`LOCATIONS`, one group per packaging, so that the shim
and the GRUB come from the same vendor): Debian and Ubuntu in ``/usr/lib/shim`` and
``/usr/lib/grub/<arch>-efi-signed`` (``grubnetx64.efi.signed`` is the network GRUB,
``grubx64.efi.signed`` the disk one); Fedora 40+ in ``/usr/lib/efi/{shim,grub2}/<ver>/EFI/<vendor>``;
bootupd (Fedora Atomic, CoreOS) in ``/usr/lib/bootupd/updates/EFI/<vendor>``; the files of the
EFI system partition in ``/boot/efi/EFI/<vendor>`` where they are part of the root; older
Fedora's shim in ``/usr/share/shim``; openSUSE in ``/usr/share/efi/<arch>``.

Discovery (:func:`locate`) runs in the preflight, while the appliance is up: it walks the
installed system's tree (:class:`~liveimg.fsview.GuestTree`, symlinks resolved inside the
guest root) and reads the candidates there.  The efi stage then copies the chosen files out
of ``LiveOS/rootfs.img`` (:mod:`liveimg.e2fs`) and checks they are the bytes that were chosen.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from liveimg import bootsyntax, e2fs
from liveimg.errors import InternalError, InvalidImage, InvalidOptions
from liveimg.fsview import GuestTree
from liveimg.manifest import sha256_file
from liveimg.pxe import EfiBoot

log = logging.getLogger(__name__)

#: Largest file read as a candidate (a GRUB image with a memdisk is a few MiB).
MAX_BINARY = 64 << 20
#: Most sections a PE file may have (the PE format's own limit).
MAX_SECTIONS = 96
#: Most objects in GRUB's ``mods`` section, and sections in one module's ELF file.
MAX_OBJECTS = 4096
MAX_ELF_SECTIONS = 4096
#: Longest section name (string table), module name, prefix or embedded configuration read.
MAX_NAME = 256
MAX_TEXT = 64 << 10
#: Most entries one directory of a location may hold, and directories one ``*`` may match.
MAX_DIR_ENTRIES = 4096
MAX_MATCHES = 64

#: GRUB's module info magic, ``mimg`` read little-endian.
GRUB_MODULE_MAGIC = 0x676D696D
OBJ_ELF, OBJ_MEMDISK, OBJ_CONFIG, OBJ_PREFIX = 0, 1, 2, 3
#: The PE optional header's security directory (Authenticode signatures): its index.
_SECURITY_DIR = 4

#: A GRUB module's name, as a build names them (``efinet``, ``part_gpt``, ``gcry_sha256``).
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")


@dataclass(frozen=True)
class EfiArch:
    """What an architecture's UEFI binaries are: the PE machine, the file-name suffix."""

    machine: int
    suffix: str  # shim<suffix>.efi loads grub<suffix>.efi

    @property
    def shim_name(self) -> str:
        return f"shim{self.suffix}.efi"

    @property
    def grub_name(self) -> str:
        return f"grub{self.suffix}.efi"


#: The image architectures liveimg makes a UEFI network boot chain for.
ARCHES: dict[str, EfiArch] = {
    "x86_64": EfiArch(0x8664, "x64"),
    "aarch64": EfiArch(0xAA64, "aa64"),
}


class EfiMode(enum.StrEnum):
    """``--efi`` (require), ``--no-efi`` (off), or neither (auto: include it when the image has it)."""

    AUTO = "auto"
    REQUIRE = "require"
    OFF = "off"


@dataclass(frozen=True)
class EfiOptions:
    """The UEFI network boot chain of a build: whether to include it, and from where.

    ``source`` (``--efi-from DIR``) is a directory of the caller's holding shim and a network
    GRUB, used instead of the image's; it implies that the chain is required.
    """

    mode: EfiMode = EfiMode.AUTO
    source: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", EfiMode(self.mode))
        if self.source is not None and self.mode is EfiMode.OFF:
            raise InvalidOptions("--efi-from and --no-efi contradict each other")

    @property
    def required(self) -> bool:
        return self.mode is EfiMode.REQUIRE or self.source is not None

    def check(self) -> None:
        """Refuse, before anything is touched, a ``source`` that is not a directory (what it holds is
        read once the image's architecture is known)."""
        if self.source is not None and not self.source.is_dir():
            why = "no such directory" if not self.source.exists() else "not a directory"
            raise InvalidOptions(f"--efi-from {self.source}: {why}", hint="give the directory holding shim and GRUB")


# --- PE ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeImage:
    """What liveimg reads of a PE file: its machine, its sections (name: file bytes), whether signed."""

    machine: int
    sections: dict[str, bytes]
    signed: bool  # an Authenticode signature is attached (the security directory)


def _u16(data: bytes, offset: int, what: str) -> int:
    return int(_unpack("<H", data, offset, what)[0])


def _u32(data: bytes, offset: int, what: str) -> int:
    return int(_unpack("<I", data, offset, what)[0])


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        raise InvalidImage(f"{what}: truncated (a field at offset {offset} lies past its end, {len(data)} bytes)")
    return struct.unpack_from(fmt, data, offset)


def _slice(data: bytes, offset: int, size: int, what: str, part: str) -> bytes:
    if offset < 0 or size < 0 or offset + size > len(data):
        raise InvalidImage(f"{what}: {part} (offset {offset}, {size} bytes) lies past the end ({len(data)} bytes)")
    return data[offset : offset + size]


def _cstring(data: bytes, offset: int, what: str, part: str, limit: int = MAX_NAME) -> str:
    """The NUL-terminated ASCII string at ``offset`` (at most ``limit`` bytes)."""
    if offset < 0 or offset >= len(data):
        raise InvalidImage(f"{what}: {part} at offset {offset} lies past the end ({len(data)} bytes)")
    end = data.find(b"\0", offset, offset + limit + 1)
    if end < 0:
        raise InvalidImage(f"{what}: {part} at offset {offset} is not a string of at most {limit} bytes")
    return data[offset:end].decode("ascii", "replace")


def parse_pe(data: bytes, what: str) -> PeImage:
    """The PE (EFI application) in ``data``; :class:`InvalidImage` naming ``what`` if it is not one."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        raise InvalidImage(f"{what}: not a PE file (no MZ header)")
    pe = _u32(data, 0x3C, what)
    if _slice(data, pe, 4, what, "the PE signature") != b"PE\0\0":
        raise InvalidImage(f"{what}: not a PE file (no PE signature at offset {pe})")
    machine, count, _, symbols, nsymbols, opt_size = _unpack("<HHIIIH", data, pe + 4, what)
    if count > MAX_SECTIONS:
        raise InvalidImage(f"{what}: {count} sections, more than the {MAX_SECTIONS} a PE file may have")
    opt = pe + 24
    optional = _slice(data, opt, opt_size, what, "the optional header")
    signed = _signed(optional, len(data), what)
    table = opt + opt_size
    sections: dict[str, bytes] = {}
    for i in range(count):
        raw_name, vsize, _, raw_size, raw_ptr = _unpack("<8sIIII", data, table + 40 * i, what)
        name = _section_name(bytes(raw_name), data, symbols, nsymbols, what)
        size = min(raw_size, vsize) if vsize else raw_size
        sections.setdefault(name, _slice(data, raw_ptr, size, what, f"section {name!r}") if size else b"")
    return PeImage(machine, sections, signed)


def _signed(optional: bytes, file_size: int, what: str) -> bool:
    """Whether the optional header's security directory names a signature inside the file."""
    if len(optional) < 2:
        return False
    magic = _u16(optional, 0, what)
    if magic == 0x20B:  # PE32+
        count_at, dirs_at = 108, 112
    elif magic == 0x10B:  # PE32
        count_at, dirs_at = 92, 96
    else:
        raise InvalidImage(f"{what}: unknown optional header magic {magic:#x}")
    if count_at + 4 > len(optional) or _u32(optional, count_at, what) <= _SECURITY_DIR:
        return False
    offset, size = _unpack("<II", optional, dirs_at + 8 * _SECURITY_DIR, what)
    return size > 0 and offset + size <= file_size


def _section_name(raw: bytes, data: bytes, symbols: int, nsymbols: int, what: str) -> str:
    """A section's name: the 8 bytes of its header, or ``/N``: the COFF string table's entry at N."""
    name = raw.rstrip(b"\0").decode("ascii", "replace")
    if not (name.startswith("/") and name[1:].isdigit()):
        return name
    table = symbols + 18 * nsymbols  # the string table follows the symbol table
    size = _u32(data, table, what)
    offset = int(name[1:])
    if offset < 4 or offset >= size:
        raise InvalidImage(f"{what}: section name {name} lies outside the string table ({size} bytes)")
    return _cstring(_slice(data, table, size, what, "the string table"), offset, what, f"section name {name}")


# --- GRUB -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrubImage:
    """What a GRUB EFI image has built in: modules, prefix, embedded configuration, memdisk."""

    modules: frozenset[str]
    prefix: str | None = None
    config: str | None = None
    memdisk: bool = False

    @property
    def network(self) -> bool:
        """Whether it boots from the network under Secure Boot: efinet and tftp or http built in."""
        return "efinet" in self.modules and bool({"tftp", "http"} & self.modules)

    @property
    def http(self) -> bool:
        """Whether it can fetch files over HTTP (the http module built in)."""
        return "http" in self.modules

    def config_paths(self) -> tuple[tuple[str, ...], str | None]:
        """Where, under the TFTP root, this GRUB reads ``grub.cfg`` once booted from the network,
        and a note when its prefix cannot be one of them.

        ``<prefix>/grub.cfg`` for a prefix that is a path (``/grub`` gives ``grub/grub.cfg``),
        and always ``grub.cfg`` at the root, beside the binary (where GRUBs that take the prefix
        from the boot file's directory look).  A prefix naming a device (``(hd0,gpt1)/...``) is
        not on the TFTP server: only the root one then.
        """
        prefix = (self.prefix or "").strip()
        if not prefix:
            return ("grub.cfg",), None
        if prefix.startswith("("):
            return ("grub.cfg",), f"its prefix {prefix!r} names a device, not the TFTP server"
        path = prefix.strip("/")
        if not path:
            return ("grub.cfg",), None
        try:
            config = bootsyntax.tftp_path(f"{path}/grub.cfg")
        except InvalidImage:
            return ("grub.cfg",), f"its prefix {prefix[:60]!r} is not a plain path under the TFTP root"
        return (config, "grub.cfg"), None


def parse_grub(pe: PeImage, what: str) -> GrubImage:
    """The GRUB image in ``pe`` (its ``mods`` section); :class:`InvalidImage` if it has none or it is bad."""
    mods = pe.sections.get("mods")
    if mods is None:
        raise InvalidImage(f"{what}: not a GRUB image (no mods section)")
    magic, _, offset, size = _unpack("<IIQQ", mods, 0, what)
    if magic != GRUB_MODULE_MAGIC:
        raise InvalidImage(f"{what}: the mods section has no GRUB module info (magic {magic:#x})")
    if size > len(mods) or not 24 <= offset <= size:
        raise InvalidImage(f"{what}: GRUB's module info (offset {offset}, size {size}) lies outside "
                           f"its section ({len(mods)} bytes)")  # fmt: skip
    modules: set[str] = set()
    prefix = config = None
    memdisk = False
    position, count = offset, 0
    while position < size:
        count += 1
        if count > MAX_OBJECTS:
            raise InvalidImage(f"{what}: GRUB's mods section holds more than {MAX_OBJECTS} objects")
        if position + 8 > size:
            raise InvalidImage(f"{what}: GRUB object {count} at offset {position} is truncated")
        kind, length = _unpack("<II", mods, position, what)
        if length < 8 or position + length > size:
            raise InvalidImage(f"{what}: GRUB object {count} at offset {position} has an impossible size {length}")
        body = mods[position + 8 : position + length]
        if kind == OBJ_ELF:
            modules.add(_module_name(body, f"{what}: GRUB module {count}"))
        elif kind == OBJ_MEMDISK:
            memdisk = True
        elif kind == OBJ_CONFIG:
            config = _cstring(body + b"\0", 0, what, "GRUB's embedded configuration", MAX_TEXT)
        elif kind == OBJ_PREFIX:
            prefix = _cstring(body + b"\0", 0, what, "GRUB's prefix")
        position += length
    return GrubImage(frozenset(modules), prefix, config, memdisk)


def _module_name(elf: bytes, what: str) -> str:
    """The name in a GRUB module's ``.modname`` section (the module is an ELF relocatable file)."""
    if elf[:4] != b"\x7fELF":
        raise InvalidImage(f"{what}: not an ELF file")
    if len(elf) < 6 or elf[5] != 1:
        raise InvalidImage(f"{what}: not a little-endian ELF file")
    if elf[4] == 2:  # ELF64
        shoff = _unpack("<Q", elf, 0x28, what)[0]
        entsize, shnum, shstrndx = _unpack("<HHH", elf, 0x3A, what)
        header, minimum = "<IIQQQQ", 64
    elif elf[4] == 1:  # ELF32
        shoff = _unpack("<I", elf, 0x20, what)[0]
        entsize, shnum, shstrndx = _unpack("<HHH", elf, 0x2E, what)
        header, minimum = "<IIIIII", 40
    else:
        raise InvalidImage(f"{what}: unknown ELF class {elf[4]}")
    if shnum > MAX_ELF_SECTIONS or entsize < minimum or shstrndx >= shnum:
        raise InvalidImage(f"{what}: impossible ELF section table ({shnum} sections of {entsize} bytes)")
    sections = [_unpack(header, elf, shoff + i * entsize, what) for i in range(shnum)]
    # (name, type, flags, addr, offset, size): the offset and size are the 5th and 6th fields.
    names = _slice(elf, sections[shstrndx][4], sections[shstrndx][5], what, "the section names")
    for entry in sections:
        if _cstring(names, entry[0], what, "a section name") == ".modname":
            name = _cstring(_slice(elf, entry[4], entry[5], what, ".modname") + b"\0", 0, what, ".modname")
            if not _MODULE_NAME.fullmatch(name):
                raise InvalidImage(f"{what}: the module name {name[:60]!r} is not a plain name")
            return name
    raise InvalidImage(f"{what}: no .modname section")


# --- finding them -----------------------------------------------------------------------------------

#: Where distributions keep their signed boot chain, one group per packaging: a group's shim and
#: GRUB are signed by the same vendor.  ``*`` matches any directory (newest version first).
LOCATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Debian/Ubuntu", ("/usr/lib/shim", "/usr/lib/grub/*-efi-signed")),
    ("Fedora", ("/usr/lib/efi/shim/*/EFI/*", "/usr/lib/efi/grub2/*/EFI/*")),
    ("bootupd", ("/usr/lib/bootupd/updates/EFI/*",)),
    ("EFI system partition", ("/boot/efi/EFI/*", "/usr/share/shim/*/*", "/usr/share/shim/*", "/usr/share/shim")),
    ("openSUSE", ("/usr/share/efi/*",)),
)


@dataclass(frozen=True)
class Candidate:
    """A file that may be part of the chain: where it is, what it holds."""

    path: str  # a guest path of the installed system, or a host path (--efi-from)
    name: str
    sha256: str
    pe: PeImage = field(repr=False)
    grub: GrubImage | None
    order: int  # its directory's place in its group

    @property
    def shim(self) -> bool:
        return ".vendor_cert" in self.pe.sections


@dataclass(frozen=True)
class EfiChain:
    """The chosen chain: a network GRUB and (usually) its shim, with where they come from."""

    grub: Candidate
    shim: Candidate | None
    where: str  # the group (``Debian/Ubuntu``) or ``--efi-from DIR``
    from_host: bool  # copied from a host directory (--efi-from), else from rootfs.img
    arch: EfiArch
    notes: tuple[str, ...] = ()

    @property
    def grub_image(self) -> GrubImage:
        """What the chosen GRUB has built in."""
        if self.grub.grub is None:
            raise InternalError(f"{self.grub.path} was chosen as GRUB, but it is no GRUB image")
        return self.grub.grub

    def boot(self) -> EfiBoot:
        """The :class:`EfiBoot` of this chain once copied into OUTDIR."""
        configs, _ = self.grub_image.config_paths()
        files = [p.path for p in (self.shim, self.grub) if p is not None]
        return EfiBoot(
            grub=self.arch.grub_name,
            shim=self.arch.shim_name if self.shim is not None else None,
            configs=configs,
            http=self.grub_image.http,
            source=f"{self.where}: {', '.join(files)}",
        )


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders ``15.8`` before ``16.1`` and ``2`` before ``10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|\D+", name))


def _expand(tree: GuestTree, pattern: str) -> list[str]:
    """The directories ``pattern`` matches in ``tree`` (``*`` matching any name, newest first)."""
    found = ["/"]
    for part in pattern.strip("/").split("/"):
        matches: list[str] = []
        for base in found:
            if "*" in part:
                regex = re.compile(re.escape(part).replace(r"\*", ".*"))
                names = [n for n in tree.listdir(base, limit=MAX_DIR_ENTRIES) if regex.fullmatch(n)]
                names.sort(key=_natural, reverse=True)
            else:
                names = [part]
            matches += [f"{base.rstrip('/')}/{n}" for n in names if tree.is_dir(f"{base.rstrip('/')}/{n}")]
        found = matches[:MAX_MATCHES]
    return found


def _classify(data: bytes, path: str, name: str, order: int, arch: EfiArch) -> Candidate | None:
    """The candidate ``data`` is, or None if it is no EFI binary of ``arch`` (logged)."""
    try:
        pe = parse_pe(data, path)
        if pe.machine != arch.machine:
            return None
        grub = parse_grub(pe, path) if "mods" in pe.sections else None
    except InvalidImage as exc:
        log.debug("efi: passing over %s", exc)
        return None
    return Candidate(path, name, hashlib.sha256(data).hexdigest(), pe, grub, order)


def image_candidates(tree: GuestTree, patterns: tuple[str, ...], arch: EfiArch) -> Iterator[Candidate]:
    """The EFI binaries of ``arch`` in the directories ``patterns`` match in ``tree`` (paths resolved)."""
    seen: set[str] = set()
    for order, pattern in enumerate(patterns):
        try:
            directories = _expand(tree, pattern)
        except InvalidImage as exc:  # a link out of the root, a loop: not a place to look
            log.warning("UEFI: passing over %s: %s", pattern, exc)
            continue
        for directory in directories:
            try:
                names = tree.listdir(directory, limit=MAX_DIR_ENTRIES)
            except InvalidImage as exc:
                log.warning("UEFI: passing over %s: %s", directory, exc)
                continue
            for name in names:
                if ".efi" not in name.lower():
                    continue
                try:
                    path = tree.resolve(f"{directory}/{name}")
                    if path is None or path in seen or not tree.is_file(path) or tree.size(path) > MAX_BINARY:
                        continue
                    data = tree.read_bytes(path, limit=MAX_BINARY)
                except InvalidImage as exc:
                    log.warning("UEFI: passing over %s/%s: %s", directory, name, exc)
                    continue
                seen.add(path)
                candidate = _classify(data, path, name, order, arch)
                if candidate is not None:
                    yield candidate


def host_candidates(directory: Path, arch: EfiArch) -> Iterator[Candidate]:
    """The EFI binaries of ``arch`` in the caller's ``directory`` (``--efi-from``)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise InvalidOptions(f"--efi-from {directory}: {exc.strerror or exc}") from None
    for path in entries:
        try:
            if not path.is_file() or path.stat().st_size > MAX_BINARY:
                continue
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidOptions(f"--efi-from {directory}: cannot read {path.name}: {exc.strerror}") from None
        candidate = _classify(data, str(path), path.name, 0, arch)
        if candidate is not None:
            yield candidate


def _rank(names: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def choose(candidates: list[Candidate], arch: EfiArch) -> tuple[Candidate | None, Candidate | None]:
    """The network GRUB and the shim among ``candidates`` (one group's): (grub, shim), either None.

    Signed binaries first (a signed one is the one Secure Boot boots), then the names
    distributions give the network GRUB and shim (``grubnet<arch>.efi.signed`` before
    ``grub<arch>.efi``), then the directories in the group's order, then the order they were
    found in (the newest version's directory first).
    """
    sfx = arch.suffix
    grub_rank = _rank([f"grubnet{sfx}.efi.signed", f"grubnet{sfx}.efi", f"grub{sfx}.efi.signed", f"grub{sfx}.efi",
                       "grub.efi"])  # fmt: skip
    shim_rank = _rank([f"shim{sfx}.efi.signed", f"shim{sfx}.efi.signed.latest", f"shim{sfx}.efi", "shim.efi"])

    found = {id(c): i for i, c in enumerate(candidates)}

    def key(rank: dict[str, int]) -> Callable[[Candidate], tuple[object, ...]]:
        return lambda c: (not c.pe.signed, rank.get(c.name.lower(), len(rank)), c.order, found[id(c)])

    grubs = sorted((c for c in candidates if c.grub is not None and c.grub.network), key=key(grub_rank))
    shims = sorted((c for c in candidates if c.shim), key=key(shim_rank))
    return (grubs[0] if grubs else None), (shims[0] if shims else None)


def _chain(grub: Candidate, shim: Candidate | None, where: str, from_host: bool, arch: EfiArch) -> EfiChain:
    chain = EfiChain(grub, shim, where, from_host, arch)
    notes = []
    _, prefix_note = chain.grub_image.config_paths()
    if prefix_note:
        notes.append(f"UEFI: {grub.path}: {prefix_note}; grub.cfg is written only at the TFTP root")
    if shim is None:
        notes.append(f"UEFI: no shim beside {grub.path}: Secure Boot will refuse {arch.grub_name} unless "
                     "its key is enrolled")  # fmt: skip
    elif not (shim.pe.signed and grub.pe.signed):
        unsigned = [c.path for c in (shim, grub) if not c.pe.signed]
        notes.append(f"UEFI: {', '.join(unsigned)} not signed: Secure Boot will refuse it")
    return dataclasses.replace(chain, notes=tuple(notes))


MISSING = "shim and a network GRUB (an EFI GRUB image with efinet and tftp or http built in)"


def locate(tree: GuestTree, arch: str | None, options: EfiOptions) -> EfiChain | None:
    """Find the chain the build will copy (the preflight: before the long stages).

    In ``options.source`` if given, else in the installed system's ``tree``; None when the
    build has none (``--no-efi``, or an image without one in auto mode: a note is logged).
    ``--efi`` (or ``--efi-from``) without one is an error: :class:`InvalidImage` for the image,
    :class:`InvalidOptions` for the directory.
    """
    if options.mode is EfiMode.OFF:
        return None
    efi_arch = ARCHES.get(arch or "")
    if efi_arch is None:
        if options.required:
            raise InvalidOptions(f"--efi: liveimg makes UEFI network boot chains for {', '.join(ARCHES)}, "
                                 f"not for this image's architecture ({arch or 'unknown'})")  # fmt: skip
        return None
    if options.source is not None:
        found = list(host_candidates(options.source, efi_arch))
        grub, shim = choose(found, efi_arch)
        if grub is None:
            raise InvalidOptions(f"--efi-from {options.source} has no network GRUB for {arch} (an EFI GRUB image "
                                 "with efinet and tftp or http built in)")  # fmt: skip
        return _report(_chain(grub, shim, f"--efi-from {options.source}", True, efi_arch))
    for group, patterns in LOCATIONS:
        grub, shim = choose(list(image_candidates(tree, patterns, efi_arch)), efi_arch)
        if grub is not None:
            return _report(_chain(grub, shim, group, False, efi_arch))
    if options.required:
        raise InvalidImage(f"--efi: the image has no {MISSING} for {arch}",
                           hint="give them with --efi-from DIR, or build without --efi")  # fmt: skip
    log.warning("UEFI: the image has no %s: UEFI clients need them, give them with --efi-from DIR", MISSING)
    return None


def _report(chain: EfiChain) -> EfiChain:
    for note in chain.notes:
        log.warning("%s", note)
    log.info("UEFI: %s", chain.boot().source)
    return chain


# --- copying them -----------------------------------------------------------------------------------


def copy_chain(chain: EfiChain, outdir: Path, *, rootfs_img: Path | None, root: str = "/") -> EfiBoot:
    """Copy ``chain`` into ``outdir`` (``shim<arch>.efi``, ``grub<arch>.efi``) and return its :class:`EfiBoot`.

    Image files come out of ``rootfs_img`` (the physical root, where the installed system is at
    ``root``: an ostree deployment's directory), without mounting it; each copy must be the
    bytes chosen in the preflight (:class:`InvalidImage` if not).
    """
    boot = chain.boot()
    for candidate, name in ((chain.shim, boot.shim), (chain.grub, boot.grub)):
        if candidate is None or name is None:
            continue
        dest = outdir / name
        tmp = dest.with_name(f".{name}.tmp")
        try:
            if chain.from_host:
                shutil.copyfile(candidate.path, tmp)
            else:
                if rootfs_img is None:
                    raise InvalidImage(f"{candidate.path}: no rootfs.img to copy it from")
                e2fs.dump_file(rootfs_img, f"{root.rstrip('/')}{candidate.path}", tmp)
            if sha256_file(tmp) != candidate.sha256:
                raise InvalidImage(f"{candidate.path}: the copy is not the file that was chosen (it changed)")
            tmp.chmod(0o644)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return boot


__all__ = [
    "ARCHES",
    "LOCATIONS",
    "Candidate",
    "EfiArch",
    "EfiChain",
    "EfiMode",
    "EfiOptions",
    "GrubImage",
    "PeImage",
    "choose",
    "copy_chain",
    "host_candidates",
    "image_candidates",
    "locate",
    "parse_grub",
    "parse_pe",
]
