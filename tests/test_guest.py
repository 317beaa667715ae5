"""Checks made on the host before any appliance starts, and the CLI's error path (no VM here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveimg import cli
from liveimg import run as runner
from liveimg.errors import ImageNotFound, InvalidImage
from liveimg.guest import NotADiskImage, _is_errno, _mount_error, partition_from_blkid, probe_image
from tests.support import need


def test_missing_directory_empty_and_text_files(tmp_path: Path) -> None:
    need("qemu-img", "blkid")
    with pytest.raises(ImageNotFound, match="no such file"):
        probe_image(tmp_path / "nope.raw")
    with pytest.raises(NotADiskImage, match="a directory"):
        probe_image(tmp_path)
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    with pytest.raises(NotADiskImage, match=r"empty\.raw: not a disk image: it is empty"):
        probe_image(empty)
    text = tmp_path / "notes.txt"
    text.write_text("just some text\n" * 100)
    with pytest.raises(NotADiskImage, match=r"notes\.txt: not a disk image: no partition table and no filesystem"):
        probe_image(text)


def test_filesystem_image_and_qcow2_are_accepted(tmp_path: Path) -> None:
    need("qemu-img", "mkfs.ext4")
    fs = tmp_path / "root.ext4"
    runner.run(["mkfs.ext4", "-q", str(fs), "4M"])
    found = probe_image(fs)
    assert (found.format, found.virtual_size) == ("raw", 4 << 20)
    qcow = tmp_path / "disk.qcow2"
    runner.run(["qemu-img", "convert", "-O", "qcow2", str(fs), str(qcow)])
    assert probe_image(qcow).format == "qcow2"


def test_images_that_would_read_other_host_files_are_refused(tmp_path: Path) -> None:
    need("qemu-img")
    base = tmp_path / "base.raw"
    base.write_bytes(bytes(1 << 20))
    overlay = tmp_path / "overlay.qcow2"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)])
    with pytest.raises(InvalidImage, match=r"with a backing file .*base\.raw\) is refused") as info:
        probe_image(overlay)
    assert "qemu-img convert" in str(info.value)
    external = tmp_path / "external.qcow2"
    data = tmp_path / "external.data"
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(external), "1M"])
    with pytest.raises(InvalidImage, match="external data file"):
        probe_image(external)


def test_unsupported_format(tmp_path: Path) -> None:
    need("qemu-img")
    odd = tmp_path / "disk.parallels"
    runner.run(["qemu-img", "create", "-q", "-f", "parallels", str(odd), "1M"])
    with pytest.raises(InvalidImage, match="unsupported image format 'parallels'"):
        probe_image(odd)


def test_cli_reports_one_line_naming_the_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("qemu-img", "blkid")
    text = tmp_path / "readme.txt"
    text.write_text("hello\n")
    assert cli.main(["inspect", str(text)]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"liveimg: error: {text}: not a disk image")


def test_libguestfs_error_helpers() -> None:
    assert _is_errno(RuntimeError("lstatns: /liveimg-1/x: No such file or directory"), 2)
    assert _is_errno(RuntimeError("lstatns: /liveimg-1/x/y: Not a directory"), 2, 20)
    assert not _is_errno(RuntimeError("lstatns: /liveimg-1/x: Input/output error"), 2, 20)
    message = (
        "mount_ro: /dev/sda1 on /liveimg-1 (options: 'ro'): mount: /sysroot/liveimg-1: wrong fs type, "
        "bad option, bad superblock on /dev/sda1,\n       missing codepage or helper program, or other error."
    )
    assert _mount_error(RuntimeError(message)).startswith("/liveimg-1: wrong fs type, bad option, bad superblock")


def test_raw_partition_past_the_end_is_refused_before_launch(tmp_path: Path) -> None:
    need("qemu-img", "blkid", "sfdisk")
    disk = tmp_path / "truncated.raw"
    with open(disk, "wb") as f:
        f.truncate(100 << 20)
    runner.run(["sfdisk", "-q", str(disk)], input=b"label: dos\nstart=2048, size=200000, type=83\n")
    with open(disk, "r+b") as f:
        f.truncate(10 << 20)
    with pytest.raises(InvalidImage, match=r"partition 1 \(bytes 1048576\+102400000\) extends beyond the end"):
        probe_image(disk)


# blkid -p -o export output of real partitions (captured in the appliance)
_GPT_PART = {
    "DEVNAME": "/dev/sda2",
    "LABEL": "root",
    "UUID": "0b997745-12b6-4d03-a34e-794836af772c",
    "TYPE": "ext4",
    "PART_ENTRY_SCHEME": "gpt",
    "PART_ENTRY_NAME": "root",
    "PART_ENTRY_UUID": "0a2f53fa-9244-e841-b611-76e2dcbfa8e2",
    "PART_ENTRY_TYPE": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "PART_ENTRY_NUMBER": "2",
    "PART_ENTRY_OFFSET": "18432",
    "PART_ENTRY_SIZE": "49152",
}


def test_partition_from_blkid() -> None:
    p = partition_from_blkid("/dev/sda2", _GPT_PART, disk_size=40 << 20, image=Path("d.raw"))
    assert (p.number, p.offset, p.length, p.size) == (2, 18432 * 512, 49152 * 512, 49152 * 512)
    assert (p.fstype, p.label, p.partlabel) == ("ext4", "root", "root")
    assert p.parttype == "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" and not p.lvm
    lv = partition_from_blkid("/dev/vg/root", {"TYPE": "xfs"}, disk_size=1, image=Path("d"), size=7, lvm=True)
    assert (lv.number, lv.offset, lv.length, lv.size, lv.lvm) == (None, None, None, 7, True)
    with pytest.raises(InvalidImage, match=r"^d\.raw: partition 2 \(bytes 9437184\+25165824\) extends beyond"):
        partition_from_blkid("/dev/sda2", _GPT_PART, disk_size=30 << 20, image=Path("d.raw"))
