"""Module selection: what module-setup.sh says, and what the guest can install."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveimg.dracut.modules import ModuleChecker, parse_module_setup, scan_modules, select_modules
from liveimg.errors import InvalidImage
from liveimg.fsview import GuestTree, HostFS
from tests.dracut.fake_guest import MODULES, PROGRAMS, make_guest, module_setup

LORAX = ("livenet", "dmsquash-live", "dmsquash-live-ntfs", "convertfs", "pollcdrom", "qemu", "qemu-net")


def test_parse_only_what_is_unconditional() -> None:
    text = module_setup(
        "require_binaries ntfs-3g mount.ntfs || return 1\n"
        "    require_any_binary pigz gzip || return 1\n"
        "    [[ $hostonly ]] && require_binaries lvm\n"
        '    require_binaries "$systemdutildir"/systemd-foo\n'
        "    if [[ $x ]]; then\n        require_binaries cryptsetup || return 1\n    fi\n"
        "    require_binaries a || require_binaries b\n"
        "    return 255",
        'echo dm "rootfs-block img-lib"\n'
        "    is_qemu_virtualized && echo qemu-net\n"
        '    echo "kernel-network-modules $handler"\n'
        "    for m in a b; do\n        echo $m\n    done",
    )
    requires, depends = parse_module_setup(text)
    assert requires == (("ntfs-3g",), ("mount.ntfs",), ("pigz", "gzip"))
    assert depends == ("dm", "rootfs-block", "img-lib", "kernel-network-modules")


def test_parse_without_functions() -> None:
    assert parse_module_setup("#!/bin/sh\ninstall() { :; }\n") == ((), ())


def test_lorax_list_on_a_guest_without_ntfs_3g(tmp_path: Path) -> None:
    fs = GuestTree(HostFS(make_guest(tmp_path)))
    selection = select_modules(fs, wanted=LORAX, required=("dmsquash-live", "livenet"))
    assert selection.modules == ("dmsquash-live", "livenet", "convertfs", "pollcdrom", "qemu", "qemu-net")
    assert selection.left_out == (
        ("dmsquash-live-ntfs", "module dmsquash-live-ntfs needs ntfs-3g, which the image lacks (package ntfs-3g)"),
    )


def test_dracut_ng_module_names(tmp_path: Path) -> None:
    fs = GuestTree(HostFS(make_guest(tmp_path, prefix="70", programs=(*PROGRAMS, "ntfs-3g"))))
    modules = scan_modules(fs)
    assert modules["dmsquash-live"].directory == "/usr/lib/dracut/modules.d/70dmsquash-live"
    selection = select_modules(fs, wanted=LORAX, required=("dmsquash-live", "livenet"))
    assert "dmsquash-live-ntfs" in selection.modules and not selection.left_out


def test_missing_live_modules_name_the_package(tmp_path: Path) -> None:
    modules = {k: v for k, v in MODULES.items() if k not in ("dmsquash-live", "livenet", "dmsquash-live-ntfs")}
    fs = GuestTree(HostFS(make_guest(tmp_path, modules=modules)))
    with pytest.raises(InvalidImage, match="no dracut module dmsquash-live") as info:
        select_modules(fs, wanted=LORAX, required=("dmsquash-live", "livenet"))
    assert info.value.hint == "install dracut-live in the image"


def test_missing_network_modules_name_dracut_network(tmp_path: Path) -> None:
    modules = {k: v for k, v in MODULES.items() if k not in ("network", "url-lib")}
    fs = GuestTree(HostFS(make_guest(tmp_path, modules=modules)))
    with pytest.raises(InvalidImage) as info:
        select_modules(fs, wanted=(), required=("dmsquash-live", "livenet"))
    assert "livenet depends on network" in str(info.value)
    assert info.value.hint == "install dracut-network in the image"


def test_missing_program_of_a_dependency(tmp_path: Path) -> None:
    fs = GuestTree(HostFS(make_guest(tmp_path, programs=tuple(p for p in PROGRAMS if p != "curl"))))
    with pytest.raises(InvalidImage, match=r"module url-lib needs curl.*livenet depends on url-lib") as info:
        select_modules(fs, wanted=(), required=("livenet",))
    assert info.value.hint == "install curl in the image"


def test_ostree_module_required_on_ostree(tmp_path: Path) -> None:
    modules = {k: v for k, v in MODULES.items() if k != "ostree"}
    fs = GuestTree(HostFS(make_guest(tmp_path, modules=modules)))
    with pytest.raises(InvalidImage, match="no dracut module ostree") as info:
        select_modules(fs, wanted=(), required=("dmsquash-live", "livenet", "ostree"))
    assert "ostree-boot (Debian) or ostree (Fedora)" in str(info.value.hint)


def test_no_dracut_modules_at_all(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    with pytest.raises(InvalidImage, match="no dracut modules"):
        select_modules(GuestTree(HostFS(tmp_path)), wanted=LORAX, required=("dmsquash-live",))


def test_dependency_cycles_terminate(tmp_path: Path) -> None:
    modules = {"a": ("return 0", "echo b"), "b": ("return 0", "echo a"), "c": ("return 0", "echo a missing")}
    checker = ModuleChecker(GuestTree(HostFS(make_guest(tmp_path, modules=modules))))
    assert checker.problem("a") is None
    problem = checker.problem("c")
    assert problem is not None and problem.reason == "the image has no dracut module missing; c depends on missing"


def test_programs_found_through_guest_symlinks(tmp_path: Path) -> None:
    root = make_guest(tmp_path, programs=tuple(p for p in PROGRAMS if p != "dmsetup"))
    # /usr/sbin/dmsetup -> /sbin/dmsetup.static: an absolute link resolved inside the guest.
    (root / "usr/sbin/dmsetup.static").write_text("#!/bin/sh\n")
    (root / "usr/sbin/dmsetup.static").chmod(0o755)
    (root / "usr/sbin/dmsetup").symlink_to("/sbin/dmsetup.static")
    assert ModuleChecker(GuestTree(HostFS(root))).problem("dm") is None
    (root / "usr/sbin/dmsetup.static").chmod(0o644)
    problem = ModuleChecker(GuestTree(HostFS(root))).problem("dm")
    assert problem is not None and "needs dmsetup" in problem.reason
    assert problem.package == "dmsetup (Debian) or device-mapper (Fedora)"


def test_a_program_linked_out_of_the_guest_does_not_count(tmp_path: Path) -> None:
    root = make_guest(tmp_path, programs=tuple(p for p in PROGRAMS if p != "curl"))
    (root / "usr/bin/curl").symlink_to("../../../../../../../usr/bin/curl")  # the host's curl
    problem = ModuleChecker(GuestTree(HostFS(root))).problem("url-lib")
    assert problem is not None and "needs curl" in problem.reason
