"""Packing a directory: what the scan reads, what it leaves out, the times it stores.

Each hazard is made real on disk (the image inside its source, a FIFO, a socket, a tree
changed under the scan, xattrs the kernel refuses to list) and the result is read back with
squashfs-tools' unsquashfs, squashfs-tools-ng's sqfsdiff and dissect.squashfs.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import HostError, InvalidImage
from liveimg.progress import Event, Progress
from liveimg.squashfs.mksquashfs import mksquashfs
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.reader import SquashfsReader
from liveimg.squashfs.writer import SquashfsWriter, pack
from tests import support
from tests.squashfs.helpers import listing

FAST = SquashfsOptions(comp="lz4", block_size=4096, mkfs_time=0)
EPOCH = 1_700_000_000  # 2023-11-14 22:13:20 UTC


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# --- the output inside the source --------------------------------------------------------


def test_image_written_inside_its_source_is_left_out(tmp_path: Path) -> None:
    """Neither the temporary file being written nor the previous image at dest is packed."""
    support.need("unsquashfs", "mksquashfs")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"content " * 5000)
    dest = src / "o.sqfs"
    pack(src, dest, FAST)
    assert sorted(listing(dest)) == ["", "d", "d/f"]
    # Again, the previous image now in the tree, and dest spelt another way (the same directory).
    pack(src, src / "d" / ".." / "o.sqfs", FAST)
    assert sorted(listing(dest)) == ["", "d", "d/f"]
    assert _leftovers(src) == []
    # The mksquashfs backend leaves out its own output, and the previous image too.
    mksquashfs(src, dest, FAST)
    assert sorted(listing(dest)) == ["", "d", "d/f"]


# --- times ---------------------------------------------------------------------------------


def _tree_with_times(src: Path) -> None:
    (src / "new_dir").mkdir(parents=True)
    (src / "new_dir" / "new").write_bytes(b"new")
    (src / "old").write_bytes(b"old")
    (src / "link").symlink_to("old")
    os.utime(src / "old", (1_600_000_000, 1_600_000_000))
    os.utime(src / "new_dir" / "new", (1_800_000_000, 1_800_000_000))
    os.utime(src / "link", (1_800_000_000, 1_800_000_000), follow_symlinks=False)
    os.utime(src / "new_dir", (1_800_000_000, 1_800_000_000))
    os.utime(src, (1_800_000_000, 1_800_000_000))


def test_source_date_epoch_clamps_every_inode_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Later times become SOURCE_DATE_EPOCH, earlier ones stay: as mksquashfs (4.4+), and as pack_file."""
    support.need("unsquashfs", "mksquashfs", "sqfsdiff")
    src = tmp_path / "src"
    _tree_with_times(src)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    ours, theirs = tmp_path / "ours.sqfs", tmp_path / "theirs.sqfs"
    pack(src, ours, SquashfsOptions(comp="gzip"))
    mksquashfs(src, theirs, SquashfsOptions(comp="gzip"))
    entries = listing(ours)
    assert entries == listing(theirs)
    for path in ("", "new_dir", "new_dir/new", "link"):
        assert entries[path].endswith("2023-11-14 22:13"), (path, entries[path])
    assert entries["old"].endswith("2020-09-13 12:26")
    runner.run(["sqfsdiff", "--timestamps", "--old", theirs, "--new", ours])
    for image in (ours, theirs):
        with SquashfsReader(image) as r:
            assert r.sb.mkfs_time == EPOCH
    assert (src / "new_dir" / "new").stat().st_mtime == 1_800_000_000  # the source is not touched


