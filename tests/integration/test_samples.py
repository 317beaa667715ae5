"""The sample images hold what an installer would have left, as independent tools see it.

virt-filesystems and libguestfs (not our code) list partitions, filesystems and LVs and read
the ostree layout; qemu-img checks the qcow2 output.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liveimg import run as runner
from tests import samples, support

OS_NAME = "debian-atomic"
HEX64 = re.compile(r"[0-9a-f]{64}")


def virt_filesystems(image: Path, fmt: str = "raw") -> list[dict[str, str]]:
    """``virt-filesystems --all --long --csv`` rows, keyed by column name."""
    support.need("virt-filesystems")
    out = runner.run(
        ["virt-filesystems", f"--format={fmt}", "-a", image, "--all", "--long", "--uuid", "--csv"],
        env=support.guestfs_env(),
        timeout=900,
    ).stdout
    return list(csv.DictReader(io.StringIO(out)))


@contextlib.contextmanager
def guest(image: Path, *mounts: tuple[str, str]) -> Iterator[Any]:
    """A read-only libguestfs handle on ``image`` with ``(device, mountpoint)`` mounted in order."""
    support.need_module("guestfs", "the Debian package python3-guestfs")
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    env = support.guestfs_env()
    g.set_backend(env.get("LIBGUESTFS_BACKEND", "direct"))
    g.set_backend_settings(support.accel().libguestfs_settings())
    g.add_drive_opts(os.fspath(image), format="raw", readonly=1)
    g.launch()
    try:
        for device, mountpoint in mounts:
            g.mount_ro(device, mountpoint)
        yield g
    finally:
        g.shutdown()
        g.close()


def bls_entries(g: Any) -> dict[str, dict[str, str]]:
    loader = g.readlink("/boot/loader")
    assert re.fullmatch(r"loader\.[01]", loader), loader
    return {name: samples.parse_bls(g.cat(f"/boot/loader/entries/{name}")) for name in g.ls("/boot/loader/entries")}


def check_ostree(g: Any, deployments: int, bootcsums: int | None = None) -> dict[str, str]:
    """Check the ostree layout under / (physical root) and /boot; return {bootcsum: deployment dir}.

    ``bootcsums``: how many distinct boot checksums the deployments have (default: one each).
    """
    deploy_dir = f"/ostree/deploy/{OS_NAME}/deploy"
    deployed = sorted(n for n in g.ls(deploy_dir) if g.is_dir(f"{deploy_dir}/{n}"))
    assert len(deployed) == deployments, deployed
    for name in deployed:
        csum, serial = name.split(".")
        assert HEX64.fullmatch(csum) and serial.isdigit(), name
    # ostree/boot.N (a link to boot.N.M) holds <os>/<bootcsum>/<serial> links to the deployments.
    boot_n = [n for n in g.ls("/ostree") if re.fullmatch(r"boot\.[01]", n)]
    assert len(boot_n) == 1, g.ls("/ostree")
    links: dict[str, str] = {}
    for bootcsum in g.ls(f"/ostree/{boot_n[0]}/{OS_NAME}"):
        assert HEX64.fullmatch(bootcsum)
        for serial in g.ls(f"/ostree/{boot_n[0]}/{OS_NAME}/{bootcsum}"):
            target = g.readlink(f"/ostree/{boot_n[0]}/{OS_NAME}/{bootcsum}/{serial}")
            match = re.fullmatch(rf"\.\./\.\./\.\./deploy/{OS_NAME}/deploy/([0-9a-f]{{64}}\.\d+)", target)
            assert match and match.group(1) in deployed, target
            links[f"/ostree/{boot_n[0]}/{OS_NAME}/{bootcsum}/{serial}"] = match.group(1)
    assert len(links) == deployments
    # Every BLS entry names one of those links in ostree=, and its kernel and initramfs sit in
    # /boot/ostree/<os>-<bootcsum>/ for the same boot checksum.
    entries = bls_entries(g)
    assert len(entries) == deployments, entries
    by_bootcsum: dict[str, str] = {}
    for entry in entries.values():
        options = entry["options"].split()
        ostree_args = [o.removeprefix("ostree=") for o in options if o.startswith("ostree=")]
        assert len(ostree_args) == 1, options
        assert ostree_args[0] in links, (ostree_args, links)
        bootcsum = ostree_args[0].split("/")[4]
        for key in ("linux", "initrd"):
            assert entry[key].startswith(f"/ostree/{OS_NAME}-{bootcsum}/"), entry
            assert g.is_file("/boot" + entry[key])
        assert "console=ttyS0,115200" in options and "rw" in options
        by_bootcsum[bootcsum] = links[ostree_args[0]]
    assert len(by_bootcsum) == (deployments if bootcsums is None else bootcsums)
    # Each deployment is a Debian system with the sample's configuration.
    for name in deployed:
        root = f"{deploy_dir}/{name}"
        assert g.cat(f"{root}/etc/hostname").strip() == "liveimg-sample"
        assert g.cat(f"{root}/etc/fstab").strip() == ""  # nothing mounts /boot, as in the seed's kickstart
        shadow = {line.split(":")[0]: line.split(":")[1] for line in g.cat(f"{root}/etc/shadow").splitlines()}
        assert shadow["root"].startswith("$"), "root has a password"
        assert g.is_symlink(f"{root}/etc/systemd/system/multi-user.target.wants/liveimg-sample-ready.service")
        kvers = g.ls(f"{root}/usr/lib/modules")
        assert len(kvers) == 1
        for name_ in ("vmlinuz", "initramfs.img"):
            assert g.is_file(f"{root}/usr/lib/modules/{kvers[0]}/{name_}")
        for module in ("90dmsquash-live", "90livenet", "40network", "35network-legacy", "98ostree"):
            assert g.is_dir(f"{root}/usr/lib/dracut/modules.d/{module}"), module
        for program in ("curl", "ostree", "dhclient", "findmnt"):
            assert g.glob_expand(f"{root}/usr/*bin/{program}"), program
        assert not g.glob_expand(f"{root}/usr/*bin/ntfs-3g")  # liveimg must cope without it
    return by_bootcsum


def by_type(rows: list[dict[str, str]], kind: str) -> dict[str, dict[str, str]]:
    return {row["Name"]: row for row in rows if row["Type"] == kind}


def test_atomic_partitions_and_filesystems(atomic_image: Path) -> None:
    rows = virt_filesystems(atomic_image)
    assert list(by_type(rows, "device")) == ["/dev/sda"]
    assert sorted(by_type(rows, "partition")) == ["/dev/sda1", "/dev/sda2", "/dev/sda3"]
    fs = by_type(rows, "filesystem")
    assert (fs["/dev/sda2"]["VFS"], fs["/dev/sda2"]["Label"]) == ("ext4", "boot")
    assert (fs["/dev/sda3"]["VFS"], fs["/dev/sda3"]["Label"]) == ("ext4", "root")
    assert by_type(rows, "lv") == {}
    meta = samples.manifest(atomic_image)
    assert fs["/dev/sda3"]["UUID"] == meta["root_fs_uuid"]
    assert fs["/dev/sda2"]["UUID"] == meta["boot_fs_uuid"]
    # sparse: far less allocated than its size
    st = atomic_image.stat()
    assert st.st_blocks * 512 < st.st_size * 0.7


def test_atomic_ostree_layout(atomic_image: Path) -> None:
    with guest(atomic_image, ("/dev/sda3", "/"), ("/dev/sda2", "/boot")) as g:
        deployments = check_ostree(g, 1)
        entry = next(iter(bls_entries(g).values()))
        uuid = g.vfs_uuid("/dev/sda3")
        assert f"root=UUID={uuid}" in entry["options"].split()
        assert g.is_dir("/ostree/repo/objects")
        assert len(deployments) == 1


def test_twodeploy_has_two_boot_checksums(twodeploy_image: Path) -> None:
    with guest(twodeploy_image, ("/dev/sda3", "/"), ("/dev/sda2", "/boot")) as g:
        deployments = check_ostree(g, 2)
        assert len(set(deployments.values())) == 2
        generations = {
            g.cat(f"/ostree/deploy/{OS_NAME}/deploy/{d}/usr/lib/liveimg-sample/generation").strip()
            for d in deployments.values()
        }
        assert generations == {"1", "2"}


def test_update_default_deployment_holds_the_upgrade(update_image: Path, atomic_image: Path, tmp_path: Path) -> None:
    """The upgraded commit is the default deployment, the atomic sample's commit the rollback."""
    update = samples.manifest(update_image)["update"]
    assert update["changed_bytes"] + update["added_bytes"] > 2 * 1024 * 1024  # a package upgrade's worth
    with guest(update_image, ("/dev/sda3", "/"), ("/dev/sda2", "/boot")) as g:
        check_ostree(g, 2, bootcsums=1)  # the kernel and initramfs did not change
        entries = sorted(bls_entries(g).values(), key=lambda e: int(e["version"]), reverse=True)
        links = [
            next(o for o in e["options"].split() if o.startswith("ostree=")).removeprefix("ostree=") for e in entries
        ]
        # The default entry (highest version) and the rollback, as deployment directories.
        default, rollback = (g.realpath(link) for link in links)
        assert g.cat(f"{default}/usr/lib/liveimg-sample/generation") == "2\n"
        assert g.cat(f"{rollback}/usr/lib/liveimg-sample/generation") == "1\n"
        for item in update["changed"]:
            assert g.filesize(default + item["path"]) == item["new_bytes"], item
            assert g.filesize(rollback + item["path"]) == item["old_bytes"], item
            if item["new_bytes"] > 4096:
                assert g.checksum("sha256", default + item["path"]) != g.checksum("sha256", rollback + item["path"])
        for item in update["added"]:
            assert g.filesize(default + item["path"]) == item["bytes"] and not g.exists(rollback + item["path"])
        for item in update["removed"]:
            assert not g.exists(default + item["path"]) and g.filesize(rollback + item["path"]) == item["bytes"]
        assert g.readlink(f"{default}/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0") == "libapt-pkg.so.6.0.1"
        library = "/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0"
        rollback_library = g.checksum("sha256", rollback + library)
    # The rollback is the atomic sample's tree: the same bytes where the upgrade changed them.
    root = samples.partition(atomic_image, "root")
    deploy_dir = f"/ostree/deploy/{OS_NAME}/deploy"
    (atomic_deployment,) = [n for n in samples.list_dir(atomic_image, root, deploy_dir) if not n.endswith(".origin")]
    copy = samples.dump_file(atomic_image, root, f"{deploy_dir}/{atomic_deployment}{library}", tmp_path / "lib")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == rollback_library


