"""Inspection through real libguestfs, one appliance launch per image, assertions grouped.

Images come from :mod:`tests.integration.guest_images` (built once per session, a few MiB each);
the real sample disks are inspected too when they are available.  Every test checks that the
input's sha256 is unchanged afterwards.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import pytest

from liveimg import cli
from liveimg import run as runner
from liveimg.errors import GuestPathEscapes
from liveimg.guest import Guest, UnreadableFilesystem, open_guest
from liveimg.kernels import KernelNotFound
from liveimg.manifest import sha256_file
from liveimg.ostree.deployments import DeploymentNotFound
from tests.integration import guest_images as gi
from tests.support import need, need_module

pytestmark = pytest.mark.timeout(1200)

_STATUS = re.compile(r"^[* ] (\S+) ([0-9a-f]{64})\.([0-9]+)", re.MULTILINE)


def ostree_status(sysroot: Path) -> list[tuple[str, str, int]]:
    """(osname, checksum, serial) of every deployment, in the order ``ostree admin status`` gives."""
    out = runner.run(["ostree", "admin", "status", f"--sysroot={sysroot}"]).stdout
    return [(m.group(1), m.group(2), int(m.group(3))) for m in _STATUS.finditer(out)]


class Images:
    """The synthetic images, each built on first use."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def _dir(self, name: str) -> Path:
        path = self.base / name
        path.mkdir()
        return path

    @cached_property
    def ostree_gpt(self) -> tuple[Path, Path]:
        return gi.ostree_gpt(self._dir("ostree-gpt"))

    @cached_property
    def classic_mbr(self) -> tuple[Path, Path]:
        return gi.classic_mbr(self._dir("classic-mbr"))

    @cached_property
    def ostree_fs(self) -> tuple[Path, Path]:
        return gi.ostree_fs(self._dir("ostree-fs"))

    @cached_property
    def lvm_and_btrfs(self) -> tuple[Path, Path, Path]:
        return gi.lvm_and_btrfs(self._dir("lvm-btrfs"))

    @cached_property
    def hostile(self) -> Path:
        return gi.hostile(self._dir("hostile"))

    @cached_property
    def corrupt(self) -> Path:
        return gi.corrupt(self._dir("corrupt"))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    need("ostree", "mkfs.ext4", "mkfs.vfat", "sfdisk", "qemu-img", "blkid", "qemu-system-x86_64", "supermin")
    need_module("guestfs", "the Debian package python3-guestfs")
    return Images(tmp_path_factory.mktemp("guest-images"))


class Unchanged:
    """Inputs whose sha256 must be the same after the test as when they were added."""

    def __init__(self) -> None:
        self.before: dict[Path, str] = {}

    def add(self, path: Path) -> Path:
        self.before[path] = sha256_file(path)
        return path

    def check(self) -> None:
        for path, digest in self.before.items():
            assert sha256_file(path) == digest, f"{path} was modified"


@pytest.fixture
def unchanged() -> Iterator[Unchanged]:
    recorder = Unchanged()
    yield recorder
    recorder.check()


@contextmanager
def opened(image: Path, work_drives: Sequence[Path] = ()) -> Iterator[Guest]:
    """open_guest, printing how long the launch and the discovery took."""
    started = time.monotonic()
    with open_guest(image, work_drives=work_drives) as guest:
        launched = time.monotonic()
        guest.layout()
        print(f"{image.name}: appliance {launched - started:.1f} s, discovery {time.monotonic() - launched:.1f} s")
        yield guest


