"""BLS entries: parsing, ostree's boot order, finding the live loader directory."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveimg.errors import InvalidImage
from liveimg.fsview import GuestTree, HostFS
from liveimg.ostree.bls import find_loader, parse_entry, read_entries, sort_entries, split_kernel_args, strverscmp
from liveimg.pxe import LiveBoot, PxeOptions, write_pxe

_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_libc.strverscmp.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
_libc.strverscmp.restype = ctypes.c_int


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1", "2", -1),
        ("10", "9", 1),
        ("2", "2", 0),
        ("000", "00", -1),
        ("00", "01", -1),
        ("01", "010", -1),
        ("010", "09", -1),
        ("09", "0", -1),
        ("9", "10", -1),
        ("0a", "0", 1),
        ("ostree-10-fedora.conf", "ostree-9-fedora.conf", 1),
    ],
)
def test_strverscmp_examples(a: str, b: str, expected: int) -> None:
    assert _sign(strverscmp(a, b)) == expected


@given(st.text(alphabet="0123a.-", max_size=8), st.text(alphabet="0123a.-", max_size=8))
def test_strverscmp_agrees_with_glibc(a: str, b: str) -> None:
    assert _sign(strverscmp(a, b)) == _sign(_libc.strverscmp(a.encode(), b.encode()))


def test_split_kernel_args_keeps_quoted_blanks() -> None:
    assert split_kernel_args(' a  b="x y" c\t"d e" ') == ("a", 'b="x y"', "c", '"d e"')


def test_parse_entry_like_ostree() -> None:
    text = (
        "# comment\n"
        "title  Fedora Linux 40 (ostree:0)\n"
        "version 2\n"
        "options root=UUID=1 rw\n"
        "options quiet ostree=/ostree/boot.1/fedora/abc/0\r\n"
        "linux\t/ostree/fedora-abc/vmlinuz-6.8\n"
        "initrd /ostree/fedora-abc/initramfs-6.8.img\n"
        "initrd /ostree/initramfs-overlays/x.img\n"
        " indented ignored\n"
        "novalue\n"
    )
    entry = parse_entry(text, "/boot/loader.1/entries/ostree-2-fedora.conf")
    assert entry.title == "Fedora Linux 40 (ostree:0)"
    assert entry.version == "2"
    assert entry.linux == "/ostree/fedora-abc/vmlinuz-6.8"
    assert entry.initrd == ("/ostree/fedora-abc/initramfs-6.8.img", "/ostree/initramfs-overlays/x.img")
    assert entry.options == ("root=UUID=1", "rw", "quiet", "ostree=/ostree/boot.1/fedora/abc/0")
    assert entry.ostree_arg == "/ostree/boot.1/fedora/abc/0"
    assert entry.filename == "ostree-2-fedora.conf"
    assert "novalue" not in entry.fields and "indented" not in entry.fields


def test_boot_order_is_version_descending_then_name() -> None:
    entries = [
        parse_entry("version 9\n", "/e/ostree-9-a.conf"),
        parse_entry("", "/e/no-version.conf"),
        parse_entry("version 10\n", "/e/ostree-10-a.conf"),
        parse_entry("version 1\n", "/e/b.conf"),
        parse_entry("version 1\n", "/e/c.conf"),
    ]
    order = [e.filename for e in sort_entries(entries)]
    assert order == ["ostree-10-a.conf", "ostree-9-a.conf", "c.conf", "b.conf", "no-version.conf"]


def _mk(base: Path, *dirs: str) -> GuestTree:
    for d in dirs:
        (base / d).mkdir(parents=True, exist_ok=True)
    return GuestTree(HostFS(base))


def test_find_loader_follows_the_link(fs: object) -> None:
    base = Path("/b")
    t = _mk(base, "boot/loader.0/entries", "boot/loader.1/entries")
    os.symlink("loader.1", base / "boot/loader")
    loader, warnings = find_loader(t)
    assert loader is not None and (loader.path, loader.bootversion, loader.link) == ("/boot/loader.1", 1, True)
    assert loader.entries == "/boot/loader.1/entries" and warnings == []


def test_find_loader_plain_directory_and_bare_loader_n(fs: object) -> None:
    loader, _ = find_loader(_mk(Path("/p"), "boot/loader/entries"))
    assert loader is not None and (loader.path, loader.bootversion, loader.link) == ("/boot/loader", None, False)
    loader, warnings = find_loader(_mk(Path("/q"), "boot/loader.1/entries"))
    assert loader is not None and loader.bootversion == 1 and warnings == []
    loader, warnings = find_loader(_mk(Path("/r"), "boot/loader.0", "boot/loader.1"))
    assert loader is not None and loader.bootversion == 0 and "as ostree does" in warnings[0]
    assert find_loader(_mk(Path("/s"), "boot"))[0] is None


def test_find_loader_dangling_or_odd_link(fs: object) -> None:
    base = Path("/d")
    t = _mk(base, "boot/weird/entries")
    os.symlink("loader.7", base / "boot/loader")
    loader, warnings = find_loader(t)
    assert loader is None and "dangling" in warnings[0]
    os.remove(base / "boot/loader")
    os.symlink("weird", base / "boot/loader")
    loader, warnings = find_loader(t)
    assert loader is not None and loader.bootversion is None and "loader.0 or loader.1" in warnings[0]


def test_read_entries_skips_symlinks_non_conf_and_oversized(fs: object) -> None:
    base = Path("/e")
    t = _mk(base, "boot/loader.0/entries")
    entries = base / "boot/loader.0/entries"
    (entries / "ostree-1-a.conf").write_text("version 1\n")
    (entries / "ostree-2-a.conf").write_text("version 2\n")
    (entries / "README").write_text("not an entry")
    (entries / "huge.conf").write_text("x" * (70 * 1024))
    Path("/etc").mkdir()
    Path("/etc/passwd.conf").write_text("version 99\n")
    os.symlink("/etc/passwd.conf", entries / "evil.conf")
    os.symlink("loader.0", base / "boot/loader")
    loader, _ = find_loader(t)
    assert loader is not None
    found, warnings = read_entries(t, loader)
    assert [e.filename for e in found] == ["ostree-2-a.conf", "ostree-1-a.conf"]
    assert any("evil.conf is not a regular file" in w for w in warnings)
    assert any("huge.conf" in w and "more than" in w for w in warnings)


def test_split_kernel_args_on_every_blank_the_kernel_knows() -> None:
    assert split_kernel_args('a\vb\fc\rd e="f\vg"') == ("a", "b", "c", "d", 'e="f\vg"')


def test_hostile_options_reach_no_configuration(tmp_path: Path) -> None:
    """An entry's options go to the live command line only through bootsyntax: what cannot be
    written safely stops the build with InvalidImage (or is left out with --no-image-kargs)."""
    text = (
        "title Evil\n"
        'options quiet x="1 && chain http://elsewhere/" ostree=/ostree/boot.1/os/abc/0\n'
        "linux /ostree/os-abc/vmlinuz-6.1\n"
    )
    entry = parse_entry(text, "/boot/loader.1/entries/ostree-1-os.conf")
    assert entry.options == ("quiet", 'x="1 && chain http://elsewhere/"', "ostree=/ostree/boot.1/os/abc/0")
    boot = LiveBoot(
        kernel="vmlinuz-6.1", initramfs="initramfs-6.1.img", kver="6.1", title=entry.title or "",
        ostree_arg=entry.ostree_arg, image_args=entry.options,
    )  # fmt: skip
    with pytest.raises(InvalidImage, match=r"""^the image's kernel argument 'x="1 && chain http://elsewhere/"'"""):
        write_pxe(tmp_path, boot, PxeOptions(url="http://h"))
    result = write_pxe(tmp_path, boot, PxeOptions(url="http://h", keep_image_args=False))
    assert "&&" not in (tmp_path / "boot.ipxe").read_text() and "quiet" not in result.kernel_args


def test_the_title_is_printable() -> None:
    entry = parse_entry("title Evil\x1b[2J\x07 OS\u202e\n", "/e/x.conf")
    assert entry.title == "Evil[2J OS"
