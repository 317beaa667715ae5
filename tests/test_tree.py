"""liveimg.tree: the entry model -- kinds from modes, the host scan as a source, sources agreeing."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import stat
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import InvalidImage
from liveimg.squashfs.tar import tar_entries
from liveimg.tree import ApplianceTree, Entry, HardLinks, HostScan, HostTree, Kind, OpenFile, file_kind, kind_of
from tests import support


def test_every_file_type_has_its_kind_and_others_are_refused() -> None:
    types = {stat.S_IFDIR: Kind.DIR, stat.S_IFREG: Kind.FILE, stat.S_IFLNK: Kind.SYMLINK, stat.S_IFCHR: Kind.CHARDEV,
             stat.S_IFBLK: Kind.BLOCKDEV, stat.S_IFIFO: Kind.FIFO, stat.S_IFSOCK: Kind.SOCKET}  # fmt: skip
    for bits, kind in types.items():
        assert kind_of(bits | 0o7777, "x") is kind is file_kind(bits | 0o644)
    assert file_kind(0o160000 | 0o644) is None
    with pytest.raises(InvalidImage, match=r"^weird: unsupported file type 0o160000$"):
        kind_of(0o160000 | 0o644, "weird")


def test_an_entry_takes_its_kind_from_its_mode() -> None:
    entry = Entry("etc/passwd", stat.S_IFREG | 0o4755)
    assert entry.kind is Kind.FILE and entry.permissions == 0o4755
    assert dataclasses.replace(entry, mode=stat.S_IFLNK | 0o777).kind is Kind.SYMLINK
    with pytest.raises(InvalidImage, match=r"^'bad\\nname': unsupported file type 0o160000$"):
        Entry("bad\nname", 0o160000)  # a guest name is quoted in the message


def test_hard_links_are_later_names_of_an_inode() -> None:
    links = HardLinks()
    assert links.first_name((1, 5), 1, "single") is None
    assert links.first_name((1, 7), 2, "a") is None
    assert links.first_name((1, 7), 2, "b") == "a"
    assert links.first_name((2, 7), 2, "c") is None  # another device


def _tree(src: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    (src / "b_file").write_bytes(b"bytes of b")
    os.link(src / "b_file", src / "d" / "a_link")
    (src / "c_sym").symlink_to("b_file")
    (src / "d" / "sub" / "deep").write_bytes(b"deep")
    (src / "e_dir").mkdir()
    os.mkfifo(src / "f_fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.fspath(src / "g_sock"))


def test_the_host_scan_gives_entries_in_the_writers_order(tmp_path: Path) -> None:
    """A directory, its other entries by name, then its subdirectories; later names as hard links."""
    src = tmp_path / "src"
    _tree(src)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    seen = []
    try:
        for entry in HostScan(os.fsencode(src)).entries(fd):
            if entry.kind is Kind.FILE and entry.hardlink is None:
                assert isinstance(entry.data, OpenFile)
                assert os.pread(entry.data.fd, 100, 0) == (src / entry.path).read_bytes()  # open while current
            else:
                assert entry.data is None
            seen.append((entry.path, entry.kind, entry.hardlink, entry.link_target))
    finally:
        os.close(fd)
    assert seen == [
        ("", Kind.DIR, None, None),
        ("b_file", Kind.FILE, None, None),
        ("c_sym", Kind.SYMLINK, None, "b_file"),
        ("f_fifo", Kind.FIFO, None, None),
        ("g_sock", Kind.SOCKET, None, None),
        ("d", Kind.DIR, None, None),
        ("d/a_link", Kind.FILE, "b_file", None),
        ("d/sub", Kind.DIR, None, None),
        ("d/sub/deep", Kind.FILE, None, None),
        ("e_dir", Kind.DIR, None, None),
    ]


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_scan_left_early_closes_what_it_held_open(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = _open_fds()
        entries = HostScan(os.fsencode(src)).entries(fd)
        for entry in entries:
            if entry.path == "d/sub/deep":  # two directories and the file open now
                assert len(_open_fds() - before) >= 3
                break
        entries.close()  # type: ignore[attr-defined]
        assert _open_fds() == before
    finally:
        os.close(fd)


def test_host_tree_lists_without_opening_and_fetches_on_request(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    entries = {e.path: e for e in HostTree(src).entries()}
    assert all(e.data is None for e in entries.values())
    assert entries["d/a_link"].hardlink == "b_file" and entries["b_file"].size == len(b"bytes of b")
    HostTree(src).fetch(entries["d/sub/deep"], tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"deep"


def test_a_host_directory_and_its_tar_stream_give_the_same_entries(tmp_path: Path) -> None:
    """Two sources of the one model: GNU tar of a tree (what the appliance's tar-out streams) and the tree."""
    support.need("tar")
    src = tmp_path / "src"
    _tree(src)
    (src / "g_sock").unlink()  # tar does not store sockets
    os.utime(src / "b_file", ns=(0, 1_700_000_000_123_456_789))
    archive = tmp_path / "tree.tar"
    runner.run(["tar", "--numeric-owner", "--sort=name", "-C", src, "-cf", "-", "."], stdout=archive)

    def comparable(e: Entry) -> tuple[object, ...]:
        return (e.kind, e.permissions, e.uid, e.gid, e.mtime_ns // 10**9, e.link_target, e.hardlink)

    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        host = {e.path: comparable(e) for e in HostScan(os.fsencode(src)).entries(fd)}
    finally:
        os.close(fd)
    from_tar = {}
    for entry in tar_entries(io.BytesIO(archive.read_bytes())):
        if entry.kind is Kind.FILE and entry.hardlink is None:
            assert entry.data is not None and entry.data.read() == (src / entry.path).read_bytes()  # type: ignore[union-attr]
        from_tar[entry.path] = comparable(entry)
    # tar names the first of two links by its own walk ("./b_file" comes before "./d/a_link" sorted)
    assert from_tar == host


class ListingOnly:
    """A guestfs handle that only lists: ``find0`` writes the given names; nothing else is asked."""

    def __init__(self, names: list[bytes]) -> None:
        self.names = names

    def find0(self, top: str, out: str) -> None:
        Path(out).write_bytes(b"\0".join(self.names) + b"\0")


@pytest.mark.parametrize("bad", [b"vmlinuz-\xff", b"grub2/\xc3(", b"efi/\xed\xa0\x80"])
def test_a_name_libguestfs_cannot_carry_is_refused_as_the_images_fault(tmp_path: Path, bad: bytes) -> None:
    tree = ApplianceTree(ListingOnly([b"loader", b"loader/entries", bad]), "/boot", tmp_path)
    with pytest.raises(InvalidImage) as excinfo:
        tree.entries()
    shown = bad.decode("ascii", "backslashreplace")  # vmlinuz-\xff: the bytes, readable
    assert str(excinfo.value) == (
        f"/boot: the file name '{shown}' is not UTF-8, which libguestfs cannot read (rename it in the image)"
    )
    assert "\\x" in str(excinfo.value) and list(tmp_path.iterdir()) == []
