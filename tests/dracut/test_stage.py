"""Pieces of the stage that need no guest: the device nodes dracut cannot make in the sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.dracut.compress import Compression
from liveimg.dracut.cpio import Kind
from liveimg.dracut.initramfs import Initramfs, newc_index
from liveimg.dracut.plan import DracutOptions, Where
from liveimg.dracut.sandbox import sandbox_available
from liveimg.dracut.stage import DEVICE_NODES, add_device_nodes, build_initramfs
from liveimg.errors import HostError, InvalidImage, InvalidOptions
from tests.dracut.fake_guest import dracut_guest
from tests.support import need, unavailable

KVER = "6.1.0-50-amd64"


def test_device_nodes_join_the_main_archive(tmp_path: Path) -> None:
    need("cpio")
    tree = tmp_path / "tree"
    (tree / "dev").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/sh").write_text("#!/bin/sh\n")
    names = "\n".join(["dev", "usr", "usr/bin", "usr/bin/sh"]) + "\n"
    raw = tmp_path / "raw.cpio"
    # As dracut does: GNU cpio, newc, owner root, inodes renumbered.
    runner.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0", "--reproducible", "-O", os.fspath(raw)],
               input=names.encode(), cwd=tree)  # fmt: skip
    before = newc_index(raw)
    assert add_device_nodes(raw) == tuple(p for p, _, _ in DEVICE_NODES)
    after = newc_index(raw)
    assert after.names[: len(before.names)] == before.names
    assert after.max_ino == before.max_ino + len(DEVICE_NODES)
    with Initramfs(raw) as ird:
        assert len(ird.segments) == 1 and ird.segments[0].archives == 1
        console = ird.files()["dev/console"]
        assert (console.kind, console.rdev, console.mode) == (Kind.CHAR, (5, 1), 0o644)
        assert ird.read("usr/bin/sh") == b"#!/bin/sh\n"
    listing = runner.run(["cpio", "-t", "-v", "--quiet", "-I", os.fspath(raw)]).stdout
    assert "1,   3" in listing and "dev/null" in listing
    assert add_device_nodes(raw) == ()  # nothing left to add


# --- the whole stage with a stand-in dracut ------------------------------------------------
# The real dracut runs in tests/integration/test_dracut.py; here a busybox script plays it, so
# that the stage's own work (sandbox mounts, output, log, device nodes, configuration file,
# host compression, the check of the result) is tested in seconds.


@pytest.fixture
def fake_guest(tmp_path: Path) -> Path:
    need("busybox")
    if not sandbox_available()[0]:
        unavailable(sandbox_available()[1])
    return dracut_guest(tmp_path / "guest")


def test_stage_with_a_stand_in_dracut(fake_guest: Path, tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    (boot / "ostree/os-1").mkdir(parents=True)
    conf = tmp_path / "extra.conf"
    conf.write_text('add_dracutmodules+=" nfs "\n')
    out = tmp_path / "out"
    out.mkdir()
    options = DracutOptions(compression=Compression.GZIP, dracut_conf=conf)
    initrd = build_initramfs(tree=fake_guest, boot=boot, kver=KVER, output=out / "initrd.img", options=options)
    assert initrd.where is Where.SANDBOX
    assert initrd.modules == ("dmsquash-live", "livenet", "ostree", "convertfs", "pollcdrom", "qemu", "qemu-net")
    assert [m for m, _ in initrd.left_out] == ["dmsquash-live-ntfs"]
    assert initrd.log == out / "initrd.img.dracut.log"
    assert initrd.log.read_text().startswith("fake dracut --nomdadmconf --nolvmconf --add dmsquash-live ")
    assert initrd.path.stat().st_mode & 0o777 == 0o644
    with Initramfs(initrd.path) as ird:
        assert [s.compression for s in ird.segments] == ["gzip"]
        assert ird.read("etc/seen.conf") == conf.read_bytes()  # copied into /etc/dracut.conf.d
        assert ird.read("etc/seen-boot") == b"ostree\n"  # the physical /boot, shown at /boot
        assert ird.files()["dev/console"].rdev == (5, 1)
    assert (fake_guest / "etc/dracut.conf.d/99-liveimg-extra.conf").is_file()
    assert not list(out.glob(".liveimg-*"))


def test_stage_refuses_a_result_without_the_live_tools(fake_guest: Path, tmp_path: Path) -> None:
    (fake_guest / "etc/fake-omit-livenet").write_text("")
    with pytest.raises(InvalidImage, match=r"lacks livenetroot \(module livenet\)"):
        build_initramfs(tree=fake_guest, kver=KVER, output=tmp_path / "initrd.img")
    assert not (tmp_path / "initrd.img").exists()
    assert (tmp_path / "initrd.img.dracut.log").is_file()


def test_stage_notices_a_missing_output(fake_guest: Path, tmp_path: Path) -> None:
    (fake_guest / "etc/fake-write-nothing").write_text("")
    with pytest.raises(HostError, match=r"wrote no initramfs\.cpio"):
        build_initramfs(tree=fake_guest, kver=KVER, output=tmp_path / "initrd.img")


def test_stage_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptions, match="either rootfs"):
        build_initramfs(kver=KVER, output=tmp_path / "x")
    with pytest.raises(InvalidOptions, match="output directory"):
        build_initramfs(tree=tmp_path, kver=KVER, output=tmp_path / "missing/x")
    with pytest.raises(InvalidOptions, match="give rootfs, not tree"):
        build_initramfs(tree=tmp_path, kver=KVER, output=tmp_path / "x", options=DracutOptions(where=Where.APPLIANCE))


def test_auto_falls_back_to_the_appliance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from liveimg.dracut import stage

    monkeypatch.setattr(stage, "sandbox_available", lambda: (False, "user namespaces are not available: test"))
    # The appliance is chosen; it needs the rootfs image rather than a tree.
    with pytest.raises(InvalidOptions, match="give rootfs, not tree"):
        build_initramfs(tree=tmp_path, kver=KVER, output=tmp_path / "x")


# --- liveimg's own writes into the guest tree and reads of what dracut left ----------------------


def test_dracut_conf_replaces_a_planted_link(tmp_path: Path) -> None:
    from liveimg.dracut.stage import write_in_tree

    canary = tmp_path / "canary"
    canary.write_text("host file\n")
    root = tmp_path / "root"
    (root / "etc/dracut.conf.d").mkdir(parents=True)
    (root / "etc/dracut.conf.d/99-liveimg-x.conf").symlink_to(canary)
    (root / "etc/elsewhere").symlink_to(tmp_path)  # a directory link on the way is resolved in the tree
    written = write_in_tree(root, "/etc/dracut.conf.d", "99-liveimg-x.conf", b"ours\n")
    assert written.read_bytes() == b"ours\n" and not written.is_symlink()
    assert canary.read_text() == "host file\n"
    written = write_in_tree(root, "/etc/elsewhere/sub", "f.conf", b"x")
    assert written == root / os.fspath(tmp_path).lstrip("/") / "sub/f.conf"  # inside the tree
    assert not (tmp_path / "sub").exists()


def test_output_left_as_a_link_is_refused(tmp_path: Path) -> None:
    from liveimg.dracut.stage import take_output

    canary = tmp_path / "canary"
    canary.write_text("host file\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "initramfs.cpio").symlink_to(canary)
    with pytest.raises(InvalidImage, match="not a plain file"):
        take_output(out, "initramfs.cpio", tmp_path / "raw")
    os.link(canary, out / "hard")
    with pytest.raises(InvalidImage, match="not a plain file"):
        take_output(out, "hard", tmp_path / "raw")
    with pytest.raises(HostError, match="wrote no missing"):
        take_output(out, "missing", tmp_path / "raw")
    (out / "good").write_bytes(b"070701")
    take_output(out, "good", tmp_path / "raw")
    assert (tmp_path / "raw").read_bytes() == b"070701" and canary.read_text() == "host file\n"
