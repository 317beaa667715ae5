"""ostree deployments over many layouts: hand-built (pyfakefs) and made by the real ostree CLI."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import GuestPathEscapes
from liveimg.fsview import GuestTree, HostFS
from liveimg.ostree.deployments import DeploymentNotFound, list_deployments, parse_ostree_arg, select_deployment
from tests.ostree.layouts import OSTREE_ENV, Sysroot, csum, symlink, write
from tests.support import need


@pytest.fixture
def sysroot(fs: object) -> Sysroot:
    return Sysroot.create(Path("/img"))


def test_one_deployment_on_a_separate_boot_partition(sysroot: Sysroot) -> None:
    ids = sysroot.add_deployment("fedora", "c1", version="1", options='root=UUID=1234 rw rootflags=ro x="a b" quiet')
    deployments, warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert warnings == []
    (d,) = deployments
    assert (d.index, d.osname, d.checksum, d.serial) == (0, "fedora", ids["checksum"], 0)
    assert (d.bootversion, d.subbootversion, d.bootcsum, d.bootserial) == (1, 1, ids["bootcsum"], 0)
    assert d.ostree_arg == f"/ostree/boot.1/fedora/{ids['bootcsum']}/0"
    assert d.path == ids["path"]
    assert d.options == ('x="a b"', "quiet")
    assert d.bls_options[-1] == f"ostree={d.ostree_arg}" and "rw" in d.bls_options
    assert d.refspec == "fedora:fedora/40/x86_64/silverblue" and d.container_image is None
    assert d.version == "1" and d.bls_entry == "/boot/loader.1/entries/ostree-1-fedora.conf"
    k = d.kernel
    assert k is not None and d.kver == "6.8.5-301.fc40.x86_64"
    assert k.path == f"/boot/ostree/fedora-{ids['bootcsum']}/vmlinuz-{d.kver}"
    assert k.initramfs == f"/boot/ostree/fedora-{ids['bootcsum']}/initramfs-{d.kver}.img"
    assert k.fs_path == f"/ostree/fedora-{ids['bootcsum']}/vmlinuz-{d.kver}" and k.in_boot_fs
    assert k.initramfs_fs_path == f"/ostree/fedora-{ids['bootcsum']}/initramfs-{d.kver}.img"
    assert k.size == len(f"kernel {d.kver}")


@pytest.mark.parametrize("separate_boot", [True, False])
@pytest.mark.parametrize("bootversion", [0, 1])
@pytest.mark.parametrize("subbootversion", [None, 0, 1])
def test_bootversions_and_boot_links(
    fs: object, separate_boot: bool, bootversion: int, subbootversion: int | None
) -> None:
    sysroot = Sysroot.create(Path("/img"), separate_boot=separate_boot)
    ids = sysroot.add_deployment(bootversion=bootversion, subbootversion=subbootversion)
    (d,), warnings = list_deployments(sysroot.tree(), boot_separate=separate_boot)
    assert warnings == []
    assert (d.bootversion, d.subbootversion) == (bootversion, subbootversion)
    assert d.ostree_arg == ids["ostree_arg"] and d.path == ids["path"]
    assert d.kernel is not None and d.kernel.in_boot_fs is separate_boot
    assert d.kernel.fs_path == (d.kernel.path[len("/boot") :] if separate_boot else d.kernel.path)


def test_two_kernels_the_lorax_too_many_roots_case(sysroot: Sysroot) -> None:
    old = sysroot.add_deployment(commit="old", kver="6.8.4-300.fc40.x86_64", version="1")
    new = sysroot.add_deployment(commit="new", kver="6.8.5-301.fc40.x86_64", version="2")
    deployments, warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert warnings == []
    assert [d.checksum for d in deployments] == [new["checksum"], old["checksum"]]
    assert [d.index for d in deployments] == [0, 1]
    assert select_deployment(deployments, None, "img").kver == "6.8.5-301.fc40.x86_64"
    assert select_deployment(deployments, 1, "img").checksum == old["checksum"]
    assert select_deployment(deployments, "1", "img").checksum == old["checksum"]
    assert select_deployment(deployments, old["checksum"][:8], "img").checksum == old["checksum"]
    assert select_deployment(deployments, f"{old['checksum']}.0", "img").checksum == old["checksum"]


def test_version_order_is_numeric_not_lexical(sysroot: Sysroot) -> None:
    for n in (9, 10, 2):
        sysroot.add_deployment(commit=f"c{n}", kver=f"6.{n}.0", version=str(n))
    deployments, _ = list_deployments(sysroot.tree(), boot_separate=True)
    assert [d.version for d in deployments] == ["10", "9", "2"]
    assert deployments[0].bls_entry.endswith("ostree-10-fedora.conf")


def test_serials_zero_and_one_of_one_commit(sysroot: Sysroot) -> None:
    """Two deployments of the same commit share a bootcsum: serials 0 and 1 (lorax sees only 0)."""
    bootcsum = csum("shared")
    a = sysroot.add_deployment(commit="same", serial=1, bootcsum=bootcsum, bootserial=1, version="2")
    b = sysroot.add_deployment(commit="same", serial=0, bootcsum=bootcsum, bootserial=0, version="1")
    deployments, warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert warnings == []
    assert [(d.serial, d.bootserial) for d in deployments] == [(1, 1), (0, 0)]
    assert deployments[0].path == a["path"] and deployments[1].path == b["path"]
    assert deployments[0].kernel == deployments[1].kernel
    assert select_deployment(deployments, a["checksum"][:10], "img").serial == 1  # same commit: the first


def test_several_operating_systems(sysroot: Sysroot) -> None:
    sysroot.add_deployment("fedora", "f2", version="3")
    c = sysroot.add_deployment("centos", "c1", version="2", origin="centos:centos/9/x86_64/edge")
    sysroot.add_deployment("fedora", "f1", version="1")
    deployments, _ = list_deployments(sysroot.tree(), boot_separate=True)
    assert [d.osname for d in deployments] == ["fedora", "centos", "fedora"]
    chosen = select_deployment(deployments, "centos", "img")
    assert chosen.checksum == c["checksum"] and chosen.index == 1 and chosen.refspec == "centos:centos/9/x86_64/edge"
    assert chosen.kernel is not None and chosen.kernel.path.startswith("/boot/ostree/centos-")


def test_missing_or_odd_origin(sysroot: Sysroot) -> None:
    a = sysroot.add_deployment(commit="a", origin=None, version="2")
    b = sysroot.add_deployment(commit="b", version="1")
    write(Path(sysroot.root / b["path"].lstrip("/")).with_name(Path(b["path"]).name + ".origin"), "garbage\n")
    deployments, warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert [d.refspec for d in deployments] == [None, None]
    assert any(a["path"] + ".origin is missing" in w for w in warnings)
    assert any("not a key file" in w for w in warnings)


def test_container_origin(sysroot: Sysroot) -> None:
    ids = sysroot.add_deployment(origin=None)
    origin = sysroot.root / (ids["path"].lstrip("/") + ".origin")
    write(origin, "[origin]\ncontainer-image-reference=ostree-unverified-registry:quay.io/fedora/fedora-bootc:40\n")
    (d,), _ = list_deployments(sysroot.tree(), boot_separate=True)
    assert d.refspec is None and d.container_image == "ostree-unverified-registry:quay.io/fedora/fedora-bootc:40"


def test_kernel_only_in_usr_lib_modules(sysroot: Sysroot) -> None:
    ids = sysroot.add_deployment(kernel_in_boot=False)
    (d,), warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert d.kernel is not None and not d.kernel.in_boot_fs
    assert d.kernel.path == f"{ids['path']}/usr/lib/modules/{ids['kver']}/vmlinuz"
    assert d.kernel.initramfs == f"{ids['path']}/usr/lib/modules/{ids['kver']}/initramfs.img"
    assert d.kernel.fs_path == d.kernel.path
    assert any("is missing" in w for w in warnings) and any("using" in w for w in warnings)


def test_no_kernel_anywhere(sysroot: Sysroot) -> None:
    sysroot.add_deployment(kernel_in_boot=False, kernel_in_modules=False)
    (d,), _ = list_deployments(sysroot.tree(), boot_separate=True)
    assert d.kernel is None and d.kver is None


def test_bootprefix_entries_when_boot_is_a_directory(fs: object) -> None:
    sysroot = Sysroot.create(Path("/img"), separate_boot=False)
    ids = sysroot.add_deployment()
    entry = sysroot.boot / "loader.1/entries/ostree-1-fedora.conf"
    entry.write_text(
        entry.read_text().replace("linux /ostree", "linux /boot/ostree").replace("rd /ostree", "rd /boot/ostree")
    )
    (d,), warnings = list_deployments(sysroot.tree(), boot_separate=False)
    assert warnings == [] and d.kernel is not None
    assert d.kernel.path == f"/boot/ostree/fedora-{ids['bootcsum']}/vmlinuz-{ids['kver']}"
    assert d.kernel.initramfs is not None


@pytest.mark.parametrize("boot_link", [True, False])
def test_bootprefix_entries_on_a_separate_boot(sysroot: Sysroot, boot_link: bool) -> None:
    ids = sysroot.add_deployment()
    if boot_link:
        symlink(sysroot.boot / "boot", ".")  # what ostree creates on a boot partition
    entry = sysroot.boot / "loader.1/entries/ostree-1-fedora.conf"
    entry.write_text(entry.read_text().replace(" /ostree/fedora-", " /boot/ostree/fedora-"))
    (d,), warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert warnings == [] and d.kernel is not None and d.kernel.in_boot_fs
    assert d.kernel.path == f"/boot/ostree/fedora-{ids['bootcsum']}/vmlinuz-{ids['kver']}"
    assert d.kernel.fs_path == f"/ostree/fedora-{ids['bootcsum']}/vmlinuz-{ids['kver']}"


def test_entries_that_are_not_deployments_or_broken(sysroot: Sysroot) -> None:
    good = sysroot.add_deployment(commit="good", version="1")
    entries = sysroot.boot / "loader.1/entries"
    write(entries / "classic.conf", "title Other\nversion 99\nlinux /vmlinuz-6\noptions root=/dev/sda1\n")
    write(entries / "ostree-5-gone.conf", "version 5\noptions ostree=/ostree/boot.1/gone/abc/0\nlinux /x/vmlinuz-1\n")
    write(entries / "ostree-4-bad.conf", "version 4\noptions ostree=/usr/bin\n")
    write(entries / "ostree-3-two.conf", "version 3\noptions ostree=/ostree/boot.1/a/b/0 ostree=/ostree/boot.1/c/d/0\n")
    write(entries / "ostree-2-other.conf", f"version 2\noptions ostree=/ostree/boot.0/fedora/{good['bootcsum']}/0\n")
    deployments, warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert [d.checksum for d in deployments] == [good["checksum"]]
    text = "\n".join(warnings)
    assert "ostree-5-gone.conf: ostree=/ostree/boot.1/gone/abc/0 does not lead to a deployment" in text
    assert "ostree-4-bad.conf: ostree=/usr/bin is not /ostree/boot.N" in text
    assert "several different ostree= arguments" in text
    assert "ostree-2-other.conf" in text  # boot.0 does not exist


def test_bootversion_mismatch_is_reported(sysroot: Sysroot) -> None:
    sysroot.add_deployment(bootversion=0)
    symlink(sysroot.boot / "loader", "loader.1")
    (sysroot.boot / "loader.1/entries").mkdir(parents=True)
    os.rename(sysroot.boot / "loader.0/entries/ostree-1-fedora.conf", sysroot.boot / "loader.1/entries/x.conf")
    (d,), warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert d.bootversion == 0 and any("not in boot.1, the current bootversion" in w for w in warnings)


def test_fallback_to_boot_links_without_entries(sysroot: Sysroot) -> None:
    a = sysroot.add_deployment(commit="a", kver="6.1", bootcsum=csum("x"))
    b = sysroot.add_deployment(commit="b", kver="6.2", bootcsum=csum("y"))
    for conf in (sysroot.boot / "loader.1/entries").iterdir():
        conf.unlink()
    deployments, warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert sorted(d.checksum for d in deployments) == sorted([a["checksum"], b["checksum"]])
    assert all(d.kernel is not None and not d.kernel.in_boot_fs for d in deployments)
    assert any("order (and so the default) is a guess" in w for w in warnings)


@pytest.mark.parametrize(
    ("where", "target"),
    [
        ("root/ostree/boot.1.1/fedora/{bootcsum}/0", "../../../../../../../../etc"),
        ("boot/loader", "../../../../etc"),
        ("boot/ostree/fedora-{bootcsum}/vmlinuz-{kver}", "../../../../../../secret"),
        ("root/ostree/boot.1", "../../../../.."),
    ],
)
def test_escaping_symlinks_are_errors(sysroot: Sysroot, where: str, target: str) -> None:
    ids = sysroot.add_deployment()
    path = Path("/img") / where.format(**ids)
    if path.exists() and not path.is_symlink():
        path.unlink()
    symlink(path, target)
    with pytest.raises(GuestPathEscapes, match="points outside the guest root"):
        list_deployments(sysroot.tree(), boot_separate=True)


def test_absolute_links_stay_in_the_image(sysroot: Sysroot) -> None:
    ids = sysroot.add_deployment()
    Path("/etc").mkdir(exist_ok=True)
    Path("/etc/shadow").write_text("host secret")
    origin = sysroot.root / (ids["path"].lstrip("/") + ".origin")
    origin.unlink()
    symlink(origin, "/etc/shadow")  # re-rooted: the image's /etc/shadow, which does not exist
    (d,), warnings = list_deployments(sysroot.tree(), boot_separate=True)
    assert d.refspec is None and any("does not exist" in w for w in warnings)


def test_selection_errors_list_what_exists(sysroot: Sysroot) -> None:
    sysroot.add_deployment(commit="a", version="2", bootcsum=csum("ka"))
    sysroot.add_deployment(commit="b", version="1", bootcsum=csum("kb"))
    deployments, _ = list_deployments(sysroot.tree(), boot_separate=True)
    with pytest.raises(DeploymentNotFound) as info:
        select_deployment(deployments, "rhel", "disk.qcow2")
    message = str(info.value)
    assert message.startswith("disk.qcow2: no deployment 'rhel'; available: 0: fedora ")
    assert "1: fedora " in message and "\n" not in message
    with pytest.raises(DeploymentNotFound, match="available"):
        select_deployment(deployments, 7, "img")


def test_ambiguous_checksum_prefix() -> None:
    from liveimg.ostree.deployments import Deployment

    def dep(i: int, checksum: str) -> Deployment:
        return Deployment(
            i, "os", checksum, 0, 1, 1, "b", 0, "/ostree/boot.1/os/b/0", "/p", None, (), (), None, None, "", None, None
        )

    deployments = [dep(0, "abcd1111"), dep(1, "abcd2222")]
    with pytest.raises(DeploymentNotFound, match="ambiguous"):
        select_deployment(deployments, "abcd", "img")
    assert select_deployment(deployments, "abcd2", "img").index == 1


def test_parse_ostree_arg() -> None:
    assert parse_ostree_arg("/ostree/boot.1/fedora/abc/0") == (1, "fedora", "abc", 0)
    with pytest.raises(ValueError, match=r"not /ostree/boot\.N"):
        parse_ostree_arg("/ostree/boot.1/fedora/abc")


# --- the real ostree CLI as the oracle ------------------------------------------------------

_STATUS = re.compile(r"^[* ] (\S+) ([0-9a-f]{64})\.([0-9]+)", re.MULTILINE)


def _commit_and_deploy(sysroot: Path, tree: Path, osname: str, ref: str, kver: str, *extra: str) -> None:
    (tree / f"usr/lib/modules/{kver}").mkdir(parents=True, exist_ok=True)
    (tree / f"usr/lib/modules/{kver}/vmlinuz").write_text(f"kernel {kver}")
    (tree / f"usr/lib/modules/{kver}/initramfs.img").write_text(f"initramfs {kver}")
    (tree / "usr/etc").mkdir(parents=True, exist_ok=True)
    (tree / "usr/lib/os-release").write_text(f'ID={osname}\nPRETTY_NAME="{osname} {kver}"\n')
    repo = f"--repo={sysroot}/ostree/repo"
    runner.run(["ostree", repo, "commit", f"--branch={ref}", f"--tree=dir={tree}", "--no-xattrs", "-s", kver])
    runner.run(["ostree", "admin", "deploy", f"--sysroot={sysroot}", f"--os={osname}", *extra, ref], env=OSTREE_ENV)


def test_agrees_with_ostree_admin_status(tmp_path: Path) -> None:
    """Two OSes, four deployments, deploy serials 0 and 1, boot.0 -> boot.0.1: the same list,
    in the same order, as ostree itself reports."""
    need("ostree")
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    runner.run(["ostree", "admin", "init-fs", str(sysroot)])
    for osname in ("fakeos", "other"):
        runner.run(["ostree", "admin", "os-init", f"--sysroot={sysroot}", osname])
    _commit_and_deploy(
        sysroot, tmp_path / "t1", "fakeos", "fakeos/stable", "6.1.0-1-amd64", "--karg=root=UUID=1", "--karg=rw"
    )
    _commit_and_deploy(sysroot, tmp_path / "t2", "fakeos", "fakeos/stable", "6.1.0-2-amd64")
    _commit_and_deploy(sysroot, tmp_path / "t3", "other", "other/stable", "6.1.0-3-amd64", "--karg=quiet")
    runner.run(
        ["ostree", "admin", "deploy", f"--sysroot={sysroot}", "--os=fakeos", "--retain", "fakeos/stable"],
        env=OSTREE_ENV,
    )
    status = runner.run(["ostree", "admin", "status", f"--sysroot={sysroot}"]).stdout
    expected = [(m.group(1), m.group(2), int(m.group(3))) for m in _STATUS.finditer(status)]
    assert len(expected) == 4

    deployments, warnings = list_deployments(GuestTree(HostFS(sysroot)), boot_separate=False)
    assert warnings == []
    assert [(d.osname, d.checksum, d.serial) for d in deployments] == expected
    assert {d.serial for d in deployments} == {0, 1}
    for d in deployments:
        assert d.kernel is not None and d.kernel.path.startswith(f"/boot/ostree/{d.osname}-{d.bootcsum}/vmlinuz-")
        assert d.refspec == f"{d.osname}/stable"
        assert Path(sysroot, d.ostree_arg.lstrip("/")).resolve() == Path(sysroot, d.path.lstrip("/")).resolve()
    assert deployments[0].subbootversion is not None
