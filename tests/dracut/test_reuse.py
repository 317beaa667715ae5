"""The initramfs cache: its key, the record of the root, and the stage skipping dracut on a hit."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from liveimg.cache import Cache
from liveimg.dracut import reuse
from liveimg.dracut.compress import Compression
from liveimg.dracut.plan import DracutOptions
from liveimg.dracut.sandbox import sandbox_available
from liveimg.dracut.stage import build_initramfs
from liveimg.fsview import GuestTree, HostFS
from liveimg.ramfloor import unpacked_bytes
from tests.dracut.fake_guest import dracut_guest, make_guest
from tests.support import need, unavailable

KVER = "6.1.0-50-amd64"
PARTS = reuse.KeyParts(kver=KVER, argv=("/usr/bin/dracut", "--add", "livenet", KVER), compression="zstd", level=1,
                       compress_command="zstd -1 -T2 -q -c", where="sandbox", source_date_epoch="17")  # fmt: skip


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    root = make_guest(tmp_path / "guest")
    (root / "usr/lib/modules" / KVER / "kernel/squashfs.ko").write_bytes(b"module v1")
    (root / "usr/lib/libc.so.6").write_bytes(b"libc v1")
    (root / "usr/lib/libz.so.1").symlink_to("libz.so.1.2.13")
    (root / "etc/dracut.conf.d").mkdir()
    return root


def key(root: Path, parts: reuse.KeyParts = PARTS) -> str:
    return reuse.cache_key(GuestTree(HostFS(root)), parts)


def test_the_key_is_stable_and_names_each_input(guest: Path) -> None:
    first = key(guest)
    assert key(guest) == first and len(first) == 64
    assert key(guest, dataclasses.replace(PARTS, argv=(*PARTS.argv[:3], "--omit", "nfs", KVER))) != first
    assert key(guest, dataclasses.replace(PARTS, level=19)) != first
    assert key(guest, dataclasses.replace(PARTS, source_date_epoch=None)) != first
    (guest / "usr/lib/modules" / KVER / "kernel/squashfs.ko").write_bytes(b"module v2")  # a changed module
    second = key(guest)
    assert second != first
    (guest / "etc/dracut.conf.d/50-more.conf").write_text('add_drivers+=" nvme "\n')  # a new configuration
    third = key(guest)
    assert third != second
    (guest / "usr/lib/dracut/modules.d/90livenet/module-setup.sh").write_text("check() { return 0; }\n")
    assert key(guest) != third
    # What dracut may copy from elsewhere is the record's business, not the key's.
    (guest / "usr/lib/libc.so.6").write_bytes(b"libc v2")
    assert key(guest) == key(guest)


def test_the_record_holds_until_what_dracut_copied_changes(guest: Path) -> None:
    tree = GuestTree(HostFS(guest))
    copied = ["usr/lib/libc.so.6", "usr/lib/libz.so.1", "usr/bin/curl", "etc/initrd-release"]  # the last: made
    record = reuse.root_record(tree, copied)
    assert record["paths"]["/usr/lib/libz.so.1"] == "l:libz.so.1.2.13"
    assert record["paths"]["/etc/initrd-release"] == "-"
    assert reuse.record_holds(tree, record) is None
    (guest / "usr/lib/libc.so.6").write_bytes(b"libc v2")  # a changed file dracut copied
    assert reuse.record_holds(tree, record) == "/usr/lib/libc.so.6"
    record = reuse.root_record(tree, copied)
    (guest / "usr/lib/libnew.so.1").write_bytes(b"new")  # a new file where dracut copied from
    assert reuse.record_holds(tree, record) == "/usr/lib/"
    record = reuse.root_record(tree, copied)
    (guest / "usr/lib/libz.so.1").unlink()
    (guest / "usr/lib/libz.so.1").symlink_to("libz.so.1.3")  # a link that now points elsewhere
    assert reuse.record_holds(tree, record) == "/usr/lib/libz.so.1"
    (guest / "etc/udev/rules.d").mkdir(parents=True)
    record = reuse.root_record(tree, copied, ["etc/udev/rules.d"])  # copied from, though empty then
    (guest / "etc/udev/rules.d/70-new.rules").write_text("# new\n")
    assert reuse.record_holds(tree, record) == "/etc/udev/rules.d/"


# --- the stage, with the stand-in dracut of tests/dracut/fake_guest.py ---------------------


@pytest.fixture
def fake_guest(tmp_path: Path) -> Path:
    need("busybox", "gzip")
    if not sandbox_available()[0]:
        unavailable(sandbox_available()[1])
    return dracut_guest(tmp_path / "guest")


def test_the_stage_reuses_the_initramfs_until_a_copied_file_changes(fake_guest: Path, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    options = DracutOptions(compression=Compression.GZIP)
    outs = []
    for n in range(3):
        # A fresh copy of the guest each time, as each build extracts its own from rootfs.img.
        tree = shutil.copytree(fake_guest, tmp_path / f"tree{n}", symlinks=True)
        if n == 2:
            (tree / "usr/bin/newtool").write_text("#!/bin/sh\n")  # a new file beside the copied curl
        out = tmp_path / f"out{n}"
        out.mkdir()
        outs.append(build_initramfs(tree=tree, kver=KVER, output=out / "initrd.img", options=options,
                                    cache=cache))  # fmt: skip
    cold, warm, changed = outs
    assert (cold.reused, warm.reused, changed.reused) == (False, True, False)
    assert warm.path.read_bytes() == cold.path.read_bytes()
    assert (warm.modules, warm.left_out) == (cold.modules, cold.left_out)
    # What it takes unpacked, read from dracut's archive (cold) or the entry (warm): as if decompressed.
    assert cold.unpacked == warm.unpacked == unpacked_bytes(cold.path) > 0
    assert warm.path.stat().st_mode & 0o777 == 0o644
    assert "build cache" in warm.log.read_text()
    assert "fake dracut" in changed.log.read_text()
    # A changed dracut option is another key: dracut runs.
    out = tmp_path / "out-omit"
    out.mkdir()
    omitted = build_initramfs(tree=fake_guest, kver=KVER, output=out / "initrd.img", cache=cache,
                              options=dataclasses.replace(options, omit_modules=("qemu",)))  # fmt: skip
    assert not omitted.reused


def test_dracut_runs_but_the_same_archive_is_not_compressed_again(fake_guest: Path, tmp_path: Path) -> None:
    # The stand-in dracut writes /etc/fake-archive when the guest has one: the same bytes each
    # run, as the real dracut --reproducible does when it copies the same files.
    first = tmp_path / "first"
    first.mkdir()
    tree0 = shutil.copytree(fake_guest, tmp_path / "tree0", symlinks=True)
    plain = build_initramfs(tree=tree0, kver=KVER, output=first / "initrd.img",
                            options=DracutOptions(compression=Compression.NONE))  # fmt: skip
    shutil.copy(plain.path, fake_guest / "etc/fake-archive")
    cache = Cache(tmp_path / "cache")
    options = DracutOptions(compression=Compression.GZIP)
    outs = []
    for n in (1, 2, 3):
        tree = shutil.copytree(fake_guest, tmp_path / f"tree{n}", symlinks=True)
        if n == 2:
            (tree / "usr/bin/newtool").write_text("#!/bin/sh\n")  # the record no longer holds
        if n == 3:
            (tree / "usr/bin/newer").write_text("#!/bin/sh\n")
            (tree / "etc/fake-archive").write_bytes(plain.path.read_bytes().replace(b"prepare\n", b"prepar2\n"))
        out = tmp_path / f"out{n}"
        out.mkdir()
        outs.append(build_initramfs(tree=tree, kver=KVER, output=out / "initrd.img", options=options, cache=cache))
    cold, same, other = outs
    assert [(i.reused, i.compression_reused) for i in outs] == [(False, False), (False, True), (False, False)]
    assert "fake dracut" in same.log.read_text()  # dracut ran
    assert same.unpacked == unpacked_bytes(same.path)
    assert same.path.read_bytes() == cold.path.read_bytes()
    assert same.path.stat().st_mode & 0o777 == 0o644
    assert other.path.read_bytes() != cold.path.read_bytes()
    assert cache.stats()["initramfs-packed"].hits == 1


def test_the_compressed_form_is_named_by_the_archive_and_the_compressor(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    raw = tmp_path / "initramfs.cpio"
    raw.write_bytes(b"070701" + b"0" * 100)
    first = reuse.packed_key(raw, "xz -6 (xz 5.4.1)")
    assert first == reuse.packed_key(raw, "xz -6 (xz 5.4.1)") and len(first) == 64
    assert reuse.packed_key(raw, "xz -6 (xz 5.6.0)") != first  # another compressor's version
    packed = tmp_path / "initrd.img"
    packed.write_bytes(b"compressed")
    dest = tmp_path / "copy"
    assert not reuse.lookup_packed(cache, first, dest)
    assert reuse.store_packed(cache, first, packed)
    assert reuse.lookup_packed(cache, first, dest) and dest.read_bytes() == b"compressed"
    raw.write_bytes(b"070701" + b"1" * 100)  # another archive
    assert reuse.packed_key(raw, "xz -6 (xz 5.4.1)") != first
