"""The dracut command line and the checks of the guest before dracut runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveimg.dracut.compress import Compression
from liveimg.dracut.plan import LIVE_FILESYSTEMS, OMIT_DRIVERS, DracutOptions, lorax_dracut_args, plan_dracut
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.fsview import GuestTree, HostFS
from tests.dracut.fake_guest import PROGRAMS, make_guest

KVER = "6.1.0-50-amd64"


def plan(root: Path, *, ostree: bool = True, **options: object) -> tuple[str, ...]:
    return plan_dracut(
        GuestTree(HostFS(root)),
        kver=KVER,
        ostree=ostree,
        options=DracutOptions(**options),  # type: ignore[arg-type]
        output="/run/liveimg/initramfs.cpio",
    ).argv


def test_lorax_defaults_with_ostree(tmp_path: Path) -> None:
    argv = plan(make_guest(tmp_path))
    assert argv == (
        "/usr/bin/dracut",
        "--nomdadmconf",
        "--nolvmconf",
        "--add",
        "dmsquash-live livenet ostree convertfs pollcdrom qemu qemu-net",
        "--no-hostonly",
        "--debug",
        "--no-early-microcode",
        "--filesystems",
        " ".join(LIVE_FILESYSTEMS),
        "--omit-drivers",
        " ".join(OMIT_DRIVERS),
        "--no-compress",
        "/run/liveimg/initramfs.cpio",
        KVER,
    )


def test_reproducible_when_the_guest_s_dracut_takes_it(tmp_path: Path) -> None:
    """A dracut that names --reproducible gets it, before the defaults and what replaces them."""
    root = make_guest(tmp_path)
    (root / "usr/bin/dracut").write_text("#!/bin/bash\n# --reproducible) reproducible_l=yes ;;\n")
    assert plan(root)[:4] == ("/usr/bin/dracut", "--nomdadmconf", "--nolvmconf", "--reproducible")
    replaced = plan(root, dracut_args=("--add livenet", "--no-reproducible"))
    assert replaced[3] == "--reproducible" and replaced.index("--no-reproducible") > 3  # the caller's wins


def test_all_drivers_is_lorax_s_command_line(tmp_path: Path) -> None:
    argv = plan(make_guest(tmp_path), all_drivers=True)
    assert "--filesystems" not in argv and "--omit-drivers" not in argv
    assert argv[5:9] == ("--no-hostonly", "--debug", "--no-early-microcode", "--no-compress")


def test_the_slim_lists_are_what_dracut_reads() -> None:
    # dracut rewrites the first "-" of --omit-drivers to "_" and anchors each word: plain names, no blanks.
    for name in (*LIVE_FILESYSTEMS, *OMIT_DRIVERS):
        assert name and "-" not in name and not any(c.isspace() for c in name), name
    # What a live boot mounts is never left out.
    assert {"squashfs", "ext4", "overlay", "iso9660"} <= set(LIVE_FILESYSTEMS)


def test_classic_image_has_no_ostree_module(tmp_path: Path) -> None:
    argv = plan(make_guest(tmp_path, programs=(*PROGRAMS, "ntfs-3g")), ostree=False)
    assert argv[4] == "dmsquash-live livenet dmsquash-live-ntfs convertfs pollcdrom qemu qemu-net"


def test_add_omit_and_extra_args(tmp_path: Path) -> None:
    argv = plan(
        make_guest(tmp_path),
        add_modules=("crypt",),
        omit_modules=("pollcdrom",),
        extra_args=("--kernel-cmdline", "rd.debug"),
    )
    assert argv[3:5] == ("--add", "dmsquash-live livenet ostree convertfs qemu qemu-net crypt")
    assert argv[12:16] == ("--omit", "pollcdrom", "--kernel-cmdline", "rd.debug")


def test_lorax_dracut_arg_replaces_the_defaults(tmp_path: Path) -> None:
    assert lorax_dracut_args(["--add livenet nfs", "--no-hostonly", "--xz"]) == [
        "--add",
        "livenet nfs",
        "--no-hostonly",
        "--xz",
    ]
    argv = plan(make_guest(tmp_path), dracut_args=("--add livenet dmsquash-live nfs", "--no-hostonly", "--xz"))
    # --xz is dropped (the host compresses); the lorax prefix and --no-compress stay.
    assert argv == (
        "/usr/bin/dracut",
        "--nomdadmconf",
        "--nolvmconf",
        "--add",
        "livenet dmsquash-live nfs",
        "--no-hostonly",
        "--no-compress",
        "/run/liveimg/initramfs.cpio",
        KVER,
    )


def test_no_dracut(tmp_path: Path) -> None:
    root = make_guest(tmp_path, programs=tuple(p for p in PROGRAMS if p != "dracut"))
    with pytest.raises(InvalidImage, match="the image has no dracut") as info:
        plan(root)
    assert "dracut-live" in str(info.value.hint)


def test_no_kernel_modules_for_the_version(tmp_path: Path) -> None:
    root = make_guest(tmp_path, kvers=("6.1.0-49-amd64", "6.1.0-48-amd64"))
    with pytest.raises(InvalidImage, match=f"no kernel modules for {KVER}.*it has: 6.1.0-48-amd64, 6.1.0-49-amd64"):
        plan(root)
    with pytest.raises(InvalidOptions, match="not valid"):
        plan_dracut(GuestTree(HostFS(root)), kver="../../etc", ostree=False, options=DracutOptions(), output="/x")


def test_kernel_modules_in_lib(tmp_path: Path) -> None:
    root = make_guest(tmp_path, kvers=())
    (root / "lib").unlink()
    (root / "lib/modules" / KVER).mkdir(parents=True)
    assert plan(root)[-1] == KVER


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"add_modules": ("a b",)}, "not valid"),
        ({"add_modules": ("x",), "omit_modules": ("x",)}, "both added and omitted"),
        ({"omit_modules": ("livenet",)}, "a live initramfs needs them"),
        ({"dracut_conf": Path("/nonexistent.conf")}, "does not exist"),
        ({"dracut_args": ("--add x",), "add_modules": ("y",)}, "replace the default arguments"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        DracutOptions(**options)  # type: ignore[arg-type]


def test_conf_name(tmp_path: Path) -> None:
    conf = tmp_path / "nfs"
    conf.write_text('add_dracutmodules+=" nfs "\n')
    result = plan_dracut(
        GuestTree(HostFS(make_guest(tmp_path / "g"))),
        kver=KVER,
        ostree=False,
        options=DracutOptions(dracut_conf=conf, compression=Compression.GZIP),
        output="/x",
    )
    assert result.conf_name == "99-liveimg-nfs.conf"
