"""The registry of live layouts: liveimg's three, by the names --rootfs-type has always taken."""

from __future__ import annotations

import pytest

from liveimg import cli
from liveimg.errors import InvalidOptions
from liveimg.layouts import LAYOUTS, ErofsExt4, SquashfsExt4, SquashfsFlat, get_layout
from liveimg.options import BuildOptions, RootfsType


def test_liveimgs_layouts_by_name_the_default_first() -> None:
    assert {"squashfs-ext4": SquashfsExt4, "squashfs": SquashfsFlat, "erofs": ErofsExt4} == LAYOUTS
    assert list(LAYOUTS) == [t.value for t in RootfsType]
    assert BuildOptions().rootfs_type == next(iter(LAYOUTS))


def test_each_build_gets_its_own_layout() -> None:
    assert get_layout("erofs") is not get_layout("erofs")


def test_an_unknown_name_is_an_invalid_option() -> None:
    with pytest.raises(InvalidOptions) as excinfo:
        get_layout("iso")
    assert excinfo.value.hint == "choose one of squashfs-ext4, squashfs, erofs"


def test_the_layouts_say_what_the_manifest_and_the_boot_line_name() -> None:
    described = {n: (c.file_name, c.rootfs_image, c.packer, c.reads_guest) for n, c in LAYOUTS.items()}
    assert described == {
        "squashfs-ext4": ("live-rootfs.squashfs.img", "LiveOS/rootfs.img", "squashfs", False),
        "squashfs": ("live-rootfs.squashfs.img", None, "squashfs", True),
        "erofs": ("live-rootfs.erofs.img", "LiveOS/rootfs.img", "erofs", False),
    }
    assert [h.point for h in SquashfsFlat.hooks] == ["pre-mount"]
    assert ErofsExt4.dracut_args == ("--add-drivers", "erofs")


def test_the_command_lines_choices_and_help_come_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--rootfs-type {squashfs-ext4,squashfs,erofs}" in text
    assert (
        "squashfs-ext4: LiveOS/rootfs.img inside the squashfs, as lorax does (default); squashfs: the root's tree "
        "itself, mounted under an overlay; erofs: LiveOS/rootfs.img inside an EROFS image (mkfs.erofs; the "
        "image's dracut must be dracut-ng)"
    ) in text
