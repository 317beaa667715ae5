"""The rootfs stage's host side: sizes, debugfs commands, and the partition method on small images."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from liveimg import e2fs, rootfs, sparse
from liveimg import run as runner
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.rootfs import GiB, MiB, RootfsOptions, SizeMode
from liveimg.tree import Entry, HostTree
from tests.support import need, need_root


@pytest.mark.parametrize(
    ("text", "size"),
    [("4", 4 * GiB), ("1.5", int(1.5 * GiB)), ("512M", 512 * MiB), ("512MiB", 512 * MiB), ("2g", 2 * GiB),
     ("1T", 1024 * GiB), ("100k", 100 * 1024)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert rootfs.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "4X", "1.2.3G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidOptions):
        rootfs.parse_size(text)


def test_target_size_modes() -> None:
    needed = 1000 * MiB
    auto = rootfs.target_size(SizeMode.AUTO, needed=needed, requested=None, partition=0)
    assert auto == 1256 * MiB  # 20 % is less than the 256 MiB floor
    big = rootfs.target_size(SizeMode.AUTO, needed=10 * GiB, requested=None, partition=0)
    assert big == 12 * GiB
    assert rootfs.target_size(SizeMode.FIXED, needed=needed, requested=2 * GiB, partition=0) == 2 * GiB
    assert rootfs.target_size(SizeMode.KEEP, needed=needed, requested=None, partition=3 * GiB) == 3 * GiB


def test_fixed_size_too_small_says_how_much_is_needed() -> None:
    with pytest.raises(InvalidOptions) as excinfo:
        rootfs.target_size(SizeMode.FIXED, needed=int(2.5 * GiB), requested=GiB, partition=0)
    assert str(excinfo.value) == (
        "the rootfs size 1.00 GiB is too small: the content needs 2.50 GiB "
        "(use --live-rootfs-size 3 or more, or the automatic size)"
    )


def test_options_validate() -> None:
    with pytest.raises(InvalidOptions):
        RootfsOptions(size_mode=SizeMode.FIXED)
    with pytest.raises(InvalidOptions):
        RootfsOptions(size=GiB)
    with pytest.raises(InvalidOptions):
        RootfsOptions(label="x" * 17)


def _entry(path: str, kind: int, **kw: object) -> Entry:
    base: dict[str, object] = {
        "path": path,
        "mode": kind | 0o644,
        "atime_ns": 1,
        "mtime_ns": 2_000_000_005,
        "ctime_ns": 3,
    }
    base.update(kw)
    return Entry(**base)  # type: ignore[arg-type]


def test_tree_commands_order_links_and_quoting(tmp_path: Path) -> None:
    entries = [
        _entry("", stat.S_IFDIR, mode=stat.S_IFDIR | 0o555),
        _entry('a "b"', stat.S_IFDIR),
        _entry('a "b"/f', stat.S_IFREG, size=3, inode=(1, 10), nlink=2, xattrs=(("security.selinux", b"x_t\0"),)),
        _entry("g", stat.S_IFREG, size=3, inode=(1, 10), nlink=2, hardlink='a "b"/f'),
        _entry("l", stat.S_IFLNK, link_target="../x", xattrs=(("security.selinux", b"l_t\0"),)),
        _entry("null", stat.S_IFCHR, rdev=(1, 3)),
    ]
    cmds = rootfs.tree_commands(
        entries, "/boot", lambda e: tmp_path / "c", xattr_file=lambda v: tmp_path / "xa", extra_times=True
    )
    assert cmds[0] == 'mkdir "/boot/a ""b"""'
    assert f'write "{tmp_path}/c" "/boot/a ""b""/f"' in cmds
    assert 'ln "/boot/a ""b""/f" "/boot/g"' in cmds
    assert 'sif "/boot/a ""b""/f" links_count 2' in cmds
    assert f'ea_set -f "{tmp_path}/xa" "/boot/a ""b""/f" "security.selinux"' in cmds
    assert 'symlink "/boot/l" "../x"' in cmds
    assert cmds[cmds.index('cd "/boot"') : cmds.index('cd "/boot"') + 3] == ['cd "/boot"', 'mknod "null" c 1 3', "cd /"]
    assert 'sif "/boot/a ""b""/f" mtime @2' in cmds
    assert 'sif "/boot/a ""b""/f" mtime_extra 20' in cmds  # 5 ns << 2
    # the top directory's metadata comes last, after everything inside it
    assert cmds[-9] == 'sif "/boot" mode 040555'
    assert not any(c.startswith('write "') and '"/boot/g"' in c for c in cmds)
    assert not any(c.startswith("ea_set") and '"/boot/l"' in c for c in cmds)  # symlinks keep no xattrs


