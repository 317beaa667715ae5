"""Small synthetic disk images for the guest-inspection tests, built without root mounts.

Each is a few MiB of real filesystems holding fake systems: the ostree ones are made by the
real ``ostree`` CLI (``admin init-fs``/``os-init``/``commit``/``deploy``, 0.1 s each), so their
layout is ostree 2022.7's own; kernels are 1 KiB stubs with an x86 boot header, programs are a
copy of the host's ``/usr/bin/true`` (a real ELF).  Partitioned images are assembled as lorax's
replacements must work: ``mkfs.ext4 -d`` into a file, ``sfdisk`` on the image file and ``dd`` at
the partition's offset.  LVM+XFS and btrfs-with-subvolumes are made inside one libguestfs
appliance (rootless).  Recipes:

* ``ostree-gpt.raw``: GPT; ESP (vfat), /boot (ext4), root (ext4); two OSes, four deployments
  (serials 0 and 1, two kernels), ``boot/loader -> loader.0``, ``ostree/boot.0 -> boot.0.1``;
* ``classic-mbr.qcow2``: MBR; /boot (p1, ext4, two Debian kernels), extended p2 with the root in
  logical p5; ``/etc/fstab`` mounts /boot by UUID;
* ``ostree-fs.ext4``: an unpartitioned ostree root with /boot as a directory (lorax's --fs-image);
* ``lvm-xfs.raw``: GPT; /boot ext4; LVM PV -> VG ``atomicos`` -> LV ``root`` (XFS), ostree;
* ``btrfs.raw``: GPT; btrfs with subvolumes ``root`` (a classic system, kernels in /boot) and ``home``;
* ``hostile.raw``: GPT; an ostree root whose boot link escapes (``../../../../../..``), and a
  second ext4 partition with a corrupt superblock;
* ``corrupt.raw``: GPT; one ext4 partition with a corrupt superblock (blkid still sees ext4).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

from liveimg import run as runner
from tests.ostree.layouts import OSTREE_ENV, Sysroot, symlink, write
from tests.support import accel

MIB = 1 << 20
SECTOR = 512
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
BOOT_UUID = "0b0b0b0b-1111-4222-8333-444455556666"


def fake_kernel(kver: str) -> bytes:
    """1 KiB with an x86 boot header ("HdrS", 64-bit xloadflags) and the version string."""
    data = bytearray(1024)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x236, 1)
    data[0x300 : 0x300 + len(kver)] = kver.encode()
    return bytes(data)


def _userland(tree: Path, os_id: str, pretty: str) -> None:
    write(tree / "usr/lib/os-release", f'NAME="{pretty}"\nID={os_id}\nPRETTY_NAME="{pretty}"\n')
    (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/true", tree / "usr/bin/true")
    symlink(tree / "bin", "usr/bin")


def _ostree_tree(tree: Path, os_id: str, kver: str) -> None:
    _userland(tree, os_id, f"{os_id} test {kver}")
    write(tree / f"usr/lib/modules/{kver}/vmlinuz", fake_kernel(kver))
    write(tree / f"usr/lib/modules/{kver}/initramfs.img", f"initramfs {kver}\n")
    (tree / "usr/etc").mkdir(parents=True, exist_ok=True)
    symlink(tree / "usr/etc/os-release", "../lib/os-release")


def ostree_sysroot(work: Path) -> Path:
    """A sysroot made by the ostree CLI: fakeos (3 deployments) and other (1)."""
    sysroot = work / "sysroot"
    sysroot.mkdir(parents=True)
    runner.run(["ostree", "admin", "init-fs", str(sysroot)])
    repo = f"--repo={sysroot}/ostree/repo"
    for osname in ("fakeos", "other"):
        runner.run(["ostree", "admin", "os-init", f"--sysroot={sysroot}", osname])

    def deploy(osname: str, ref: str, kver: str, *extra: str) -> None:
        tree = work / f"tree-{osname}-{kver}"
        _ostree_tree(tree, osname, kver)
        runner.run(["ostree", repo, "commit", f"--branch={ref}", f"--tree=dir={tree}", "--no-xattrs", "-s", kver])
        runner.run(["ostree", "admin", "deploy", f"--sysroot={sysroot}", f"--os={osname}", *extra, ref], env=OSTREE_ENV)

    deploy("fakeos", "fakeos/stable", "6.1.0-1-amd64", "--karg=root=UUID=1234", "--karg=rw", "--karg=console=ttyS0")
    deploy("fakeos", "fakeos/stable", "6.1.0-2-amd64")
    deploy("other", "other/stable", "6.1.0-3-amd64", "--karg=quiet")
    runner.run(
        ["ostree", "admin", "deploy", f"--sysroot={sysroot}", "--os=fakeos", "--retain", "fakeos/stable"],
        env=OSTREE_ENV,
    )
    return sysroot


def split_boot(sysroot: Path, work: Path) -> tuple[Path, Path]:
    """Move ``sysroot/boot/*`` into a separate directory (the boot partition's content)."""
    boot = work / "bootfs"
    boot.mkdir()
    for entry in (sysroot / "boot").iterdir():
        os.rename(entry, boot / entry.name)
    return sysroot, boot


def mkfs_ext4(src: Path | None, out: Path, size_mib: int, label: str, uuid: str | None = None) -> Path:
    argv = ["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0"]
    if uuid:
        argv += ["-U", uuid]
    if src is not None:
        argv += ["-d", str(src)]
    runner.run([*argv, str(out), f"{size_mib}M"])
    return out


@dataclass(frozen=True)
class Part:
    """A partition to create: its content (a filesystem image or None), size and type."""

    size_mib: int
    type: str
    content: Path | None = None
    name: str = ""
    logical: bool = False


def assemble(out: Path, label: str, parts: list[Part]) -> Path:
    """A disk image: ``label`` (gpt or dos), partitions 1 MiB-aligned, contents copied in at their offsets.

    For ``dos``, logical partitions follow an extended partition spanning the rest of the disk.
    """
    start = 1  # MiB
    lines = [f"label: {label}"]
    placements: list[tuple[Path | None, int]] = []
    logical = [p for p in parts if p.logical]
    primary = [p for p in parts if not p.logical]
    for part in primary:
        name = f', name="{part.name}"' if part.name and label == "gpt" else ""
        lines.append(f"start={start * 2048}, size={part.size_mib * 2048}, type={part.type}{name}")
        placements.append((part.content, start))
        start += part.size_mib
    if logical:
        total = sum(p.size_mib + 1 for p in logical)
        lines.append(f"start={start * 2048}, size={total * 2048}, type=5")
        for part in logical:
            start += 1  # room for the EBR
            lines.append(f"start={start * 2048}, size={part.size_mib * 2048}, type={part.type}")
            placements.append((part.content, start))
            start += part.size_mib
    with open(out, "wb") as f:
        f.truncate((start + 1) * MIB)
    runner.run(["sfdisk", "-q", "--no-reread", str(out)], input=("\n".join(lines) + "\n").encode())
    for content, offset in placements:
        if content is not None:
            runner.run(
                ["dd", f"if={content}", f"of={out}", "bs=1M", f"seek={offset}", "conv=notrunc,sparse", "status=none"]
            )
    return out


def sfdisk_parts(image: Path) -> list[tuple[int, int, int]]:
    """(number, byte offset, byte length) of every partition, as sfdisk reads the image."""
    table = json.loads(runner.run(["sfdisk", "--json", str(image)]).stdout)["partitiontable"]
    out = []
    for p in table["partitions"]:
        number = int(p["node"][len(str(image)) :])
        out.append((number, p["start"] * SECTOR, p["size"] * SECTOR))
    return out


def corrupt_superblock(fs_image: Path) -> None:
    """Keep the ext4 magic (blkid still says ext4) but make the superblock impossible (block size 2^34 KiB)."""
    with open(fs_image, "r+b") as f:
        f.seek(1024 + 24)  # s_log_block_size
        f.write(struct.pack("<I", 24))
        f.seek(1024 + 4)  # s_blocks_count_lo
        f.write(struct.pack("<I", 0))


def ostree_gpt(work: Path) -> tuple[Path, Path]:
    """``ostree-gpt.raw`` and the sysroot it was made from."""
    sysroot = ostree_sysroot(work / "src")
    root, boot = split_boot(sysroot, work / "src")
    esp = work / "esp.vfat"
    runner.run(["mkfs.vfat", "-C", "-n", "ESP", str(esp), str(8 * 1024)])
    bootfs = mkfs_ext4(boot, work / "boot.ext4", 16, "boot", BOOT_UUID)
    rootfs = mkfs_ext4(root, work / "root.ext4", 32, "root")
    disk = assemble(
        work / "ostree-gpt.raw",
        "gpt",
        [Part(8, ESP, esp, "esp"), Part(16, LINUX_FS, bootfs, "boot"), Part(32, ROOT_X86_64, rootfs, "root")],
    )
    shutil.copytree(boot, sysroot / "boot", dirs_exist_ok=True, symlinks=True)  # the source, whole again
    return disk, sysroot


def classic_tree(root: Path, boot: Path | None) -> None:
    """A Debian-like classic system; kernels in ``boot`` (its own filesystem) or ``root/boot``."""
    _userland(root, "debian", "Debian GNU/Linux 12 (bookworm)")
    symlink(root / "etc/os-release", "../usr/lib/os-release")
    fstab = "UUID=5e5e5e5e-0000-4000-8000-000000000001 / ext4 errors=remount-ro 0 1\n"
    if boot is not None:
        fstab += f"UUID={BOOT_UUID} /boot ext4 defaults 0 2\n"
    write(root / "etc/fstab", "# <file system> <mount point> <type> <options> <dump> <pass>\n" + fstab)
    (root / "boot").mkdir(exist_ok=True)
    kernels = boot if boot is not None else root / "boot"
    for kver in ("6.1.0-9-amd64", "6.1.0-13-amd64"):
        write(kernels / f"vmlinuz-{kver}", fake_kernel(kver))
        write(kernels / f"initrd.img-{kver}", f"initrd {kver}\n")
        write(kernels / f"config-{kver}", "CONFIG_X=y\n")


def classic_mbr(work: Path) -> tuple[Path, Path]:
    """``classic-mbr.qcow2`` and the raw image it was converted from."""
    root, boot = work / "croot", work / "cboot"
    root.mkdir()
    boot.mkdir()
    classic_tree(root, boot)
    bootfs = mkfs_ext4(boot, work / "cboot.ext4", 8, "BOOT", BOOT_UUID)
    rootfs = mkfs_ext4(root, work / "croot.ext4", 8, "root", "5e5e5e5e-0000-4000-8000-000000000001")
    raw = assemble(work / "classic-mbr.raw", "dos", [Part(8, "83", bootfs), Part(8, "83", rootfs, logical=True)])
    qcow = work / "classic-mbr.qcow2"
    runner.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow)])
    return qcow, raw


def ostree_fs(work: Path) -> tuple[Path, Path]:
    """``ostree-fs.ext4`` (unpartitioned, /boot a directory) and its source sysroot."""
    sysroot = ostree_sysroot(work / "fsrc")
    return mkfs_ext4(sysroot, work / "ostree-fs.ext4", 40, "Anaconda"), sysroot


def hostile(work: Path) -> Path:
    """``hostile.raw``: ostree root with an escaping boot link, and a corrupt ext4 beside it."""
    layout = Sysroot.create(work / "hsrc", separate_boot=False)
    ids = layout.add_deployment("fedora", "h1")
    link = layout.root / "ostree" / "boot.1.1" / "fedora" / ids["bootcsum"] / "0"
    link.unlink()
    symlink(link, "../../../../../../../../../../etc")
    rootfs = mkfs_ext4(layout.root, work / "hroot.ext4", 8, "root")
    bad = mkfs_ext4(None, work / "hbad.ext4", 8, "bad")
    corrupt_superblock(bad)
    return assemble(work / "hostile.raw", "gpt", [Part(8, ROOT_X86_64, rootfs), Part(8, LINUX_FS, bad)])


def corrupt(work: Path) -> Path:
    """``corrupt.raw``: the only filesystem has a corrupt superblock."""
    bad = mkfs_ext4(None, work / "cbad.ext4", 8, "root")
    corrupt_superblock(bad)
    return assemble(work / "corrupt.raw", "gpt", [Part(8, ROOT_X86_64, bad)])


def _tar(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in sorted(src.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buf.getvalue()


def lvm_and_btrfs(work: Path) -> tuple[Path, Path, Path]:
    """``lvm-xfs.raw`` (ostree) and ``btrfs.raw`` (classic), made in one libguestfs appliance.

    Returns both images and the ostree sysroot copied into the first.
    """
    import guestfs

    sysroot = ostree_sysroot(work / "lsrc")
    root, boot = split_boot(sysroot, work / "lsrc")
    croot = work / "btrfs-root"
    croot.mkdir()
    classic_tree(croot, None)
    root_tar, boot_tar, classic_tar = work / "root.tar", work / "boot.tar", work / "classic.tar"
    root_tar.write_bytes(_tar(root))
    boot_tar.write_bytes(_tar(boot))
    classic_tar.write_bytes(_tar(croot))
    lvm_disk, btrfs_disk = work / "lvm-xfs.raw", work / "btrfs.raw"
    for disk, size in ((lvm_disk, 360), (btrfs_disk, 200)):
        with open(disk, "wb") as f:
            f.truncate(size * MIB)

    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        g.set_backend_settings(accel().libguestfs_settings())
        g.add_drive(str(lvm_disk), format="raw")
        g.add_drive(str(btrfs_disk), format="raw")
        g.launch()
        # LVM + XFS (mkfs.xfs refuses filesystems under 300 MiB)
        g.part_init("/dev/sda", "gpt")
        g.part_add("/dev/sda", "p", 2048, 2048 + 16 * 2048 - 1)
        g.part_add("/dev/sda", "p", 2048 + 16 * 2048, -34)
        g.part_set_gpt_type("/dev/sda", 2, LVM)
        g.mkfs("ext4", "/dev/sda1", label="boot")
        g.pvcreate("/dev/sda2")
        g.vgcreate("atomicos", ["/dev/sda2"])
        g.lvcreate_free("root", "atomicos", 100)
        g.mkfs("xfs", "/dev/atomicos/root", label="root")
        g.mount("/dev/atomicos/root", "/")
        g.tar_in(str(root_tar), "/")
        g.mkdir_p("/boot")
        g.mount("/dev/sda1", "/boot")
        g.tar_in(str(boot_tar), "/boot")
        g.umount_all()
        # btrfs with subvolumes
        g.part_disk("/dev/sdb", "gpt")
        g.mkfs_btrfs(["/dev/sdb1"], label="fedora")
        g.mount("/dev/sdb1", "/")
        g.btrfs_subvolume_create("/root")
        g.btrfs_subvolume_create("/home")
        g.umount_all()
        g.mount_options("subvol=root", "/dev/sdb1", "/")
        g.tar_in(str(classic_tar), "/")
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    shutil.copytree(boot, sysroot / "boot", dirs_exist_ok=True, symlinks=True)
    return lvm_disk, btrfs_disk, sysroot
