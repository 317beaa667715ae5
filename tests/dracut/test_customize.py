"""Appending a cpio: kernel arguments into /etc/cmdline.d, embedded files, the kernel's alignment rules."""

from __future__ import annotations

import gzip
import lzma
import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.dracut import cpio
from liveimg.dracut.customize import AppendCompression, EmbeddedFile, append_cpio, check_karg
from liveimg.dracut.initramfs import Initramfs
from liveimg.errors import InvalidImage, InvalidOptions
from tests.dracut.test_initramfs import EARLY, MAIN, lz4_legacy, write
from tests.support import need

KARGS = ["root=live:http://10.0.2.100:8000/live-rootfs.squashfs.img", "rd.live.image", "ostree=/ostree/boot.1/x/y/0"]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    # An odd length, so that appending must pad.
    path = write(tmp_path, EARLY, gzip.compress(MAIN, mtime=0), name="base.img")
    with open(path, "ab") as f:
        f.write(b"\0" * ((1 - path.stat().st_size) % 4 or 4))
    assert path.stat().st_size % 4 != 0
    return path


def test_kargs_and_files_are_appended(tmp_path: Path, base: Path) -> None:
    seed = tmp_path / "user-data"
    seed.write_text("#cloud-config\nhostname: live\n")
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    original = base.read_bytes()
    out = tmp_path / "custom.img"
    result = append_cpio(
        base,
        out,
        kargs=KARGS,
        files=[EmbeddedFile(seed, "/var/lib/cloud/seed/nocloud/user-data"), EmbeddedFile(hook, "/usr/bin/hook")],
        mtime=0,
    )
    data = out.read_bytes()
    assert base.read_bytes() == original  # the input is untouched
    assert data.startswith(original)
    assert result.offset % 4 == 0 and result.offset == len(original) + (-len(original) % 4)
    assert len(data) % 4 == 0 and result.offset + result.size == len(data)
    assert data[len(original) : result.offset] == b"\0" * (result.offset - len(original))
    with Initramfs(out) as ird:
        assert [s.compression for s in ird.segments] == ["none", "gzip", "none"]
        assert ird.read("etc/cmdline.d/90-liveimg.conf") == (" ".join(KARGS) + "\n").encode()
        assert ird.read("var/lib/cloud/seed/nocloud/user-data") == seed.read_bytes()
        files = ird.files()
        assert files["usr/bin/hook"].mode == 0o755
        assert files["var/lib/cloud/seed/nocloud/user-data"].mode == 0o644
        assert files["var/lib/cloud/seed/nocloud/user-data"].segment == 2
    # Parents the initramfs already has (etc, usr, usr/bin...) are not repeated: the kernel
    # would apply the new entry's mode to the existing directory.
    assert "etc/cmdline.d" not in result.paths and "usr" not in result.paths
    assert {"var", "var/lib", "var/lib/cloud", "var/lib/cloud/seed/nocloud"} <= set(result.paths)


def test_gnu_cpio_reads_the_appended_archive(tmp_path: Path, base: Path) -> None:
    need("cpio")
    out = tmp_path / "custom.img"
    result = append_cpio(base, out, kargs=KARGS)
    appended = out.read_bytes()[result.offset :]
    listing = runner.run(["cpio", "-t", "--quiet"], input=appended).stdout.split()
    assert listing == ["etc/cmdline.d/90-liveimg.conf"]
    extracted = tmp_path / "x"
    extracted.mkdir()
    runner.run(["cpio", "-i", "-d", "--quiet", "-D", os.fspath(extracted)], input=appended)
    assert (extracted / "etc/cmdline.d/90-liveimg.conf").read_text() == " ".join(KARGS) + "\n"


def test_output_is_reproducible(tmp_path: Path, base: Path) -> None:
    a = append_cpio(base, tmp_path / "a.img", kargs=KARGS).path.read_bytes()
    b = append_cpio(base, tmp_path / "b.img", kargs=KARGS).path.read_bytes()
    assert a == b


@pytest.mark.parametrize("compression", [AppendCompression.GZIP, AppendCompression.XZ])
def test_compressed_append(tmp_path: Path, base: Path, compression: AppendCompression) -> None:
    result = append_cpio(base, tmp_path / "c.img", kargs=["rd.live.image"], compression=compression)
    tail = result.path.read_bytes()[result.offset :]
    if compression is AppendCompression.XZ:
        # The kernel's xz decoder checks only CRC32.
        assert lzma.decompress(tail.rstrip(b"\0")) and tail[6:8] == b"\x00\x01"
    with Initramfs(result.path) as ird:
        assert ird.segments[-1].compression == compression.value
        assert ird.read("etc/cmdline.d/90-liveimg.conf") == b"rd.live.image\n"


def test_append_in_place_and_twice(tmp_path: Path, base: Path) -> None:
    append_cpio(base, base, kargs=["a=1"], cmdline_name="50-first.conf")
    append_cpio(base, base, kargs=["b=2"], cmdline_name="60-second.conf")
    with Initramfs(base) as ird:
        assert ird.read("etc/cmdline.d/50-first.conf") == b"a=1\n"
        assert ird.read("etc/cmdline.d/60-second.conf") == b"b=2\n"
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"


def test_nothing_after_lz4(tmp_path: Path) -> None:
    path = write(tmp_path, EARLY, lz4_legacy(MAIN), name="lz4.img")
    with pytest.raises(InvalidImage, match="ends with an lz4-compressed segment"):
        append_cpio(path, tmp_path / "out.img", kargs=["rd.live.image"])
    assert not (tmp_path / "out.img").exists()


def test_corrupt_input_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.img"
    bad.write_bytes(MAIN[:1000])
    with pytest.raises(InvalidImage, match="truncated cpio archive"):
        append_cpio(bad, tmp_path / "out.img", kargs=["rd.live.image"])
    assert not (tmp_path / "out.img").exists()


@pytest.mark.parametrize("karg", ["", "two words", "tab\there", 'quote="x"', "new\nline", "bell\x07"])
def test_bad_kargs(karg: str) -> None:
    with pytest.raises(InvalidOptions, match="kernel argument"):
        check_karg(karg)


def test_bad_requests(tmp_path: Path, base: Path) -> None:
    with pytest.raises(InvalidOptions, match="nothing to append"):
        append_cpio(base, tmp_path / "o.img")
    with pytest.raises(InvalidOptions, match="does not exist"):
        append_cpio(base, tmp_path / "o.img", files=[EmbeddedFile(tmp_path / "missing", "/x")])
    with pytest.raises(InvalidOptions, match="absolute path"):
        append_cpio(base, tmp_path / "o.img", files=[EmbeddedFile(base, "relative/x")])
    with pytest.raises(InvalidOptions, match="not a regular file"):
        append_cpio(base, tmp_path / "o.img", files=[EmbeddedFile(tmp_path, "/x")])
    with pytest.raises(InvalidOptions, match=r"must be a plain name ending in \.conf"):
        append_cpio(base, tmp_path / "o.img", kargs=["a"], cmdline_name="../x.conf")
    with pytest.raises(InvalidOptions, match=r"contains '\.\.'"):
        append_cpio(base, tmp_path / "o.img", files=[EmbeddedFile(base, "/../etc/x")])


def test_the_appended_archive_matches_the_writer(tmp_path: Path, base: Path) -> None:
    result = append_cpio(base, tmp_path / "o.img", kargs=["rd.live.image"], mtime=0)
    expected = cpio.newc_bytes([cpio.file("etc/cmdline.d/90-liveimg.conf", b"rd.live.image\n")], mtime=0, parents=False)
    assert result.path.read_bytes()[result.offset :] == expected
