"""Which filesystem is the root, /boot, the ESP; the root's description; ImageInfo as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.fsview import GuestTree, HostFS
from liveimg.imageinfo import (
    ESP_GPT_TYPE,
    ImageInfo,
    KernelNotFound,
    NoKernel,
    NoRootFilesystem,
    Partition,
    UnreadableFilesystem,
    choose_roles,
    describe_root,
    probe_tree,
)
from liveimg.ostree.deployments import DeploymentNotFound
from tests.ostree.layouts import Sysroot, elf_header, write

LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"


def part(device: str, fstype: str | None = "ext4", **kw: object) -> Partition:
    return Partition(device=device, fstype=fstype, size=1 << 20, **kw)  # type: ignore[arg-type]


def probed(*items: tuple[Partition, Path]) -> list[tuple[Partition, object, GuestTree]]:
    out = []
    for p, base in items:
        base.mkdir(parents=True, exist_ok=True)
        tree = GuestTree(HostFS(base, p.device))
        out.append((p, probe_tree(tree), tree))
    return out


def test_ostree_root_boot_and_esp(fs: object) -> None:
    sysroot = Sysroot.create(Path("/img"))
    sysroot.add_deployment()
    Path("/esp/EFI/BOOT").mkdir(parents=True)
    esp = part("/dev/sda1", "vfat", parttype=ESP_GPT_TYPE)
    boot = part("/dev/sda2", uuid="b00t")
    root = part("/dev/sda3")
    roles = choose_roles(
        "disk.raw",
        probed((esp, Path("/esp")), (boot, sysroot.boot), (root, sysroot.root)),
        [],
        looked_at=[esp, boot, root],  # type: ignore[arg-type]
    )
    assert (roles.root, roles.boot, roles.esp, roles.warnings) == (root, boot, esp, ())
    assert roles.root_probe.ostree_root and not roles.root_probe.classic_root


def test_boot_directory_on_the_root_and_lorax_loader_0_only_blind_spot(fs: object) -> None:
    # lorax looks only for loader.0 on *other* partitions: a root with /boot/loader -> loader.1 defeats it
    sysroot = Sysroot.create(Path("/img"), separate_boot=False)
    sysroot.add_deployment(bootversion=1)
    stale = part("/dev/sda1")
    write(Path("/stale/loader.0/entries/x.conf"), "version 1\n")
    root = part("/dev/sda2")
    roles = choose_roles("d", probed((stale, Path("/stale")), (root, sysroot.root)), [], looked_at=[stale, root])  # type: ignore[arg-type]
    assert roles.root == root and roles.boot is None
    assert "not empty: using it, not /dev/sda1" in roles.warnings[0]


def test_classic_root_finds_boot_by_fstab(fs: object) -> None:
    write(Path("/root/etc/os-release"), "ID=debian\n")
    write(Path("/root/etc/fstab"), "# x\nUUID=1111 / ext4 defaults 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n")
    Path("/root/boot").mkdir()
    write(Path("/other/vmlinuz-6.1"), "k")
    write(Path("/bootfs/vmlinuz-6.1"), "k")
    other = part("/dev/sda1", label="junk")
    boot = part("/dev/sda2", label="boot")
    root = part("/dev/sda3", uuid="1111")
    items = probed((other, Path("/other")), (boot, Path("/bootfs")), (root, Path("/root")))
    roles = choose_roles("d", items, [], looked_at=[other, boot, root])  # type: ignore[arg-type]
    assert roles.root == root and roles.boot == boot  # LABEL matches case-insensitively, as udev does


def test_classic_root_without_fstab_takes_a_kernel_filesystem(fs: object) -> None:
    write(Path("/root/etc/os-release"), "ID=debian\n")
    write(Path("/bootfs/vmlinuz-6.1"), "k")
    boot, root = part("/dev/sda1"), part("/dev/sda2")
    roles = choose_roles("d", probed((boot, Path("/bootfs")), (root, Path("/root"))), [], looked_at=[boot, root])  # type: ignore[arg-type]
    assert roles.boot == boot


def test_no_root_says_what_was_looked_for_where(fs: object) -> None:
    data, swap = part("/dev/sda1"), part("/dev/sda2", "swap")
    with pytest.raises(NoRootFilesystem) as info:
        choose_roles("disk.raw", probed((data, Path("/data"))), [], looked_at=[data, swap])  # type: ignore[arg-type]
    assert str(info.value).startswith(
        "disk.raw: no root filesystem: looked for /ostree/deploy or /etc/os-release on "
        "/dev/sda1 (ext4), /dev/sda2 (swap)"
    )


def test_encrypted_root_gets_a_hint(fs: object) -> None:
    luks = part("/dev/sda2", "crypto_LUKS")
    with pytest.raises(NoRootFilesystem, match=r"\(encrypted \(LUKS\) filesystems are not supported"):
        choose_roles("d", [], [], looked_at=[luks])


def test_unreadable_filesystems_explain_a_missing_root(fs: object) -> None:
    data, bad = part("/dev/sda1"), part("/dev/sda2", "xfs")
    with pytest.raises(UnreadableFilesystem, match=r"^disk.raw: no root .* /dev/sda2 \(xfs\): bad superblock"):
        choose_roles("disk.raw", probed((data, Path("/data"))), [(bad, "bad superblock")], looked_at=[data, bad])  # type: ignore[arg-type]


def test_ostree_root_wins_and_btrfs_subvolumes_of_the_root_are_not_boot(fs: object) -> None:
    sysroot = Sysroot.create(Path("/img"), separate_boot=False)
    sysroot.add_deployment()
    write(Path("/classic/etc/os-release"), "ID=x\n")
    top = part("/dev/sda2", "btrfs")
    sub = part("btrfsvol:/dev/sda2/root", "btrfs", subvolume="root")
    classic = part("/dev/sda1")
    write(Path("/top/loader.0/entries/x.conf"), "")
    items = probed((classic, Path("/classic")), (top, Path("/top")), (sub, sysroot.root))
    roles = choose_roles("d", items, [], looked_at=[classic, top, sub])  # type: ignore[arg-type]
    assert roles.root == sub and roles.boot is None
    assert "several root filesystems" not in " ".join(roles.warnings)  # an ostree root beats a classic one


def test_describe_ostree_root(fs: object) -> None:
    sysroot = Sysroot.create(Path("/img"))
    new = sysroot.add_deployment(commit="new", version="2", kver="6.9.0-1.fc40.x86_64", arch="aarch64")
    old = sysroot.add_deployment(commit="old", version="1", kver="6.8.0-1.fc40.x86_64")
    d = describe_root(sysroot.tree(), image="img", boot_separate=True)
    assert d.ostree and d.deployment is not None and d.deployment.checksum == new["checksum"]
    assert d.kernel == d.deployment.kernel and len(d.kernels) == 2
    assert d.os_release["ID"] == "fedora" and d.arch == "aarch64"  # from the deployment's ELF, not the kver
    d = describe_root(sysroot.tree(), image="img", boot_separate=True, deployment=old["checksum"][:6])
    assert d.deployment is not None and d.deployment.index == 1 and d.arch == "x86_64"
    d = describe_root(sysroot.tree(), image="img", boot_separate=True, deployment=1, kernel="6.8.0-1.fc40.x86_64")
    assert d.kernel.version == "6.8.0-1.fc40.x86_64"
    with pytest.raises(KernelNotFound, match=r"has kernel 6\.9\.0-1\.fc40\.x86_64, not 6\.8"):
        describe_root(sysroot.tree(), image="img", boot_separate=True, kernel="6.8.0-1.fc40.x86_64")
    with pytest.raises(DeploymentNotFound, match="available: 0: fedora"):
        describe_root(sysroot.tree(), image="img", boot_separate=True, deployment="rhel")


def test_describe_ostree_root_without_kernel_or_deployments(fs: object) -> None:
    sysroot = Sysroot.create(Path("/img"))
    with pytest.raises(InvalidImage, match="the ostree root has no bootable deployment"):
        describe_root(sysroot.tree(), image="img", boot_separate=True)
    sysroot.add_deployment(kernel_in_boot=False, kernel_in_modules=False)
    with pytest.raises(NoKernel, match=r"^img: deployment 0: fedora .* has no kernel"):
        describe_root(sysroot.tree(), image="img", boot_separate=True)


def test_describe_classic_root(fs: object) -> None:
    root = Path("/r")
    write(root / "etc/os-release", 'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    write(root / "usr/bin/true", elf_header("x86_64"))
    write(root / "boot/vmlinuz-6.1.0-13-amd64", "k")
    write(root / "boot/initrd.img-6.1.0-13-amd64", "i")
    write(root / "boot/vmlinuz-6.1.0-9-amd64", "k")
    tree = GuestTree(HostFS(root))
    d = describe_root(tree, image="img", boot_separate=False)
    assert not d.ostree and d.deployments == () and d.deployment is None
    assert d.kernel.version == "6.1.0-13-amd64" and [k.version for k in d.kernels] == [
        "6.1.0-13-amd64",
        "6.1.0-9-amd64",
    ]
    assert d.os_release["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)" and d.arch == "x86_64"
    assert describe_root(tree, image="img", boot_separate=False, kernel="6.1.0-9-amd64").kernel.initramfs is None
    with pytest.raises(InvalidOptions, match="not an ostree system"):
        describe_root(tree, image="img", boot_separate=False, deployment=0)


def test_image_info_to_dict_is_json(fs: object) -> None:
    sysroot = Sysroot.create(Path("/img"))
    sysroot.add_deployment()
    d = describe_root(sysroot.tree(), image="img", boot_separate=True)
    root = part("/dev/sda2", number=2, offset=1 << 20, length=1 << 20)
    info = ImageInfo(
        image=Path("/x/disk.raw"),
        format="raw",
        virtual_size=2 << 20,
        partition_table="gpt",
        partitions=(root,),
        root=root,
        boot=None,
        esp=None,
        os_release=d.os_release,
        arch=d.arch,
        ostree=d.ostree,
        deployments=d.deployments,
        deployment=d.deployment,
        kernels=d.kernels,
        kernel=d.kernel,
    )
    data = json.loads(json.dumps(info.to_dict()))
    assert data["image"] == "/x/disk.raw" and data["root"]["offset"] == 1 << 20
    assert data["ostree_arg"] == info.ostree_arg and info.ostree_arg is not None
    assert data["deployments"][0]["kver"] == d.kernel.version
    assert data["deployment"]["kernel"]["path"] == d.kernel.path
    assert data["os_release"]["ID"] == "fedora" and data["warnings"] == []
    assert info.bcj_arch == "x86_64"
    with pytest.raises(AttributeError):
        info.arch = "ppc64le"  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.os_release["ID"] = "x"  # type: ignore[index]


def test_summary_is_readable(fs: object) -> None:
    sysroot = Sysroot.create(Path("/img"))
    sysroot.add_deployment(commit="a", version="2", bootcsum="1" * 64)
    sysroot.add_deployment(commit="b", version="1", bootcsum="2" * 64)
    d = describe_root(sysroot.tree(), image="img", boot_separate=True, deployment=1)
    boot = part("/dev/sda1", number=1, offset=1 << 20, length=1 << 20, label="boot")
    root = part("/dev/vg/root", "xfs", lvm=True)
    info = ImageInfo(
        Path("d.qcow2"), "qcow2", 3 << 30, "gpt", (boot, root), root, boot, None, d.os_release, d.arch,
        d.ostree, d.deployments, d.deployment, d.kernels, d.kernel, ("something odd",),
    )  # fmt: skip
    lines = info.summary().splitlines()
    assert lines[0] == "image:       d.qcow2 (qcow2, 3.0 GiB, gpt)"
    assert lines[2].split() == ["/dev/sda1", "ext4", "1.0", "MiB", "boot", "bytes", "1048576+1048576", "[boot]"]
    assert lines[3].split() == ["/dev/vg/root", "xfs", "1.0", "MiB", "LVM", "[root]"]
    assert "os:          Fedora Linux 40 (fedora), x86_64" in lines
    assert any(line.startswith("    0: fedora ") for line in lines)
    assert any(line.startswith("  * 1: fedora ") for line in lines)
    assert f"ostree=      {d.deployment.ostree_arg}" in lines  # type: ignore[union-attr]
    assert "options:     console=ttyS0 quiet" in lines
    assert lines[-1] == "warning:     something odd"
