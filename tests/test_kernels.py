"""Kernel discovery in classic roots: naming schemes, order, selection, hostile files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from liveimg.errors import GuestPathEscapes, InvalidImage
from liveimg.fsview import GuestTree, HostFS, MergedFS
from liveimg.kernels import (
    KernelNotFound,
    NoKernel,
    find_kernels,
    kernel_from_modules,
    kernel_in_boot,
    make_kernel,
    select_kernel,
    version_key,
)
from tests.ostree.layouts import symlink, write


def test_version_order_is_natural() -> None:
    versions = ["6.1.0-9-amd64", "6.1.0-13-amd64", "5.10.0-28-amd64", "6.10.0-1-amd64"]
    assert sorted(versions, key=version_key, reverse=True) == [
        "6.10.0-1-amd64",
        "6.1.0-13-amd64",
        "6.1.0-9-amd64",
        "5.10.0-28-amd64",
    ]


def test_debian_fedora_and_suse_names(fs: object) -> None:
    root = Path("/r")
    write(root / "boot/vmlinuz-6.1.0-13-amd64", "k13")
    write(root / "boot/initrd.img-6.1.0-13-amd64", "i13")
    write(root / "boot/vmlinuz-6.1.0-9-amd64", "k9")  # no initramfs
    write(root / "boot/vmlinuz-6.8.5-301.fc40.x86_64", "kf")
    write(root / "boot/initramfs-6.8.5-301.fc40.x86_64.img", "if")
    write(root / "boot/vmlinuz-5.14.21-default", "ks")
    write(root / "boot/initrd-5.14.21-default", "is")
    write(root / "boot/vmlinuz-0-rescue-0123456789abcdef", "rescue")
    write(root / "boot/.vmlinuz-6.8.5-301.fc40.x86_64.hmac", "hmac")
    write(root / "boot/vmlinuz-6.1.0-13-amd64.old", "old")
    symlink(root / "vmlinuz", "boot/vmlinuz-6.1.0-13-amd64")
    kernels = find_kernels(GuestTree(HostFS(root)), boot_separate=False)
    assert [k.version for k in kernels] == [
        "6.8.5-301.fc40.x86_64",
        "6.1.0-13-amd64",
        "6.1.0-9-amd64",
        "5.14.21-default",
    ]
    by = {k.version: k for k in kernels}
    assert by["6.1.0-13-amd64"].initramfs == "/boot/initrd.img-6.1.0-13-amd64"
    assert by["6.8.5-301.fc40.x86_64"].initramfs == "/boot/initramfs-6.8.5-301.fc40.x86_64.img"
    assert by["5.14.21-default"].initramfs == "/boot/initrd-5.14.21-default"
    assert by["6.1.0-9-amd64"].initramfs is None and by["6.1.0-9-amd64"].initramfs_size is None
    assert by["6.1.0-13-amd64"].size == 3 and by["6.1.0-13-amd64"].initramfs_size == 3
    assert select_kernel(kernels, None, "img").version == "6.8.5-301.fc40.x86_64"
    assert select_kernel(kernels, "6.1.0-9-amd64", "img").path == "/boot/vmlinuz-6.1.0-9-amd64"
    with pytest.raises(KernelNotFound, match=r"^img: no kernel 4\.0; available: 6\.8\.5-301"):
        select_kernel(kernels, "4.0", "img")


def test_separate_boot_paths_and_usr_lib_modules(fs: object) -> None:
    root, boot = Path("/r"), Path("/b")
    (root / "boot").mkdir(parents=True)
    write(boot / "vmlinuz-6.1.0-13-amd64", "k")
    write(root / "usr/lib/modules/6.1.0-13-amd64/initramfs.img", "i")  # initramfs beside the modules
    write(root / "usr/lib/modules/6.2.0-1-amd64/vmlinuz", "k2")  # kernel-install layout, nothing in /boot
    write(root / "usr/lib/modules/6.2.0-1-amd64/initramfs.img", "i2")
    (root / "usr/lib/modules/5.0-no-kernel").mkdir()
    tree = GuestTree(MergedFS({"/": HostFS(root), "/boot": HostFS(boot)}))
    kernels = find_kernels(tree, boot_separate=True)
    assert [k.version for k in kernels] == ["6.2.0-1-amd64", "6.1.0-13-amd64"]
    newest, older = kernels
    assert (newest.path, newest.in_boot_fs, newest.fs_path) == (
        "/usr/lib/modules/6.2.0-1-amd64/vmlinuz",
        False,
        newest.path,
    )
    assert (older.path, older.fs_path, older.in_boot_fs) == (
        "/boot/vmlinuz-6.1.0-13-amd64",
        "/vmlinuz-6.1.0-13-amd64",
        True,
    )
    assert (
        older.initramfs == "/usr/lib/modules/6.1.0-13-amd64/initramfs.img"
        and older.initramfs_fs_path == older.initramfs
    )


def test_no_kernel_is_a_clear_error(fs: object) -> None:
    (Path("/r/boot")).mkdir(parents=True)
    with pytest.raises(NoKernel, match=r"^img: no kernel found \(looked for /boot/vmlinuz-<kver> and"):
        select_kernel(find_kernels(GuestTree(HostFS("/r")), boot_separate=False), None, "img")


def test_hostile_kernel_files(fs: FakeFilesystem) -> None:
    root = Path("/r")
    write(root / "boot/vmlinuz-1.0", "k")
    os.symlink("/dev/zero", root / "boot/vmlinuz-2.0")  # re-rooted: the image has no /dev/zero
    fs.create_file(root / "dev/fifo", st_mode=stat.S_IFIFO | 0o644)
    os.symlink("../dev/fifo", root / "boot/vmlinuz-3.0")  # not a regular file: skipped
    assert [k.version for k in find_kernels(GuestTree(HostFS(root)), boot_separate=False)] == ["1.0"]
    fs.create_file(root / "boot/vmlinuz-4.0", st_size=600 << 20)  # absurd size
    with pytest.raises(InvalidImage, match="not a plausible kernel"):
        find_kernels(GuestTree(HostFS(root)), boot_separate=False)
    os.remove(root / "boot/vmlinuz-4.0")
    os.symlink("../../../../../secret", root / "boot/vmlinuz-5.0")
    with pytest.raises(GuestPathEscapes):
        find_kernels(GuestTree(HostFS(root)), boot_separate=False)


HOSTILE_VERSIONS = ["6.1$(reboot)", "6.1 && chain elsewhere", "6.1\nDEFAULT evil", "6.1'x", "-6.1", "${x}"]


def test_kernel_versions_that_are_not_plain_are_not_kernels(fs: object, caplog: pytest.LogCaptureFixture) -> None:
    """A version becomes file names, paths and boot configurations: the image cannot choose it freely."""
    root = Path("/r")
    write(root / "boot/vmlinuz-5.14.0-427.el9_4.x86_64+debug", "good")
    for bad in HOSTILE_VERSIONS:
        write(root / f"boot/vmlinuz-{bad}", "bad")
        write(root / f"usr/lib/modules/{bad}9/vmlinuz", "bad")  # "9": newer than anything
    tree = GuestTree(HostFS(root))
    assert [k.version for k in find_kernels(tree, boot_separate=False)] == ["5.14.0-427.el9_4.x86_64+debug"]
    # each said once (but "vmlinuz-6.1\nDEFAULT evil", which is not even a kernel's name: vmlinuz-<one line>)
    assert sum("plain" in r.getMessage() for r in caplog.records) == 2 * len(HOSTILE_VERSIONS) - 1
    assert all("\n" not in r.getMessage() for r in caplog.records)  # names are shown as repr()


def test_only_hostile_kernels_is_no_kernel(fs: object) -> None:
    root = Path("/r")
    write(root / "boot/vmlinuz-6.1;reboot", "bad")
    with pytest.raises(NoKernel):
        select_kernel(find_kernels(GuestTree(HostFS(root)), boot_separate=False), None, "img")


def test_a_boot_entry_naming_a_hostile_kernel(fs: object) -> None:
    root = Path("/r")
    write(root / "boot/ostree/os-abc/vmlinuz-6.1 && reboot", "k")
    kernel, why = kernel_in_boot(GuestTree(HostFS(root)), "/ostree/os-abc/vmlinuz-6.1 && reboot", None, False)
    assert kernel is None and why is not None and "not plain" in why
    kernel, why = kernel_in_boot(GuestTree(HostFS(root)), "/$(x)/linux", None, False)  # BLS type 1: <kver>/linux
    assert kernel is None and why is not None and "not plain" in why


@pytest.mark.parametrize("version", HOSTILE_VERSIONS)
def test_a_kernel_of_a_hostile_version_is_refused(fs: object, version: str) -> None:
    root = Path("/r")
    write(root / f"usr/lib/modules/{version}/vmlinuz", "k")
    tree = GuestTree(HostFS(root))
    assert kernel_from_modules(tree, "", None, False) is None  # listed: skipped
    with pytest.raises(InvalidImage, match=r"is not a plain version"):
        kernel_from_modules(tree, "", version, False)  # asked for: refused
    with pytest.raises(InvalidImage, match=r"is not a plain version"):
        make_kernel(tree, version, f"/usr/lib/modules/{version}/vmlinuz", None, boot_separate=False)
