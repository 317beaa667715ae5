"""The native inspection (liveimg.nativeimage) of small GPT disks: what it reads, what it leaves to the appliance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.guest import probe_image
from liveimg.nativeimage import NativeImage, NativeRefused
from tests.support import need

MiB = 1 << 20
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


def root_fs(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "boot").mkdir()
    (tree / "etc/os-release").write_text('ID=toy\nPRETTY_NAME="Toy Linux"\n')
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(b"MZ" + bytes(4096))
    image = tmp_path / "root.ext4"
    runner.run(["mkfs.ext4", "-q", "-L", "root", "-d", str(tree), str(image), "8M"])
    return image


def gpt_disk(tmp_path: Path, second: Path) -> Path:
    """Partition 1: 1 MiB of code-like bytes (a BIOS boot partition's GRUB); 2: ``second``; 3: the root."""
    root = root_fs(tmp_path)
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(24 * MiB)
    script = (f"label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n"
              f"start=4096, size=8192\nstart=12288, size=16384, type={ROOT_TYPE}\n")  # fmt: skip
    runner.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)], input=script.encode())
    with open(disk, "r+b") as f:
        f.seek(1 * MiB)
        f.write(os.urandom(MiB))
        f.seek(2 * MiB)
        f.write(second.read_bytes())
        f.seek(6 * MiB)
        f.write(root.read_bytes())
    return disk


def test_a_disk_with_a_boot_loader_s_partition_and_swap_is_read_natively(tmp_path: Path) -> None:
    need("sfdisk", "mkfs.ext4", "mkswap", "blkid", "qemu-img")
    swap = tmp_path / "swap"
    with open(swap, "wb") as f:
        f.truncate(4 * MiB)
    runner.run(["mkswap", "-q", "-L", "myswap", str(swap)])
    info = NativeImage(probe_image(gpt_disk(tmp_path, swap))).inspect()
    code, swapped, root = info.partitions
    assert (code.fstype, code.label) == (None, None)  # blkid finds no signature in it
    assert (swapped.fstype, swapped.label, swapped.offset) == ("swap", "myswap", 2 * MiB)
    assert info.root == root and (root.fstype, root.label, root.number) == ("ext4", "root", 3)
    assert info.kernel.version == "6.1.0-1-amd64" and info.os_release["ID"] == "toy"


@pytest.mark.parametrize(("mkfs", "found"), [(["mkfs.vfat"], "vfat"), (["mkfs.xfs", "-q"], "xfs")])
def test_a_filesystem_the_appliance_would_mount_is_left_to_it(tmp_path: Path, mkfs: list[str], found: str) -> None:
    need("sfdisk", "mkfs.ext4", mkfs[0], "blkid", "qemu-img")
    other = tmp_path / "other"
    with open(other, "wb") as f:
        f.truncate(4 * MiB if found == "vfat" else 0)
    if found == "xfs":
        with open(other, "wb") as f:
            f.truncate(300 * MiB)  # mkfs.xfs's least size; only its first 4 MiB fit the partition
    runner.run([*mkfs, str(other)])
    with open(other, "r+b") as f:
        head = f.read(4 * MiB)
    (tmp_path / "head").write_bytes(head)
    with pytest.raises(NativeRefused, match=f"/dev/sda2 holds {found}, not an ext filesystem"):
        NativeImage(probe_image(gpt_disk(tmp_path, tmp_path / "head"))).inspect()