def test_ostree_gpt_raw(images: Images, unchanged: Unchanged) -> None:
    disk, sysroot = images.ostree_gpt
    unchanged.add(disk)
    with opened(disk) as guest:
        info = guest.inspect()
        # the disk
        assert (info.format, info.partition_table, info.virtual_size) == ("raw", "gpt", disk.stat().st_size)
        plain = [(p.number, p.offset, p.length) for p in info.partitions if p.number is not None]
        assert plain == gi.sfdisk_parts(disk)
        assert info.esp is not None and (info.esp.device, info.esp.fstype) == ("/dev/sda1", "vfat")
        assert info.boot is not None and (info.boot.device, info.boot.uuid) == ("/dev/sda2", gi.BOOT_UUID)
        assert info.root.device == "/dev/sda3" and info.root.fstype == "ext4" and not info.root.lvm
        # the root partition's bytes really are at that offset: the ext4 magic and UUID are there
        assert info.root.offset is not None and info.root.uuid is not None
        with open(disk, "rb") as f:
            f.seek(info.root.offset + 1024 + 0x38)
            assert f.read(2) == b"\x53\xef"
            f.seek(info.root.offset + 1024 + 0x68)
            assert f.read(16).hex() == info.root.uuid.replace("-", "")
        # the deployments, in ostree's own order
        assert [(d.osname, d.checksum, d.serial) for d in info.deployments] == ostree_status(sysroot)
        assert info.ostree and info.deployment == info.deployments[0] and info.warnings == ()
        d = info.deployment
        assert d.ostree_arg == d.bls_options[-1].removeprefix("ostree=")
        assert re.fullmatch(r"/ostree/boot\.0/fakeos/[0-9a-f]{64}/[01]", d.ostree_arg)
        assert (sysroot / d.ostree_arg.lstrip("/")).resolve() == (sysroot / d.path.lstrip("/")).resolve()
        assert d.options == ("console=ttyS0",) and d.refspec == "fakeos/stable" and d.subbootversion == 1
        assert info.kernel == d.kernel and info.kernel.in_boot_fs and info.kernel.version == "6.1.0-2-amd64"
        assert info.kernel.fs_path == info.kernel.path.removeprefix("/boot")
        assert guest.tree().read_bytes(info.kernel.path) == (sysroot / info.kernel.path.lstrip("/")).read_bytes()
        assert info.os_release["ID"] == "fakeos" and info.arch == "x86_64"
        assert guest.boot_mountpoint is not None and guest.root_mountpoint != guest.boot_mountpoint
        # other choices, same appliance
        other = guest.inspect(deployment="other")
        assert other.deployment is not None and other.deployment.osname == "other"
        assert other.kernel.version == "6.1.0-3-amd64" and other.deployment.options == ("quiet",)
        oldest = guest.inspect(deployment=3)
        assert oldest.kernel.version == "6.1.0-1-amd64"
        assert guest.inspect(deployment=oldest.deployments[3].checksum[:7]).deployment == oldest.deployment
        with pytest.raises(DeploymentNotFound, match="available: 0: fakeos"):
            guest.inspect(deployment="rhel")
        with pytest.raises(KernelNotFound, match=r"not 6\.1\.0-3-amd64"):
            guest.inspect(kernel="6.1.0-3-amd64")
        json.dumps(info.to_dict())