def test_times_outside_32_bits_are_clamped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before 1970 -> 1970, after 2106 -> 2106-02-07 06:28:15, each named in a warning; never an abort."""
    support.need("unsquashfs")
    from dissect.squashfs import SquashFS

    src = tmp_path / "src"
    src.mkdir()
    for name, when in (("before_1970", -5), ("after_2106", 5_000_000_000), ("fine", 1_600_000_000)):
        (src / name).write_bytes(name.encode())
        os.utime(src / name, (when, when))
    image = tmp_path / "o.sqfs"
    with caplog.at_level(logging.WARNING, logger="liveimg.squashfs.writer"):
        pack(src, image, FAST)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "after_2106: modification time 5000000000 is outside squashfs's range (1970 to 2106), stored as 4294967295",
        "before_1970: modification time -5 is outside squashfs's range (1970 to 2106), stored as 0",
    ]
    entries = listing(image)
    assert entries["before_1970"].endswith("1970-01-01 00:00")
    assert entries["after_2106"].endswith("2106-02-07 06:28")
    with open(image, "rb") as f:
        fs = SquashFS(f)
        assert fs.get("before_1970").header.mtime == 0
        assert fs.get("after_2106").header.mtime == (1 << 32) - 1
        assert fs.get("fine").header.mtime == 1_600_000_000


# --- special files and changes under the scan ----------------------------------------------


@pytest.mark.timeout(60)  # an open FIFO would block for ever
def test_fifo_socket_and_device_are_recorded_not_opened(tmp_path: Path) -> None:
    support.need("unsquashfs")
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(src / "sock"))
    if os.geteuid() == 0:
        os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chmod(src / "null", 0o666)  # past the umask
    (src / "file").write_bytes(b"x")
    image = tmp_path / "o.sqfs"
    pack(src, image, FAST)
    entries = listing(image)
    assert entries["fifo"].startswith("prw-r--r-- 0/0 0")
    assert entries["sock"].startswith("srwx")
    if os.geteuid() == 0:
        assert entries["null"].startswith("crw-rw-rw- 0/0 1, 3")


@pytest.mark.timeout(20)
def test_add_file_refuses_a_fifo_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidImage, match=r"fifo: not a regular file$"):
        with SquashfsWriter(out / "o.sqfs", FAST) as w:
            w.add_file("f", fifo)
    assert list(out.iterdir()) == []


def _swap_during_packing(victim: Path, replace: object) -> Progress:
    """A progress sink that, at the first bytes packed, puts something else in ``victim``'s place."""

    def sink(event: Event) -> None:
        if event.event == "progress" and (event.done or 0) > 0 and not victim.is_symlink() and victim.exists():
            if victim.is_dir():
                victim.rename(victim.with_name(victim.name + ".moved"))
            else:
                victim.unlink()
            replace()  # type: ignore[operator]

    return Progress(sink, rate=1e9)


@pytest.mark.timeout(60)
def test_file_swapped_for_a_fifo_during_the_scan(tmp_path: Path) -> None:
    """The lstat said "file"; a FIFO is there at the open: refused at once, not waited on."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_big").write_bytes(os.urandom(400_000))
    victim = src / "z_victim"
    victim.write_bytes(b"regular at first")
    out = tmp_path / "out"
    out.mkdir()
    progress = _swap_during_packing(victim, lambda: os.mkfifo(victim))
    with pytest.raises(InvalidImage, match=r"z_victim: changed while being packed \(no longer a regular"):
        pack(src, out / "o.sqfs", FAST, progress)
    assert stat.S_ISFIFO(victim.lstat().st_mode)
    assert list(out.iterdir()) == []


def test_directory_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    """A directory turns into a symlink to outside the tree after its lstat: an error, nothing outside is read."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "inside").write_bytes(b"inside")
    (src / "a_big").write_bytes(os.urandom(400_000))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"OUTSIDE THE TREE")
    out = tmp_path / "out"
    out.mkdir()
    victim = src / "sub"
    progress = _swap_during_packing(victim, lambda: victim.symlink_to("../outside"))
    with pytest.raises(InvalidImage, match=r"src/sub: changed while being packed \(no longer a directory\)$"):
        pack(src, out / "o.sqfs", FAST, progress)
    assert victim.is_symlink()
    assert list(out.iterdir()) == []


# --- extended attributes -----------------------------------------------------------------


@pytest.fixture
def tmpfs_dir() -> Iterator[Path]:
    """A directory on tmpfs (/dev/shm): it takes user xattrs, as many as we like (Linux 6.6+)."""
    path = Path(tempfile.mkdtemp(prefix="liveimg-test-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unlistable_xattrs_fail_the_build(tmpfs_dir: Path, tmp_path: Path) -> None:
    """A real listxattr failure: names over XATTR_LIST_MAX (64 KiB) make it E2BIG, no mock."""
    support.need("mksquashfs")
    src = tmpfs_dir / "src"
    src.mkdir()
    many = src / "many"
    many.write_bytes(b"x")
    for i in range(300):
        os.setxattr(many, f"user.{i:03d}{'n' * 240}", b"v")
    with pytest.raises(OSError, match="Argument list too long"):
        os.listxattr(many)
    image = tmp_path / "o.sqfs"
    with pytest.raises(HostError) as caught:
        pack(src, image, FAST)
    assert str(caught.value) == (
        f"cannot read the extended attributes of {many}: Argument list too long (--no-xattrs packs without any)"
    )
    assert not image.exists() and _leftovers(tmp_path) == []
    # What mksquashfs does instead: warn, and pack the file without its attributes.
    result = runner.run(["mksquashfs", src, tmp_path / "theirs.sqfs", "-noappend", "-no-progress"])
    assert f"llistxattr for {many} failed in read_attrs, because Argument list too long" in result.stderr
    # Leaving them all out is a choice the caller can make.
    pack(src, image, FAST.replace(no_xattrs=True))
    assert image.exists()
