"""The host's ext reader (liveimg.extfs): what it reads from real mkfs.ext4 images, and what it refuses, fast."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.extfs import ExtFS, ExtRefused, ExtTree, probe_superblock
from liveimg.fsview import GuestTree
from tests.support import need


def make_fs(tmp_path: Path, *features: str) -> Path:
    need("mkfs.ext4", "debugfs")
    tree = tmp_path / "tree"
    (tree / "dir/sub").mkdir(parents=True)
    (tree / "dir/f").write_text("hello\n")
    (tree / "dir/big").write_bytes(os.urandom(300_000))
    os.link(tree / "dir/f", tree / "dir/f2")
    (tree / "link").symlink_to("dir/f")
    (tree / "long").symlink_to("x" * 200)
    (tree / "empty").write_bytes(b"")
    image = tmp_path / "fs.img"
    opts = ["-O", ",".join(features)] if features else []
    runner.run(["mkfs.ext4", "-q", "-F", "-b", "4096", *opts, "-O", "^metadata_csum", "-E", "root_owner=0:0",
                "-d", str(tree), str(image), "8M"])  # fmt: skip
    return image


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    image = make_fs(tmp_path)
    fd = os.open(image, os.O_RDONLY)
    try:
        yield image, fd
    finally:
        os.close(fd)


def ext(image: Path, fd: int) -> ExtFS:
    return ExtFS(fd, 0, image.stat().st_size, str(image))


def debugfs(image: Path, *commands: str) -> None:
    for command in commands:
        runner.run(["debugfs", "-w", "-R", command, str(image)])


def test_it_reads_what_mkfs_wrote(opened: tuple[Path, int], tmp_path: Path) -> None:
    image, fd = opened
    tree = GuestTree(ext(image, fd))
    assert tree.listdir("/dir") == ["big", "f", "f2", "sub"]
    assert tree.read_text("/link") == "hello\n" and tree.readlink("/link") == "dir/f"
    assert tree.readlink("/long") == "x" * 200
    assert tree.read_bytes("/dir/big", limit=1 << 20) == (tmp_path / "tree/dir/big").read_bytes()
    assert tree.read_bytes("/empty") == b"" and tree.is_dir("/dir/sub") and not tree.exists("/nothing")
    sb = probe_superblock(image.read_bytes()[:2048])
    assert sb is not None and sb.fstype == "ext4" and sb.label is None


def test_its_tree_source_has_every_entry_with_hard_links_and_contents(opened: tuple[Path, int], tmp_path: Path) -> None:
    image, fd = opened
    source = ExtTree(ext(image, fd))
    entries = {e.path: e for e in source.entries()}
    assert {"", "dir", "dir/f", "dir/f2", "dir/big", "dir/sub", "link", "long", "empty"} <= set(entries)
    assert entries["dir/f2"].hardlink == "dir/f" and entries["dir/f"].hardlink is None
    assert entries["link"].link_target == "dir/f" and entries["dir"].kind == "dir"
    host = os.stat(tmp_path / "tree/dir/big")
    assert (entries["dir/big"].mode, entries["dir/big"].size) == (host.st_mode, host.st_size)
    source.fetch(entries["dir/big"], tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "tree/dir/big").read_bytes()


def _inode(image: Path, path: str) -> int:
    out = runner.run(["debugfs", "-R", f"stat {path}", str(image)]).stdout
    return int(out.split("Inode:", 1)[1].split()[0])


def test_an_extent_block_pointing_at_itself_is_refused_at_once(opened: tuple[Path, int]) -> None:
    image, fd = opened
    block = image.stat().st_size // 4096 - 1  # the last block: free in a filesystem this small
    # i_block: an extent header of depth 1, one index entry -> block; that block: depth 1 again, -> itself
    debugfs(image, "sif /dir/big block[0] 0x0001f30a", "sif /dir/big block[1] 0x00010004",
            "sif /dir/big block[3] 0", f"sif /dir/big block[4] {block}", "sif /dir/big block[5] 0")  # fmt: skip
    with open(image, "r+b") as f:
        f.seek(block * 4096)
        f.write(struct.pack("<HHHHI", 0xF30A, 1, 340, 1, 0) + struct.pack("<IIHH", 0, block, 0, 0))
    started = time.monotonic()
    with pytest.raises(ExtRefused, match="depths disagree"):
        GuestTree(ext(image, fd)).read_bytes("/dir/big", limit=1 << 20)
    assert time.monotonic() - started < 5


def test_an_extent_past_the_filesystem_is_refused(opened: tuple[Path, int]) -> None:
    image, fd = opened
    debugfs(image, "sif /dir/f block[5] 0x7fffffff")  # the first extent's start (low 32 bits)
    with pytest.raises(ExtRefused, match="past the filesystem's end"):
        GuestTree(ext(image, fd)).read_text("/dir/f")


def test_a_huge_directory_and_a_long_symlink_are_refused(opened: tuple[Path, int]) -> None:
    image, fd = opened
    debugfs(image, "sif /dir size 0x10000000000", "sif /long size 100000")
    tree = GuestTree(ext(image, fd))
    with pytest.raises(ExtRefused, match="a directory of"):
        tree.listdir("/dir")
    with pytest.raises(ExtRefused, match="a symlink target of 100000 bytes"):
        tree.readlink("/long")


def test_a_journal_to_replay_and_unknown_features_are_refused(tmp_path: Path) -> None:
    image = make_fs(tmp_path)
    debugfs(image, "feature needs_recovery")
    fd = os.open(image, os.O_RDONLY)
    try:
        with pytest.raises(ExtRefused, match="journal needs recovery"):
            ext(image, fd)
    finally:
        os.close(fd)
    other = tmp_path / "other"
    other.mkdir()
    image = make_fs(other, "inline_data")
    fd = os.open(image, os.O_RDONLY)
    try:
        with pytest.raises(ExtRefused, match="incompatible features 0x8000"):
            ext(image, fd)
    finally:
        os.close(fd)


def test_garbage_is_no_superblock_and_nonsense_geometry_is_refused() -> None:
    assert probe_superblock(b"\0" * 2048) is None
    sb = bytearray(2048)
    struct.pack_into("<H", sb, 1024 + 56, 0xEF53)  # the magic alone: no inodes, no groups
    with pytest.raises(ExtRefused, match="geometry"):
        probe_superblock(bytes(sb))
