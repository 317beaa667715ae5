"""Our reader on images made by mksquashfs (one per compressor), and on bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import ImageNotFound, InvalidImage
from liveimg.squashfs.inode import DirInode, RegInode, SymlinkInode, decode_dev
from liveimg.squashfs.reader import SquashfsReader, describe
from tests import support


@pytest.mark.parametrize(
    "args",
    [["-comp", "gzip"], ["-comp", "xz", "-Xbcj", "x86", "-Xdict-size", "50%"], ["-comp", "zstd",
     "-Xcompression-level", "3"], ["-comp", "lz4", "-Xhc"], ["-comp", "gzip", "-b", "4096", "-always-use-fragments"]],
)  # fmt: skip
def test_reads_mksquashfs_images(tmp_path: Path, args: list[str]) -> None:
    support.need("mksquashfs")
    support.need_root()
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    files = {"d/a": b"a" * 10, "big": os.urandom(70_000) + b"z" * 70_000, "empty": b""}
    for name, data in files.items():
        (src / name).write_bytes(data)
    (src / "d" / "link").symlink_to("../big")
    os.mknod(src / "dev", 0o20644, os.makedev(4, 5))
    os.setxattr(src / "big", "user.k", b"v")
    image = tmp_path / "ref.sqfs"
    runner.run(["mksquashfs", src, image, "-noappend", "-quiet", "-no-progress", *args])
    with SquashfsReader(image) as r:
        paths = {p: i for p, i in r.walk()}
        assert set(paths) == {b"", b"big", b"d", b"d/a", b"d/link", b"dev", b"empty"}
        for name, data in files.items():
            inode = paths[name.encode()]
            assert isinstance(inode, RegInode)
            assert r.read_file(inode) == data
        link = paths[b"d/link"]
        assert isinstance(link, SymlinkInode) and link.target == b"../big"
        assert decode_dev(paths[b"dev"].rdev) == (4, 5)  # type: ignore[attr-defined]
        assert r.inode_xattrs(paths[b"big"]) == {b"user.k": b"v"}
        assert isinstance(paths[b""], DirInode)
    info = describe(image)
    assert info["entries"] == {"dir": 2, "reg": 3, "symlink": 1, "chrdev": 1}


def test_rejects_what_is_not_squashfs(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(InvalidImage, match="not a squashfs image: magic 0x00000000"):
        SquashfsReader(bad)
    with pytest.raises(ImageNotFound, match="cannot open squashfs image"):
        SquashfsReader(tmp_path / "missing")
