"""The mksquashfs wrapper for real: pack, then read back with unsquashfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import InvalidOptions, ToolError
from liveimg.squashfs.constants import SQUASHFS_COMPRESSED_BIT_BLOCK
from liveimg.squashfs.inode import RegInode
from liveimg.squashfs.mksquashfs import mksquashfs, mksquashfs_file
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.reader import SquashfsReader
from liveimg.squashfs.writer import pack_file
from tests import support


def test_pack_tree_and_read_back(tmp_path: Path) -> None:
    support.need("mksquashfs", "unsquashfs")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hostname").write_text("live\n")
    (src / "big").write_bytes(os.urandom(300_000))
    (src / "link").symlink_to("etc/hostname")
    dest = tmp_path / "out.sqfs"
    result = mksquashfs(src, dest, SquashfsOptions(comp="xz", Xbcj=("x86",), mkfs_time=1000, processors=1))
    assert result.size == dest.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    stat = runner.run(["unsquashfs", "-s", dest]).stdout
    assert "Compression xz" in stat
    assert "Filters selected: x86" in stat
    assert "Thu Jan  1 00:16:40 1970" in stat
    out = tmp_path / "x"
    runner.run(["unsquashfs", "-d", out, dest])
    assert (out / "etc" / "hostname").read_text() == "live\n"
    assert (out / "big").read_bytes() == (src / "big").read_bytes()
    assert os.readlink(out / "link") == "etc/hostname"


def test_pack_single_sparse_file(tmp_path: Path) -> None:
    support.need("mksquashfs", "unsquashfs")
    img = tmp_path / "rootfs.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
        f.seek(1 << 20)
        f.write(b"ext4 superblock, say" * 100)
    os.utime(img, (2000, 2000))
    dest = tmp_path / "live.sqfs"
    mksquashfs_file(img, dest, "LiveOS/rootfs.img", SquashfsOptions(comp="lz4", mkfs_time=0))
    listing = runner.run(["unsquashfs", "-lln", dest]).stdout.splitlines()
    assert listing[1].split()[:3] == ["drwxr-xr-x", "0/0", "27"] or listing[1].startswith("drwxr-xr-x")
    assert listing[1].endswith("squashfs-root/LiveOS")
    assert listing[2].startswith("-rw-")
    assert listing[2].split()[2] == str(64 << 20)
    assert listing[2].endswith("squashfs-root/LiveOS/rootfs.img")
    out = tmp_path / "x"
    runner.run(["unsquashfs", "-d", out, dest])
    assert (out / "LiveOS" / "rootfs.img").read_bytes() == img.read_bytes()
    # the staging directory is gone, the input untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.sqfs", "rootfs.img", "x"]
    assert img.stat().st_nlink == 1


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    with pytest.raises(InvalidOptions, match="is not a directory"):
        mksquashfs(tmp_path / "missing", tmp_path / "o.sqfs")
    # A mksquashfs that writes half an image and fails: the wrapper must remove it.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "mksquashfs"
    fake.write_text('#!/bin/sh\nprintf partial > "$2"\necho "FATAL ERROR: out of luck" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(ToolError, match="out of luck"):
        mksquashfs(src, tmp_path / "o.sqfs", SquashfsOptions(comp="gzip"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "src"]


def _xz_chains(path: Path, name: str) -> list[tuple[int, int]]:
    """(stored size, number of filters in its xz block header) of each data block of file ``name``."""
    with SquashfsReader(path) as r:
        inode = r.lookup(name)
        assert isinstance(inode, RegInode)
        pos, chains = inode.start_block, []
        for field in inode.block_sizes:
            size = field & ~SQUASHFS_COMPRESSED_BIT_BLOCK
            stored = r._pread(pos, size)
            # An uncompressed block (bit 24) has no xz header; a compressed one starts with the
            # 12-byte stream header, then the block header, whose second byte counts its filters.
            count = 0 if field & SQUASHFS_COMPRESSED_BIT_BLOCK else (stored[13] & 3) + 1
            chains.append((size, count))
            pos += size
        return chains


def test_exhaustive_bcj_blocks_equal_mksquashfs(tmp_path: Path) -> None:
    """bcj_mode="exhaustive" makes mksquashfs -Xbcj x86's choice for every block.

    The input mixes x86 code (the start of libc, where the heuristic's guess misses in some
    blocks), text and random bytes, in whole blocks so that no fragment is involved.  The
    blocks are not byte-identical: liblzma's one-call encoder that mksquashfs uses records the
    sizes in each xz block header, a few bytes more than Python's stream encoder.
    """
    support.need("mksquashfs")
    block = 131072
    libc = Path("/usr/lib/x86_64-linux-gnu/libc.so.6").resolve().read_bytes()[: 14 * block]
    text = (b"The squashfs directory table lists names in strcmp order. " * 5000)[: 2 * block]
    data = libc[: len(libc) // block * block] + text + os.urandom(block)
    img = tmp_path / "mixed.bin"
    img.write_bytes(data)
    for mode in ("heuristic", "exhaustive"):
        opts = SquashfsOptions(comp="xz", Xbcj=("x86",), bcj_mode=mode, mkfs_time=0, processors=2)
        pack_file(img, tmp_path / f"{mode}.sqfs", "f", options=opts)
        with SquashfsReader(tmp_path / f"{mode}.sqfs") as r:
            inode = r.lookup("f")
            assert isinstance(inode, RegInode)
            assert r.read_file(inode) == data
    mksquashfs_file(img, tmp_path / "mksquashfs.sqfs", "f", SquashfsOptions(comp="xz", Xbcj=("x86",), mkfs_time=0))
    heuristic, exhaustive, reference = (
        _xz_chains(tmp_path / f"{n}.sqfs", "f") for n in ("heuristic", "exhaustive", "mksquashfs")
    )
    assert [c for _, c in exhaustive] == [c for _, c in reference]
    assert all(0 <= m - e <= 16 for (e, _), (m, _) in zip(exhaustive, reference, strict=True))
    assert all(e <= h for (e, _), (h, _) in zip(exhaustive, heuristic, strict=True))
    assert sum(e for e, _ in exhaustive) <= sum(h for h, _ in heuristic)