def test_xfs_lvm_layout(xfs_lvm_image: Path) -> None:
    # One appliance for the listing and the layout: libguestfs's LVM and filesystem calls are
    # what virt-filesystems prints.
    with guest(xfs_lvm_image) as g:
        assert g.lvs() == ["/dev/atomicos/root"]
        assert g.vgs() == ["atomicos"]
        pvs = g.pvs()
        assert len(pvs) == 1 and pvs[0].endswith("3")  # libguestfs may name the PV's disk sdb
        assert (g.vfs_type("/dev/atomicos/root"), g.vfs_label("/dev/atomicos/root")) == ("xfs", "root")
        assert g.vfs_type("/dev/sda2") == "ext4"
        g.mount_ro("/dev/atomicos/root", "/")
        g.mount_ro("/dev/sda2", "/boot")
        check_ostree(g, 1)
        options = next(iter(bls_entries(g).values()))["options"].split()
        assert "root=/dev/mapper/atomicos-root" in options
        assert "rd.lvm.lv=atomicos/root" in options


def test_classic_layout(classic_image: Path) -> None:
    with guest(classic_image) as g:
        assert g.list_partitions() == ["/dev/sda1", "/dev/sda2"]
        assert g.vfs_type("/dev/sda2") == "ext4"
        uuid = g.vfs_uuid("/dev/sda2")
        g.mount_ro("/dev/sda2", "/")
        kvers = g.ls("/usr/lib/modules")
        assert len(kvers) == 1
        assert g.is_file(f"/boot/vmlinuz-{kvers[0]}") and g.is_file(f"/boot/initrd.img-{kvers[0]}")
        assert not g.exists("/ostree")
        assert g.cat("/etc/fstab").split()[:2] == [f"UUID={uuid}", "/"]
        assert f"root=UUID={uuid}" in g.cat("/etc/kernel/cmdline").split()
        assert g.cat("/etc/hostname").strip() == "liveimg-sample"
        assert not g.exists("/usr/bin/cloud-init")  # too slow under TCG: see README-samples.md


def test_qcow2_output(atomic_image: Path, atomic_qcow2: Path) -> None:
    support.need("qemu-img")
    info = runner.run(["qemu-img", "info", "--output=json", atomic_qcow2]).stdout
    assert '"format": "qcow2"' in info
    assert f'"virtual-size": {atomic_image.stat().st_size}' in info
    runner.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", atomic_image, atomic_qcow2], timeout=600)
    assert samples.manifest(atomic_qcow2)["format"] == "qcow2"


@pytest.mark.parametrize("variant", ["atomic"])
def test_sample_is_cached(variant: str, atomic_image: Path) -> None:
    """A second request returns the same file at once, without rebuilding it."""
    before = atomic_image.stat().st_mtime_ns
    result = runner.run([os.fspath(samples.SCRIPT), "--variant", variant], timeout=120)
    assert result.seconds < 30
    assert Path(result.stdout.splitlines()[-1]) == atomic_image
    assert atomic_image.stat().st_mtime_ns == before