def test_debugfs_refuses_names_with_line_breaks() -> None:
    with pytest.raises(InvalidImage):
        e2fs.debugfs_quote("a\nb")


def test_sparse_copy_range(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(MiB)
        f.write(b"a" * 4096)
        f.seek(40 * MiB)
        f.write(b"b" * 8192)
    dest = tmp_path / "dest"
    done: list[int] = []
    copied = sparse.copy_range(src, 512 * 1024, 48 * MiB, dest, advance=done.append)
    assert copied <= 12 * MiB  # data extents only (the filesystem may round them up)
    assert sum(done) == 48 * MiB
    assert dest.stat().st_size == 48 * MiB
    assert sparse.allocated_bytes(dest) < 4 * MiB
    data = dest.read_bytes()
    assert data[MiB - 512 * 1024 : MiB - 512 * 1024 + 4096] == b"a" * 4096
    assert data[40 * MiB - 512 * 1024 :][:8192] == b"b" * 8192
    assert data.count(0) == 48 * MiB - 4096 - 8192


def _make_fs(tmp_path: Path, name: str, source: Path, size: str, *extra: str) -> Path:
    image = tmp_path / name
    runner.run(["mkfs.ext4", "-q", "-F", "-b", "4096", *extra, "-d", source, image, size])
    return image


def _disk(tmp_path: Path, root: Path, boot: Path | None = None) -> tuple[Path, int, int]:
    """A GPT disk (boot, root) built from directories without mounting; returns (disk, root offset, length)."""
    disk = tmp_path / "disk.raw"
    root_fs = _make_fs(tmp_path, "root.ext4", root, "64M", "-L", "root")
    parts = []
    if boot is not None:
        parts.append(_make_fs(tmp_path, "boot.ext4", boot, "16M", "-L", "boot"))
    parts.append(root_fs)
    with open(disk, "wb") as f:
        f.truncate(MiB + sum(p.stat().st_size for p in parts) + MiB)
    table = "label: gpt\n" + "".join(f"size={p.stat().st_size // 512}\n" for p in parts)
    runner.run(["sfdisk", "-q", disk], input=table.encode())
    offset = MiB
    for part in parts:
        runner.run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={offset // MiB}", "conv=notrunc,sparse"])
        root_offset, offset = offset, offset + part.stat().st_size
    return disk, root_offset, root_fs.stat().st_size


def test_partition_method_merges_boot(tmp_path: Path) -> None:
    need("mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "sfdisk")
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("ID=test\n")
    boot = tmp_path / "bootdir"
    (boot / "loader" / "entries").mkdir(parents=True)
    (boot / "loader" / "entries" / "a.conf").write_text("title A\n")
    (boot / "vmlinuz-1").write_bytes(os.urandom(100_000))
    disk, offset, length = _disk(tmp_path, root, boot)
    before = disk.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    dest = tmp_path / "rootfs.img"
    result = rootfs.from_partition(
        image=disk, image_format="raw", offset=offset, length=length, boot=HostTree(boot), boot_limit=16 * MiB,
        dest=dest, options=RootfsOptions(), workdir=work, what="test root",
    )  # fmt: skip
    assert disk.read_bytes() == before
    assert result.path == dest and result.boot_merged
    assert result.label == "LiveOS"
    sb = e2fs.superblock(dest)
    assert sb.block_size == 4096 and sb.reserved_blocks == 0
    assert result.size == dest.stat().st_size == sb.size
    assert result.size >= result.content + 256 * MiB  # auto headroom
    assert result.allocated < 40 * MiB  # sparse
    assert e2fs.fsck(dest, repair=False).clean
    out = runner.run(["debugfs", "-R", "cat /boot/loader/entries/a.conf", dest]).stdout
    assert out == "title A\n"
    dumped = tmp_path / "vmlinuz"
    runner.run(["debugfs", "-R", f"dump /boot/vmlinuz-1 {dumped}", dest])
    assert dumped.read_bytes() == (boot / "vmlinuz-1").read_bytes()
    assert not list(tmp_path.glob(".rootfs.img.*"))


def test_a_root_mounted_since_its_last_check_is_resized(tmp_path: Path) -> None:
    """Every booted root was mounted after its last full check: resize2fs alone would refuse it."""
    need("mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "sfdisk", "tune2fs")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text("ID=test\n")
    disk, offset, length = _disk(tmp_path, root)
    # Stamp the root partition in place: last checked in 2001, last mounted in 2024.
    part = tmp_path / "part.ext4"
    runner.run(["dd", f"if={disk}", f"of={part}", "bs=1M", f"skip={offset // MiB}", f"count={length // MiB}"])
    runner.run(["tune2fs", "-T", "20010101", part])
    runner.run(["debugfs", "-w", "-R", "ssv mtime 20240101", part])
    sb = runner.run(["dumpe2fs", "-h", part]).stdout
    assert "Last checked:" in sb and "2001" in sb and "2024" in sb
    runner.run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={offset // MiB}", "conv=notrunc"])
    work = tmp_path / "work"
    work.mkdir()
    result = rootfs.from_partition(
        image=disk, image_format="raw", offset=offset, length=length, boot=None, boot_limit=0,
        dest=tmp_path / "rootfs.img", options=RootfsOptions(), workdir=work, what="test root",
    )  # fmt: skip
    assert e2fs.fsck(result.path, repair=False).clean


def test_partition_method_fixed_and_keep(tmp_path: Path) -> None:
    need("mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "sfdisk")
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "data").write_bytes(os.urandom(3 * MiB))
    disk, offset, length = _disk(tmp_path, root)
    work = tmp_path / "work"
    work.mkdir()
    common = {"image": disk, "image_format": "raw", "offset": offset, "length": length, "boot": None,
              "boot_limit": None, "workdir": work, "what": "test root"}  # fmt: skip
    fixed = rootfs.from_partition(
        dest=tmp_path / "fixed.img", options=RootfsOptions(size_mode=SizeMode.FIXED, size=200 * MiB), **common
    )  # type: ignore[arg-type]
    assert fixed.size == 200 * MiB
    keep = rootfs.from_partition(dest=tmp_path / "keep.img", options=RootfsOptions(size_mode=SizeMode.KEEP), **common)  # type: ignore[arg-type]
    assert keep.size == length
    with pytest.raises(InvalidOptions, match="too small"):
        rootfs.from_partition(
            dest=tmp_path / "small.img", options=RootfsOptions(size_mode=SizeMode.FIXED, size=8 * MiB), **common
        )  # type: ignore[arg-type]
    assert not (tmp_path / "small.img").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_partition_method_from_qcow2(tmp_path: Path) -> None:
    need("mkfs.ext4", "qemu-img", "sfdisk")
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "hello").write_text("hello\n")
    disk, offset, length = _disk(tmp_path, root)
    qcow = tmp_path / "disk.qcow2"
    runner.run(["qemu-img", "convert", "-O", "qcow2", disk, qcow])
    work = tmp_path / "work"
    work.mkdir()
    result = rootfs.from_partition(
        image=qcow, image_format="qcow2", offset=offset, length=length, boot=None, boot_limit=None,
        dest=tmp_path / "r.img", options=RootfsOptions(), workdir=work, what="test root",
    )  # fmt: skip
    assert runner.run(["debugfs", "-R", "cat /hello", result.path]).stdout == "hello\n"


def test_source_with_errors_is_refused_unless_repair(tmp_path: Path) -> None:
    need("mkfs.ext4", "debugfs", "e2fsck", "sfdisk")
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "dir").mkdir()
    (root / "dir" / "f").write_text("x")
    disk, offset, length = _disk(tmp_path, root)
    # Break the copy's directory: point /dir's inode at a bogus link count and clear its blocks.
    part = tmp_path / "part.img"
    sparse.copy_range(disk, offset, length, part)
    runner.run(["debugfs", "-w", "-R", "sif /dir links_count 9", part])
    runner.run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={offset // MiB}", "conv=notrunc,sparse"])
    work = tmp_path / "work"
    work.mkdir()
    common = {"image": disk, "image_format": "raw", "offset": offset, "length": length, "boot": None,
              "boot_limit": None, "workdir": work, "what": "root filesystem of disk.raw"}  # fmt: skip
    with pytest.raises(InvalidImage) as excinfo:
        rootfs.from_partition(dest=tmp_path / "r.img", options=RootfsOptions(), **common)  # type: ignore[arg-type]
    assert str(excinfo.value).startswith("root filesystem of disk.raw has filesystem errors: ")
    assert "--repair-source" in str(excinfo.value)
    repaired = rootfs.from_partition(dest=tmp_path / "r.img", options=RootfsOptions(repair_source=True), **common)  # type: ignore[arg-type]
    assert e2fs.fsck(repaired.path, repair=False).clean


def test_metadata_survives(tmp_path: Path) -> None:
    """Owners, modes, setuid, xattrs, hard links, symlinks and devices written by debugfs (read back by debugfs)."""
    need_root()
    need("mkfs.ext4", "debugfs", "e2fsck", "sfdisk")
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    boot = tmp_path / "bootdir"
    boot.mkdir()
    (boot / "suid").write_text("s")
    os.chown(boot / "suid", 12, 34)  # before chmod: chown clears setuid
    os.chmod(boot / "suid", 0o4755)
    os.setxattr(boot / "suid", "security.selinux", b"system_u:object_r:boot_t:s0\0")
    os.setxattr(boot / "suid", "user.note", b"hello")
    os.link(boot / "suid", boot / "hard")
    os.symlink("suid", boot / "sym")
    os.mknod(boot / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mkfifo(boot / "fifo", 0o640)
    os.utime(boot / "suid", ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    disk, offset, length = _disk(tmp_path, root, boot)
    work = tmp_path / "work"
    work.mkdir()
    result = rootfs.from_partition(
        image=disk, image_format="raw", offset=offset, length=length, boot=HostTree(boot), boot_limit=None,
        dest=tmp_path / "r.img", options=RootfsOptions(), workdir=work, what="test root",
    )  # fmt: skip
    stat_out = runner.run(["debugfs", "-R", "stat /boot/suid", result.path]).stdout
    assert "Mode:  04755" in stat_out
    assert "User:    12   Group:    34" in stat_out
    assert "Links: 2" in stat_out
    assert "mtime: 0x5f5e1000:eb79a2c4" in stat_out  # 987654321 ns << 2
    assert 'security.selinux (28) = "system_u:object_r:boot_t:s0\\000"' in stat_out
    assert 'user.note (5) = "hello"' in stat_out
    listing = runner.run(["debugfs", "-R", "ls -l /boot", result.path]).stdout
    assert " 20600 " in listing  # the char device
    assert " 10640 " in listing  # the fifo
    assert runner.run(["debugfs", "-R", "stat /boot/sym", result.path]).stdout.count('Fast link dest: "suid"') == 1
    assert e2fs.fsck(result.path, repair=False).clean


def test_dump_file_copies_one_regular_file(tmp_path: Path) -> None:
    need("mkfs.ext4", "debugfs")
    src = tmp_path / "src"
    (src / "boot").mkdir(parents=True)
    (src / "boot/vmlinuz").write_bytes(b"kernel")
    (src / "boot/link").symlink_to("vmlinuz")
    image = tmp_path / "fs.img"
    runner.run(["mkfs.ext4", "-q", "-F", "-d", src, image, "8M"])
    out = tmp_path / "out"
    out.mkdir()
    e2fs.dump_file(image, "/boot/vmlinuz", out / "vmlinuz")
    assert (out / "vmlinuz").read_bytes() == b"kernel"
    with pytest.raises(InvalidImage, match="/boot/link cannot be read from"):
        e2fs.dump_file(image, "/boot/link", out / "link")  # a link is not a file to copy
    with pytest.raises(InvalidImage, match="/nope cannot be read"):
        e2fs.dump_file(image, "/nope", out / "nope")
    assert sorted(p.name for p in out.iterdir()) == ["vmlinuz"]  # no scratch directory left


@pytest.mark.parametrize(
    "field",
    ["Block size:               4096x", "Block count:              99999999999999999999999", "Block size: 3000"],
)
def test_superblock_read_strictly(field: str) -> None:
    text = "Block size: 4096\nBlock count: 100\nFree blocks: 10\nFilesystem UUID: u\n"
    key = field.split(":", maxsplit=1)[0]
    lines = [line for line in text.splitlines() if not line.startswith(key)] + [field]
    with pytest.raises(InvalidImage, match=r"dumpe2fs shows an (unreadable|impossible)") as info:
        e2fs.parse_superblock("\n".join(lines), "x.img")
    assert "\n" not in str(info.value)
