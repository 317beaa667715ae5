"""The UEFI network boot chain: the PE and GRUB parsers (synthetic, hostile and real binaries), finding and choosing."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveimg import efi
from liveimg.efi import EfiMode, EfiOptions, GrubImage, locate, parse_grub, parse_pe
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.fsview import GuestTree, HostFS
from tests import efibins as b
from tests.support import need_file

DEBIAN_GRUB = "/usr/lib/grub/x86_64-efi-signed"
DEBIAN_SHIM = "/usr/lib/shim"


def grub_of(data: bytes) -> GrubImage:
    return parse_grub(parse_pe(data, "t.efi"), "t.efi")


# --- the parsers, on synthetic binaries ---------------------------------------------------------------


def test_a_network_grub_is_read_from_its_mods_section() -> None:
    grub = grub_of(b.grub_efi())
    assert grub.modules == frozenset(b.NET_MODULES)
    assert (grub.prefix, grub.config, grub.memdisk) == ("/grub", "normal (memdisk)/grub.cfg\n", True)
    assert grub.network and not grub.http
    assert grub.config_paths() == (("grub/grub.cfg", "grub.cfg"), None)


def test_32_bit_elf_modules_are_read_too() -> None:
    data = b.pe([("mods", b.mods([b.obj(b.ELF, b.elf_module(b"efinet", elf_class=1))]))])
    assert grub_of(data).modules == {"efinet"}


@pytest.mark.parametrize(
    ("modules", "network", "http"),
    [
        (("efinet", "tftp"), True, False),
        (("efinet", "http"), True, True),
        (("efinet", "tftp", "http"), True, True),
        (("tftp", "http", "net"), False, True),  # no efinet: no network card under UEFI
        (("efinet", "net"), False, False),  # no protocol
        (("normal", "part_gpt", "ext2"), False, False),  # a disk GRUB
    ],
)
def test_only_built_in_modules_decide_what_grub_can_do(modules: tuple[str, ...], network: bool, http: bool) -> None:
    grub = grub_of(b.grub_efi(modules))
    assert (grub.network, grub.http) == (network, http)


@pytest.mark.parametrize(
    ("prefix", "configs", "note"),
    [
        ("/grub", ("grub/grub.cfg", "grub.cfg"), None),
        ("/EFI/fedora/", ("EFI/fedora/grub.cfg", "grub.cfg"), None),
        ("/", ("grub.cfg",), None),
        ("", ("grub.cfg",), None),
        (None, ("grub.cfg",), None),
        (
            "(hd0,gpt1)/EFI/debian",
            ("grub.cfg",),
            "its prefix '(hd0,gpt1)/EFI/debian' names a device, not the TFTP server",
        ),
        ("/../../etc", ("grub.cfg",), "its prefix '/../../etc' is not a plain path under the TFTP root"),
        ("/a b", ("grub.cfg",), "its prefix '/a b' is not a plain path under the TFTP root"),
    ],
)
def test_grub_cfg_goes_where_the_prefix_says(prefix: str | None, configs: tuple[str, ...], note: str | None) -> None:
    assert grub_of(b.grub_efi(prefix=prefix)).config_paths() == (configs, note)


def test_a_shim_is_a_pe_with_a_vendor_cert_section_named_in_the_string_table() -> None:
    shim = parse_pe(b.shim_efi(), "shim")
    assert set(shim.sections) == {".text", ".vendor_cert", ".sbat"}
    assert shim.sections[".sbat"] == b"sbat,1\n"
    assert shim.signed and shim.machine == b.X64
    assert not parse_pe(b.shim_efi(signed=False), "shim").signed


def test_a_pe32_header_is_read_as_well() -> None:
    assert parse_pe(b.pe([("mods", b.grub_mods())], optional_magic=0x10B), "x").machine == b.X64


# --- hostile binaries ---------------------------------------------------------------------------------


def _patch(data: bytes, offset: int, fmt: str, *values: int | bytes) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def _mods_at(data: bytes) -> int:
    return data.index(struct.pack("<I", b.MAGIC))


HOSTILE_PE = {
    "empty": b"",
    "not MZ": b"ZM" + b"\0" * 100,
    "PE header past the end": _patch(b.grub_efi(), 0x3C, "<I", 1 << 30),
    "no PE signature": _patch(b.grub_efi(), 0x40, "<I", 0),
    "huge section count": _patch(b.grub_efi(), 0x46, "<H", 0xFFFF),
    "optional header past the end": _patch(b.grub_efi(), 0x54, "<H", 0xFFFF),
    "unknown optional header": _patch(b.grub_efi(), 0x58, "<H", 0x1234),
    "section data past the end": _patch(b.grub_efi(), 0x40 + 24 + 240 + 40 + 20, "<I", 1 << 31),
    "section size past the end": _patch(b.grub_efi(), 0x40 + 24 + 240 + 40 + 8, "<III", 1 << 31, 0x1000, 1 << 31),
    "long name past the string table": _patch(b.shim_efi(), 0x40 + 24 + 240 + 40, "8s", b"/99999"),
    "string table past the end": _patch(b.shim_efi(), 0x4C, "<I", 1 << 31),
    "truncated": b.grub_efi()[:700],
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PE))
def test_a_hostile_pe_file_is_one_invalid_image(name: str) -> None:
    data = HOSTILE_PE[name]
    with pytest.raises(InvalidImage) as excinfo:
        parse_grub(parse_pe(data, "evil.efi"), "evil.efi")
    assert str(excinfo.value).startswith("evil.efi: ") and "\n" not in str(excinfo.value)


def _grub_with_mods(section: bytes) -> bytes:
    return b.pe([("mods", section)])


HOSTILE_MODS = {
    "wrong magic": b.mods([], magic=0x12345678),
    "header truncated": struct.pack("<I", b.MAGIC),
    "size past the section": b.mods([b.obj(b.PREFIX, b"/grub\0")], size=1 << 40),
    "offset past the size": b.mods([b.obj(b.PREFIX, b"/grub\0")], offset=1 << 20),
    "offset inside the header": b.mods([b.obj(b.PREFIX, b"/grub\0")], offset=4),
    "object of size 0 (a loop)": b.mods([b.obj(b.PREFIX, b"/grub\0", size=0)]),
    "object of size 4": b.mods([b.obj(b.PREFIX, b"/grub\0", size=4)]),
    "object past the end": b.mods([b.obj(b.PREFIX, b"/grub\0", size=1 << 31)]),
    "object header truncated": b.mods([b.obj(b.PREFIX, b"/grub\0")], size=24 + 16 + 4),
    "too many objects": b.mods([b.obj(b.MEMDISK, b"")] * (efi.MAX_OBJECTS + 1)),
    "module not ELF": b.mods([b.obj(b.ELF, b"not an ELF file")]),
    "module big-endian": b.mods([b.obj(b.ELF, b"\x7fELF\x02\x02" + b"\0" * 80)]),
    "module unknown class": b.mods([b.obj(b.ELF, b"\x7fELF\x07\x01" + b"\0" * 80)]),
    "module truncated": b.mods([b.obj(b.ELF, b.elf_module(b"efinet")[:70])]),
    "module with huge section count": b.mods([b.obj(b.ELF, _patch(b.elf_module(b"efinet"), 0x3C, "<H", 0xFFFF))]),
    "module sections past the end": b.mods([b.obj(b.ELF, _patch(b.elf_module(b"efinet"), 0x28, "<Q", 1 << 40))]),
    "module name table out of range": b.mods([b.obj(b.ELF, _patch(b.elf_module(b"efinet"), 0x3E, "<H", 9))]),
    "module name with a slash": b.mods([b.obj(b.ELF, b.elf_module(b"../../etc/passwd"))]),
    "module name ..": b.mods([b.obj(b.ELF, b.elf_module(b".."))]),
    "module name empty": b.mods([b.obj(b.ELF, b.elf_module(b""))]),
    "module name without its NUL": b.mods([b.obj(b.ELF, b.elf_module(b"x" * 400))]),
    "prefix without an end": b.mods([b.obj(b.PREFIX, b"/" + b"g" * 1000)]),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_MODS))
def test_a_hostile_mods_section_is_one_invalid_image(name: str) -> None:
    with pytest.raises(InvalidImage) as excinfo:
        grub_of(_grub_with_mods(HOSTILE_MODS[name]))
    assert "\n" not in str(excinfo.value)


def test_every_truncation_of_a_grub_image_parses_or_is_invalid() -> None:
    data = b.grub_efi()
    for end in range(0, len(data), 97):
        try:
            grub_of(data[:end])
        except InvalidImage:
            pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_corrupted_grub_image_parses_or_is_invalid(data: st.DataObject) -> None:
    image = bytearray(b.grub_efi())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(image) - 1))
        image[at] = data.draw(st.integers(0, 255))
    try:
        grub = grub_of(bytes(image))
    except InvalidImage:
        return
    assert all(efi._MODULE_NAME.fullmatch(m) for m in grub.modules)


# --- the real binaries (Debian's shim-signed and grub-efi-amd64-signed) ---------------------------------


def test_debians_signed_network_grub() -> None:
    path = f"{DEBIAN_GRUB}/grubnetx64.efi.signed"
    need_file(path, "grub-efi-amd64-signed")
    pe = parse_pe(Path(path).read_bytes(), path)
    grub = parse_grub(pe, path)
    assert pe.signed and pe.machine == b.X64
    assert {"efinet", "tftp", "normal", "linux", "memdisk"} <= grub.modules and "http" not in grub.modules
    assert (grub.prefix, grub.config, grub.memdisk) == ("/grub", "normal (memdisk)/grub.cfg\n", True)
    assert grub.network and not grub.http
    assert grub.config_paths() == (("grub/grub.cfg", "grub.cfg"), None)


def test_debians_signed_disk_grub_is_no_network_grub() -> None:
    path = f"{DEBIAN_GRUB}/grubx64.efi.signed"
    need_file(path, "grub-efi-amd64-signed")
    grub = parse_grub(parse_pe(Path(path).read_bytes(), path), path)
    assert grub.prefix == "/EFI/debian" and "tftp" not in grub.modules and not grub.network


def test_debians_shim_has_its_vendor_cert_and_mokmanager_has_none() -> None:
    need_file(f"{DEBIAN_SHIM}/shimx64.efi.signed", "shim-signed")
    shim = parse_pe(Path(f"{DEBIAN_SHIM}/shimx64.efi.signed").read_bytes(), "shim")
    assert ".vendor_cert" in shim.sections and shim.signed
    need_file(f"{DEBIAN_SHIM}/mmx64.efi.signed", "shim-helpers-amd64-signed")
    assert ".vendor_cert" not in parse_pe(Path(f"{DEBIAN_SHIM}/mmx64.efi.signed").read_bytes(), "mm").sections


def test_the_hosts_own_chain_is_found_as_an_images_would_be() -> None:
    need_file(f"{DEBIAN_GRUB}/grubnetx64.efi.signed", "grub-efi-amd64-signed")
    need_file(f"{DEBIAN_SHIM}/shimx64.efi.signed", "shim-signed")
    chain = locate(GuestTree(HostFS("/")), "x86_64", EfiOptions())
    assert chain is not None and chain.where == "Debian/Ubuntu"
    assert chain.grub.path == f"{DEBIAN_GRUB}/grubnetx64.efi.signed"  # not the installer's, not the disk one
    assert chain.shim is not None and chain.shim.path == f"{DEBIAN_SHIM}/shimx64.efi.signed"  # the signed one


# --- finding and choosing -----------------------------------------------------------------------------


def tree_of(root: Path, files: dict[str, bytes]) -> GuestTree:
    for path, data in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_bytes(data)
    return GuestTree(HostFS(root, label="image"))


DEBIAN = {
    "/usr/lib/shim/shimx64.efi": b.shim_efi(signed=False),
    "/usr/lib/shim/shimx64.efi.signed": b.shim_efi(),
    "/usr/lib/shim/mmx64.efi.signed": b.pe([(".text", b"mm")], signed=True),
    "/usr/lib/shim/BOOTX64.CSV": b"shimx64.efi,debian\n",
    f"{DEBIAN_GRUB}/grubx64.efi.signed": b.grub_efi(("normal", "efinet", "part_gpt"), prefix="/EFI/debian"),
    f"{DEBIAN_GRUB}/grubnetx64-installer.efi.signed": b.grub_efi(prefix="/debian-installer/amd64/grub"),
    f"{DEBIAN_GRUB}/grubnetx64.efi.signed": b.grub_efi(),
    f"{DEBIAN_GRUB}/gcdx64.efi.signed": b.grub_efi(("normal", "efinet", "iso9660")),
}


def test_debians_network_grub_and_signed_shim_are_chosen(tmp_path: Path) -> None:
    chain = locate(tree_of(tmp_path, DEBIAN), "x86_64", EfiOptions())
    assert chain is not None and chain.where == "Debian/Ubuntu" and not chain.from_host
    assert chain.grub.path == f"{DEBIAN_GRUB}/grubnetx64.efi.signed"
    assert chain.shim is not None and chain.shim.path == "/usr/lib/shim/shimx64.efi.signed"
    boot = chain.boot()
    assert (boot.grub, boot.shim, boot.configs, boot.http, boot.bootfile) == (
        "grubx64.efi", "shimx64.efi", ("grub/grub.cfg", "grub.cfg"), False, "shimx64.efi",
    )  # fmt: skip
    assert chain.notes == ()


def test_fedoras_newest_versions_are_chosen_and_its_grub_fetches_over_http(tmp_path: Path) -> None:
    net = ("normal", "linux", "efinet", "tftp", "http")
    files = {
        "/usr/lib/efi/shim/15.8-3/EFI/fedora/shimx64.efi": b.shim_efi(),
        "/usr/lib/efi/shim/15.10-1/EFI/fedora/shimx64.efi": b.shim_efi() + b"newer",
        "/usr/lib/efi/grub2/2.12-9/EFI/fedora/grubx64.efi": b.grub_efi(net, prefix="/EFI/fedora"),
        "/usr/lib/efi/grub2/2.12-10/EFI/fedora/grubx64.efi": b.grub_efi(net, prefix="/EFI/fedora") + b"newer",
        "/usr/lib/efi/grub2/2.12-10/EFI/fedora/gcdx64.efi": b.grub_efi(("normal", "iso9660")),
    }
    chain = locate(tree_of(tmp_path, files), "x86_64", EfiOptions())
    assert chain is not None and chain.where == "Fedora"
    assert chain.grub.path == "/usr/lib/efi/grub2/2.12-10/EFI/fedora/grubx64.efi"
    assert chain.shim is not None and chain.shim.path == "/usr/lib/efi/shim/15.10-1/EFI/fedora/shimx64.efi"
    assert chain.boot().configs == ("EFI/fedora/grub.cfg", "grub.cfg") and chain.boot().http


def test_bootupds_updates_are_found_through_a_symlink_inside_the_root(tmp_path: Path) -> None:
    tree = tree_of(tmp_path, {
        "/usr/lib/bootupd/updates/EFI/centos/shimx64.efi": b.shim_efi(),
        "/usr/lib/bootupd/updates/EFI/centos/real-grub.efi": b.grub_efi(("efinet", "tftp", "http")),
    })  # fmt: skip
    os.symlink("real-grub.efi", tmp_path / "usr/lib/bootupd/updates/EFI/centos/grubx64.efi")
    chain = locate(tree, "x86_64", EfiOptions())
    assert chain is not None and chain.where == "bootupd"
    assert chain.grub.path == "/usr/lib/bootupd/updates/EFI/centos/real-grub.efi"  # resolved, found once


def test_links_out_of_the_root_and_foreign_binaries_are_passed_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "grubnetx64.efi.signed").write_bytes(b.grub_efi())
    root = tmp_path / "root"
    tree = tree_of(root, {
        "/usr/lib/efi/grub2/1/EFI/arm/grubaa64.efi": b.grub_efi(machine=b.AA64),  # another architecture
        "/usr/lib/efi/shim/1/EFI/arm/shimaa64.efi": b.shim_efi(machine=b.AA64),
        "/usr/share/efi/x86_64/grub.efi": b"MZ garbage",
    })  # fmt: skip
    (root / "usr/lib/grub").mkdir(parents=True)
    os.symlink("../../../../host", root / "usr/lib/grub/x86_64-efi-signed")
    with caplog.at_level(logging.WARNING, logger="liveimg.efi"):
        assert locate(tree, "x86_64", EfiOptions()) is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("passing over /usr/lib/grub/*-efi-signed" in m and "outside the guest root" in m for m in messages)
    assert messages[-1] == (
        "UEFI: the image has no shim and a network GRUB (an EFI GRUB image with efinet and tftp or http built in): "
        "UEFI clients need them, give them with --efi-from DIR"
    )
    chain = locate(tree, "aarch64", EfiOptions())
    assert chain is not None and chain.boot().grub == "grubaa64.efi" and chain.boot().shim == "shimaa64.efi"


def test_symlink_loops_are_passed_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = tree_of(tmp_path, {"/usr/lib/shim/shimx64.efi.signed": b.shim_efi()})
    os.symlink("b.efi", tmp_path / "usr/lib/shim/a.efi")
    os.symlink("a.efi", tmp_path / "usr/lib/shim/b.efi")
    (tmp_path / "usr/lib/efi").mkdir()
    os.symlink("shim", tmp_path / "usr/lib/efi/shim")
    with caplog.at_level(logging.WARNING, logger="liveimg.efi"):
        assert locate(tree, "x86_64", EfiOptions()) is None  # a shim alone is no chain
    messages = [r.getMessage() for r in caplog.records]
    assert any("passing over /usr/lib/shim/a.efi" in m and "too many symbolic links" in m for m in messages)
    assert any("passing over /usr/lib/efi/shim/*/EFI/*" in m and "too many symbolic links" in m for m in messages)


def test_efi_required_without_a_chain_is_one_line(tmp_path: Path) -> None:
    tree = tree_of(tmp_path, {f"{DEBIAN_GRUB}/grubx64.efi.signed": b.grub_efi(("normal", "efinet"))})
    with pytest.raises(InvalidImage) as excinfo:
        locate(tree, "x86_64", EfiOptions(mode=EfiMode.REQUIRE))
    assert str(excinfo.value) == (
        "--efi: the image has no shim and a network GRUB (an EFI GRUB image with efinet and tftp or http built in) "
        "for x86_64 (give them with --efi-from DIR, or build without --efi)"
    )
    with pytest.raises(InvalidOptions, match=r"^--efi: liveimg makes UEFI network boot chains for x86_64, aarch64, "):
        locate(tree, "riscv64", EfiOptions(mode=EfiMode.REQUIRE))
    assert locate(tree, "riscv64", EfiOptions()) is None


def test_no_efi_looks_at_nothing(tmp_path: Path) -> None:
    assert locate(tree_of(tmp_path, DEBIAN), "x86_64", EfiOptions(mode=EfiMode.OFF)) is None


def test_a_grub_without_shim_or_signature_comes_with_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = tree_of(tmp_path, {"/usr/share/efi/x86_64/grub.efi": b.grub_efi(prefix="(hd0,gpt2)/boot/grub2")})
    with caplog.at_level(logging.WARNING, logger="liveimg.efi"):
        chain = locate(tree, "x86_64", EfiOptions())
    assert chain is not None and chain.shim is None and chain.boot().bootfile == "grubx64.efi"
    assert chain.boot().configs == ("grub.cfg",)
    assert [r.getMessage() for r in caplog.records] == [
        "UEFI: /usr/share/efi/x86_64/grub.efi: its prefix '(hd0,gpt2)/boot/grub2' names a device, not the TFTP "
        "server; grub.cfg is written only at the TFTP root",
        "UEFI: no shim beside /usr/share/efi/x86_64/grub.efi: Secure Boot will refuse grubx64.efi unless its key "
        "is enrolled",
    ]


def test_efi_from_a_directory_of_the_callers(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "shimx64.efi").write_bytes(b.shim_efi())
    (mine / "grub-http.efi").write_bytes(b.grub_efi(("efinet", "http")))
    (mine / "README").write_text("my boot chain\n")
    image = tree_of(tmp_path / "image", DEBIAN)  # the image's own is not used
    chain = locate(image, "x86_64", EfiOptions(source=mine))
    assert chain is not None and chain.from_host and chain.where == f"--efi-from {mine}"
    assert chain.grub.path == str(mine / "grub-http.efi") and chain.boot().http
    out = tmp_path / "out"
    out.mkdir()
    boot = efi.copy_chain(chain, out, rootfs_img=None)
    assert (out / "grubx64.efi").read_bytes() == (mine / "grub-http.efi").read_bytes()
    assert (out / "shimx64.efi").read_bytes() == (mine / "shimx64.efi").read_bytes()
    assert boot.source == f"--efi-from {mine}: {mine / 'shimx64.efi'}, {mine / 'grub-http.efi'}"
    (mine / "grub-http.efi").write_bytes(b.grub_efi(("efinet", "tftp")))  # changed since it was chosen
    with pytest.raises(InvalidImage, match="the copy is not the file that was chosen"):
        efi.copy_chain(chain, out, rootfs_img=None)
    assert sorted(p.name for p in out.iterdir()) == ["grubx64.efi", "shimx64.efi"]  # no temporary left


def test_efi_from_without_a_network_grub_or_a_directory(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "grubx64.efi").write_bytes(b.grub_efi(("normal", "part_gpt")))
    with pytest.raises(InvalidOptions) as excinfo:
        locate(GuestTree(HostFS(tmp_path)), "x86_64", EfiOptions(source=mine))
    assert str(excinfo.value) == (
        f"--efi-from {mine} has no network GRUB for x86_64 (an EFI GRUB image with efinet and tftp or http built in)"
    )
    with pytest.raises(InvalidOptions, match=f"^--efi-from {tmp_path / 'nope'}: No such file or directory$"):
        locate(GuestTree(HostFS(tmp_path)), "x86_64", EfiOptions(source=tmp_path / "nope"))
    with pytest.raises(InvalidOptions, match=r"^--efi-from and --no-efi contradict each other$"):
        EfiOptions(mode=EfiMode.OFF, source=mine)
    assert EfiOptions(source=mine).required and not EfiOptions().required