def test_classic_mbr_qcow2_through_the_cli(
    images: Images, unchanged: Unchanged, capsys: pytest.CaptureFixture[str]
) -> None:
    qcow, raw = images.classic_mbr
    unchanged.add(qcow)
    assert cli.main(["inspect", "--kernel", "6.1.0-9-amd64", str(qcow)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    print(out)
    assert f"image:       {qcow} (qcow2, {raw.stat().st_size / (1 << 20):.1f} MiB, dos)" in out
    (_, o1, l1), (_, o2, l2), (_, o5, l5) = gi.sfdisk_parts(raw)
    assert re.search(rf"^  /dev/sda1 +ext4 .* BOOT +bytes {o1}\+{l1} +\[boot\]$", out, re.M)
    assert re.search(rf"^  /dev/sda2 +- .* bytes {o2}\+{l2}$", out, re.M)  # the extended partition
    assert re.search(rf"^  /dev/sda5 +ext4 .* root +bytes {o5}\+{l5} +\[root\]$", out, re.M)  # logical
    assert "os:          Debian GNU/Linux 12 (bookworm), x86_64" in out
    assert "/boot:       the /dev/sda1 filesystem" in out
    assert "kernels:     6.1.0-13-amd64, 6.1.0-9-amd64" in out
    assert "kernel:      /boot/vmlinuz-6.1.0-9-amd64 (6.1.0-9-amd64, 1.0 KiB)" in out
    assert "initramfs:   /boot/initrd.img-6.1.0-9-amd64" in out


def test_unpartitioned_ostree_fs_image_json(
    images: Images, unchanged: Unchanged, capsys: pytest.CaptureFixture[str]
) -> None:
    fs_image, sysroot = images.ostree_fs
    unchanged.add(fs_image)
    assert cli.main(["inspect", "--json", "--deployment", "other", str(fs_image)]) == cli.EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["partition_table"] is None and data["boot"] is None and data["esp"] is None
    assert data["root"] == data["partitions"][0]
    assert (data["root"]["device"], data["root"]["offset"], data["root"]["length"]) == ("/dev/sda", 0, 40 << 20)
    assert data["root"]["label"] == "Anaconda"
    assert [(d["osname"], d["checksum"], d["serial"]) for d in data["deployments"]] == ostree_status(sysroot)
    chosen = data["deployment"]
    assert chosen["osname"] == "other" and chosen["index"] == 1 and data["ostree_arg"] == chosen["ostree_arg"]
    kernel = data["kernel"]
    assert kernel["path"].startswith("/boot/ostree/other-") and kernel["path"].endswith("/vmlinuz-6.1.0-3-amd64")
    assert kernel["in_boot_fs"] is False and kernel["fs_path"] == kernel["path"]
    assert (sysroot / kernel["initramfs"].lstrip("/")).read_text() == "initramfs 6.1.0-3-amd64\n"


def test_lvm_xfs_with_a_work_drive(images: Images, unchanged: Unchanged, tmp_path: Path) -> None:
    lvm_disk, _, sysroot = images.lvm_and_btrfs
    unchanged.add(lvm_disk)
    work = tmp_path / "work.raw"
    with open(work, "wb") as f:
        f.truncate(64 << 20)
    with opened(lvm_disk, [work]) as guest:
        assert (guest.input_device, guest.work_devices) == ("/dev/sda", ("/dev/sdb",))
        info = guest.inspect()
        assert info.root.device == "/dev/atomicos/root" and info.root.fstype == "xfs" and info.root.lvm
        assert (info.root.offset, info.root.length, info.root.number) == (None, None, None)
        assert info.root.size > 300 << 20
        pv = next(p for p in info.partitions if p.fstype == "LVM2_member")
        assert pv.device == "/dev/sda2" and pv.offset == 17 << 20
        assert info.boot is not None and info.boot.device == "/dev/sda1"
        assert [(d.osname, d.checksum, d.serial) for d in info.deployments] == ostree_status(sysroot)
        assert info.kernel.in_boot_fs and info.arch == "x86_64"
        # the work drive is writable from the appliance; the input is not touched
        guest.g.mkfs("ext4", guest.work_devices[0], label="scratch")
    assert runner.run(["blkid", "-p", "-o", "value", "-s", "LABEL", str(work)]).stdout.strip() == "scratch"


def test_btrfs_subvolumes(images: Images, unchanged: Unchanged) -> None:
    _, btrfs_disk, _ = images.lvm_and_btrfs
    unchanged.add(btrfs_disk)
    with opened(btrfs_disk) as guest:
        info = guest.inspect()
        devices = [p.device for p in info.partitions]
        assert devices == ["/dev/sda1", "btrfsvol:/dev/sda1/root", "btrfsvol:/dev/sda1/home"]
        assert info.root.device == "btrfsvol:/dev/sda1/root" and info.root.subvolume == "root"
        assert info.root.offset is None and info.boot is None and not info.ostree
        assert [k.version for k in info.kernels] == ["6.1.0-13-amd64", "6.1.0-9-amd64"]
        assert info.kernel.path == "/boot/vmlinuz-6.1.0-13-amd64" and info.kernel.initramfs is not None
        assert info.os_release["ID"] == "debian"


def test_hostile_image(images: Images, unchanged: Unchanged) -> None:
    disk = images.hostile
    unchanged.add(disk)
    with opened(disk) as guest:
        layout = guest.layout()
        assert layout.root.device == "/dev/sda1"
        assert any("/dev/sda2" in w for w in layout.warnings)  # the corrupt one, reported, not fatal
        with pytest.raises(GuestPathEscapes) as info:
            guest.inspect()
        message = str(info.value)
        assert message.startswith(f"{disk}: ") and "\n" not in message
        assert re.search(r"symlink /ostree/boot\.1\.1/fedora/[0-9a-f]{64}/0 -> (\.\./)+etc points outside", message)
        assert not guest.tree().exists("/etc")  # the root has no /etc: nothing of the appliance leaks in


def test_corrupt_root(images: Images, unchanged: Unchanged) -> None:
    disk = images.corrupt
    unchanged.add(disk)
    with open_guest(disk) as guest, pytest.raises(UnreadableFilesystem) as info:
        guest.inspect()
    message = str(info.value)
    assert message.startswith(f"{disk}: no root filesystem among those readable, and some cannot be read: /dev/sda1")
    assert "\n" not in message


SAMPLE_VARIANTS = ("atomic", "atomic-xfs-lvm", "atomic-2deploy", "atomic-update", "classic")


def _sample(variant: str) -> Path:
    from tests.samples import sample_image

    return sample_image(variant)


def _ext4_uuid(image: Path, name: str) -> bytes:
    """The UUID in the superblock of the ext4 on partition ``name`` (16 bytes at 0x68 of the superblock)."""
    from tests.samples import partition

    with open(image, "rb") as f:
        f.seek(partition(image, name).offset + 1024 + 0x68)
        return f.read(16)


@pytest.mark.parametrize("variant", SAMPLE_VARIANTS)
def test_sample_images(variant: str, unchanged: Unchanged) -> None:
    need_module("guestfs", "the Debian package python3-guestfs")
    image = _sample(variant)
    unchanged.add(image)
    with opened(image) as guest:
        info = guest.inspect()
        print(info.summary())
        assert info.kernel.initramfs is not None and info.arch == "x86_64"
        assert info.os_release.get("ID") == "debian"
        if variant == "classic":
            assert not info.ostree
            return
        assert info.ostree and info.deployment is not None
        assert info.deployment.ostree_arg.startswith("/ostree/boot.")
        assert info.kernel.path.startswith("/boot/ostree/")
        if variant == "atomic-update":  # the upgrade is the default, the old commit the rollback
            assert len(info.deployments) == 2 and info.deployment.index == 0
            assert info.deployments[0].bootcsum == info.deployments[1].bootcsum
            library = "/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.1"  # the upgrade's new library version
            assert guest.tree().is_file(info.deployment.path + library)
            assert not guest.tree().exists(info.deployments[1].path + library)
            # Upgraded in place, as ostree admin upgrade does: the atomic sample's filesystems, not new ones.
            atomic = _sample("atomic")
            for name in ("boot", "root"):
                assert _ext4_uuid(image, name) == _ext4_uuid(atomic, name)
        if variant == "atomic-2deploy":
            assert len(info.deployments) == 2
            assert guest.inspect(deployment=1).deployment == info.deployments[1]
        if variant == "atomic-xfs-lvm":
            assert info.root.lvm and info.root.fstype == "xfs"
        else:
            assert info.root.fstype == "ext4" and info.root.offset is not None
