"""The writer's entry-by-entry API: streams, callbacks, and the pipeline's single file."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.squashfs.mksquashfs import mksquashfs_file
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.reader import SquashfsReader
from liveimg.squashfs.writer import SquashfsWriter, pack_file
from tests import support


def test_entries_from_streams_callbacks_and_devices(tmp_path: Path) -> None:
    support.need("unsquashfs")
    image = tmp_path / "o.sqfs"
    blob = os.urandom(50_000)

    def read_at(offset: int, length: int) -> bytes | None:
        return None if offset < 8192 else bytes(range(256)) * (length // 256) + bytes(length % 256)

    with SquashfsWriter(image, SquashfsOptions(comp="gzip", block_size=4096, mkfs_time=0)) as w:
        w.add_directory("", mode=0o755, mtime=10)
        w.add_file("etc/blob", io.BytesIO(blob), size=len(blob), mode=0o600, uid=5, gid=6, mtime=20)
        w.add_file("etc/cb", read_at, size=20_000, mtime=30)
        w.add_symlink("etc/link", "blob", mtime=40)
        w.add_device("dev/null", "c", 1, 3, mode=0o666, mtime=50)
        w.add_fifo("run/fifo", mtime=60)
        w.add_socket("run/sock", mtime=70)
        w.add_hardlink("etc/blob2", "etc/blob")
        w.add_directory("etc", mode=0o750, mtime=80)  # sets the attributes of a parent made implicitly
    lines = {" ".join(line.split()) for line in runner.run(["unsquashfs", "-lln", image]).stdout.splitlines()}
    assert "drwxr-x--- 0/0 62 1970-01-01 00:01 squashfs-root/etc" in lines
    assert "-rw------- 5/6 50000 1970-01-01 00:00 squashfs-root/etc/blob" in lines
    assert "-rw------- 5/6 50000 1970-01-01 00:00 squashfs-root/etc/blob2" in lines
    assert "crw-rw-rw- 0/0 1, 3 1970-01-01 00:00 squashfs-root/dev/null" in lines
    assert "lrwxrwxrwx 0/0 4 1970-01-01 00:00 squashfs-root/etc/link -> blob" in lines
    assert "prw-r--r-- 0/0 0 1970-01-01 00:01 squashfs-root/run/fifo" in lines
    with SquashfsReader(image) as r:
        blob_inode = r.lookup("etc/blob")
        assert r.read_file(blob_inode) == blob  # type: ignore[arg-type]
        assert blob_inode.nlink_value == 2
        assert blob_inode.inode_number == r.lookup("etc/blob2").inode_number
        cb = r.read_file(r.lookup("etc/cb"))  # type: ignore[arg-type]
        assert cb[:8192] == bytes(8192) and cb[8192:8448] == bytes(range(256))


def test_pack_file_matches_mksquashfs_file(tmp_path: Path) -> None:
    """The pipeline's case: one sparse file as LiveOS/rootfs.img, no staging copy."""
    support.need("mksquashfs", "unsquashfs", "sqfsdiff")
    img = tmp_path / "rootfs.img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
        for off in (0, 1 << 20, 100 << 20, (256 << 20) - 5000):
            f.seek(off)
            f.write(os.urandom(3000) + b"text " * 500)
    os.utime(img, (1_650_000_000, 1_650_000_000))
    ours, theirs = tmp_path / "ours.sqfs", tmp_path / "theirs.sqfs"
    opts = SquashfsOptions(comp="xz", Xbcj=("x86",), mkfs_time=1)
    pack_file(img, ours, "LiveOS/rootfs.img", opts)
    mksquashfs_file(img, theirs, "LiveOS/rootfs.img", opts)
    assert runner.run(["unsquashfs", "-lln", ours]).stdout == runner.run(["unsquashfs", "-lln", theirs]).stdout
    runner.run(["sqfsdiff", "--timestamps", "--old", theirs, "--new", ours])
    assert ours.stat().st_size <= theirs.stat().st_size * 1.005
    with SquashfsReader(ours) as r:
        got = hashlib.sha256(b"".join(r.iter_file(r.lookup("LiveOS/rootfs.img")))).digest()  # type: ignore[arg-type]
    assert got == hashlib.sha256(img.read_bytes()).digest()


def test_pack_file_clamps_times_to_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A freshly built rootfs.img is newer than SOURCE_DATE_EPOCH: both writers clamp, neither touches the file."""
    support.need("mksquashfs", "unsquashfs")
    img = tmp_path / "rootfs.img"
    img.write_bytes(b"data" * 1000)
    os.utime(img, (1_800_000_000, 1_800_000_000))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ours, theirs = tmp_path / "ours.sqfs", tmp_path / "theirs.sqfs"
    pack_file(img, ours, "LiveOS/rootfs.img", SquashfsOptions(comp="gzip"))
    mksquashfs_file(img, theirs, "LiveOS/rootfs.img", SquashfsOptions(comp="gzip"))
    for image in (ours, theirs):
        lines = runner.run(["unsquashfs", "-lln", image], env={"TZ": "UTC"}).stdout.splitlines()
        assert all("2023-11-14 22:13" in line for line in lines), lines
    assert img.stat().st_mtime == 1_800_000_000
    os.utime(img, (1_600_000_000, 1_600_000_000))  # older than the epoch: kept
    pack_file(img, ours, "LiveOS/rootfs.img", SquashfsOptions(comp="gzip"))
    assert "2020-09-13 12:26" in runner.run(["unsquashfs", "-lln", ours], env={"TZ": "UTC"}).stdout
