"""The initramfs reader: chains of plain and compressed archives, and corrupt inputs."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import lz4.block
import pytest
import zstandard

from liveimg import run as runner
from liveimg.dracut import cpio
from liveimg.dracut.cpio import Kind
from liveimg.dracut.initramfs import Initramfs, detect_compression, list_initramfs, plain_segments
from liveimg.errors import InvalidImage, InvalidOptions
from tests.support import need

EARLY = cpio.newc_bytes(
    [cpio.file("kernel/x86/microcode/GenuineIntel.bin", b"\x01" * 1000), cpio.file("early_cpio", b"1\n")], mtime=0
)
MAIN_ENTRIES = [
    cpio.file("usr/bin/curl", os.urandom(50_000), 0o755),
    cpio.file("usr/sbin/livenetroot", b"#!/bin/sh\nexit 0\n", 0o755),
    cpio.symlink("sbin", "usr/sbin"),
    cpio.directory("etc/cmdline.d"),
    cpio.file("etc/os-release", b"ID=test\n" * 4000),
]
MAIN = cpio.newc_bytes(MAIN_ENTRIES, mtime=0)


def lz4_legacy(data: bytes) -> bytes:
    """The legacy lz4 frame (``lz4 -l``): magic, then size-prefixed blocks of up to 8 MiB."""
    out = [b"\x02\x21\x4c\x18"]
    for i in range(0, len(data), 8 << 20):
        block = lz4.block.compress(data[i : i + (8 << 20)], store_size=False)
        out += [len(block).to_bytes(4, "little"), block]
    return b"".join(out)


PYTHON_CODECS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: gzip.compress(d, mtime=0),
    "xz": lambda d: lzma.compress(d, check=lzma.CHECK_CRC32),
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    "lz4": lz4_legacy,
    "bzip2": bz2.compress,
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
}
#: The same, made by the command-line tools dracut uses (multi-threaded where they can be).
TOOL_CODECS: dict[str, list[str]] = {
    "gzip": ["gzip", "-n", "-9", "-c"],
    "xz": ["xz", "--check=crc32", "--lzma2=dict=1MiB", "-T0", "-c"],
    "zstd": ["zstd", "-T0", "-q", "-c"],
    "lz4": ["lz4", "-l", "-c"],
    "bzip2": ["bzip2", "-c"],
}


def write(tmp_path: Path, *parts: bytes, name: str = "initrd.img") -> Path:
    """The parts concatenated, each padded with zeros to 4 bytes (as the kernel needs)."""
    data = b""
    for part in parts:
        data += b"\0" * (-len(data) % 4) + part
    path = tmp_path / name
    path.write_bytes(data)
    return path


def check_main(ird: Initramfs) -> None:
    files = ird.files()
    assert files["usr/bin/curl"].kind is Kind.FILE
    assert files["usr/bin/curl"].mode == 0o755
    assert files["usr/bin/curl"].size == 50_000
    assert files["sbin"].kind is Kind.SYMLINK and files["sbin"].target == "usr/sbin"
    assert files["etc/cmdline.d"].kind is Kind.DIR
    assert ird.read("usr/bin/curl") == MAIN_ENTRIES[0].data
    assert ird.read("etc/os-release") == b"ID=test\n" * 4000
    assert [m.path for m in ird.find("livenetroot")] == ["usr/sbin/livenetroot"]


@pytest.mark.parametrize("codec", sorted(PYTHON_CODECS))
def test_early_cpio_then_compressed_then_appended(tmp_path: Path, codec: str) -> None:
    appended = cpio.newc_bytes([cpio.file("etc/cmdline.d/90-x.conf", b"rd.live.image\n")], mtime=0)
    path = write(tmp_path, EARLY, PYTHON_CODECS[codec](MAIN), appended)
    with Initramfs(path) as ird:
        assert [(s.compression, s.archives) for s in ird.segments] == [("none", 1), (codec, 1), ("none", 1)]
        assert ird.segments[1].unpacked == len(MAIN)
        assert ird.segments[2].offset % 4 == 0
        check_main(ird)
        assert ird.read("early_cpio") == b"1\n"
        assert ird.read("etc/cmdline.d/90-x.conf") == b"rd.live.image\n"
        assert ird.files()["etc/cmdline.d/90-x.conf"].segment == 2


@pytest.mark.parametrize("codec", sorted(TOOL_CODECS))
def test_archives_compressed_by_the_tools(tmp_path: Path, codec: str) -> None:
    need(TOOL_CODECS[codec][0])
    # Bigger than the tools' block and thread sizes, so xz -T0 and zstd -T0 write several blocks.
    big = cpio.newc_bytes([*MAIN_ENTRIES, cpio.file("big", os.urandom(3 << 20) * 3)], mtime=0)
    packed = runner.run(TOOL_CODECS[codec], input=big, stdout=tmp_path / "packed").stdout
    assert packed == ""
    path = write(tmp_path, EARLY, (tmp_path / "packed").read_bytes())
    with Initramfs(path) as ird:
        assert [s.compression for s in ird.segments] == ["none", codec]
        assert ird.segments[1].unpacked == len(big)
        check_main(ird)
        assert len(ird.read("big", limit=1 << 30)) == 9 << 20


def test_several_archives_inside_one_compressed_stream(tmp_path: Path) -> None:
    second = cpio.newc_bytes([cpio.file("usr/bin/curl", b"replaced")], mtime=0)
    # Zero padding between the archives inside the stream is allowed too.
    path = write(tmp_path, gzip.compress(MAIN + b"\0" * 8 + second, mtime=0))
    with Initramfs(path) as ird:
        assert [(s.compression, s.archives) for s in ird.segments] == [("gzip", 2)]
        assert len([m for m in ird.members if m.path == "usr/bin/curl"]) == 2
        assert ird.read("usr/bin/curl") == b"replaced"  # the later one wins, as in the kernel


def test_later_segments_override_earlier_ones(tmp_path: Path) -> None:
    override = cpio.newc_bytes([cpio.file("etc/os-release", b"ID=new\n")], mtime=0)
    with Initramfs(write(tmp_path, PYTHON_CODECS["xz"](MAIN), override)) as ird:
        assert ird.read("etc/os-release") == b"ID=new\n"
        assert ird.files()["etc/os-release"].size == 7


def test_zstd_frames_back_to_back_are_one_segment(tmp_path: Path) -> None:
    half = len(MAIN) // 2
    z = zstandard.ZstdCompressor()
    with Initramfs(write(tmp_path, z.compress(MAIN[:half]) + z.compress(MAIN[half:]))) as ird:
        assert [s.compression for s in ird.segments] == ["zstd"]
        check_main(ird)


def test_listing(tmp_path: Path) -> None:
    segments, members = list_initramfs(write(tmp_path, EARLY, gzip.compress(MAIN)))
    assert len(segments) == 2
    lines = [m.describe() for m in members]
    assert any(line.startswith("-rwxr-xr-x") and line.endswith("usr/bin/curl") for line in lines)
    assert any(line.startswith("lrwxrwxrwx") and line.endswith("sbin -> usr/sbin") for line in lines)


def test_detect_compression() -> None:
    assert detect_compression(b"070701") == "none"
    assert detect_compression(b"\xfd7zXZ\x00rest") == "xz"
    assert detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"
    assert detect_compression(b"hello") is None


def test_plain_segments(tmp_path: Path) -> None:
    path = write(tmp_path, EARLY, MAIN)
    first_end = len(EARLY)
    assert plain_segments(path) == [
        (0, first_end),
        (first_end + (-first_end % 4), first_end + (-first_end % 4) + len(MAIN)),
    ]
    with pytest.raises(InvalidImage, match="expected an uncompressed newc cpio archive at offset"):
        plain_segments(write(tmp_path, EARLY, gzip.compress(MAIN), name="mixed"))


# --- corrupt and hostile input --------------------------------------------------------------


def corrupt(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    with pytest.raises(InvalidImage) as info:
        Initramfs(path)
    return str(info.value)


def test_missing_empty_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="does not exist"):
        Initramfs(tmp_path / "nope")
    with pytest.raises(InvalidImage, match="is a directory"):
        Initramfs(tmp_path)
    assert "is empty" in corrupt(tmp_path, b"")
    assert "holds no cpio archive" in corrupt(tmp_path, b"\0" * 4096)


def test_unknown_data(tmp_path: Path) -> None:
    message = corrupt(tmp_path, b"MZ\x90\x00 this is a PE file, not an initramfs")
    assert "unknown data 4d 5a 90 00" in message and "offset 0" in message
    message = corrupt(tmp_path, MAIN + b"\0" * 4 + b"garbage!")
    assert f"offset {len(MAIN) + 4}" in message


def test_unaligned_archive_is_refused_as_the_kernel_does(tmp_path: Path) -> None:
    gz = gzip.compress(MAIN, mtime=0)
    data = gz + b"\0" * (1 if len(gz) % 4 != 3 else 2) + MAIN
    assert "not 4-byte aligned" in corrupt(tmp_path, data)


def test_truncated_cpio(tmp_path: Path) -> None:
    assert "truncated cpio archive" in corrupt(tmp_path, MAIN[:60_000])
    assert "truncated cpio archive" in corrupt(tmp_path, MAIN[:50])


def test_truncated_compressed_stream(tmp_path: Path) -> None:
    for codec in ("gzip", "xz", "zstd", "bzip2"):
        packed = PYTHON_CODECS[codec](MAIN)
        message = corrupt(tmp_path, packed[: len(packed) // 2])
        assert f"the {codec} stream at offset 0 is corrupt" in message, message


def test_corrupt_compressed_stream(tmp_path: Path) -> None:
    packed = bytearray(PYTHON_CODECS["xz"](MAIN))
    packed[len(packed) // 2] ^= 0xFF
    assert "the xz stream at offset 0 is corrupt" in corrupt(tmp_path, bytes(packed))


def test_bad_hex_in_a_header(tmp_path: Path) -> None:
    data = bytearray(MAIN)
    data[6:14] = b"ZZZZZZZZ"
    assert "corrupt cpio header at offset 0" in corrupt(tmp_path, bytes(data))


def test_absurd_name_size(tmp_path: Path) -> None:
    data = bytearray(MAIN)
    data[94:102] = b"7FFFFFFF"
    assert "name size 2147483647" in corrupt(tmp_path, bytes(data))


def test_old_cpio_format_is_named(tmp_path: Path) -> None:
    data = bytearray(MAIN)
    data[:6] = b"070707"
    assert "old-format (odc) cpio" in corrupt(tmp_path, b"\0" * 4 + gzip.compress(bytes(data)))


def test_junk_inside_a_compressed_stream(tmp_path: Path) -> None:
    message = corrupt(tmp_path, gzip.compress(MAIN + b"junk", mtime=0))
    assert "junk within the gzip stream at offset 0" in message


def test_lzo_is_named_as_unsupported(tmp_path: Path) -> None:
    assert "lzo-compressed segment at offset 0 is not supported" in corrupt(tmp_path, b"\x89LZO\x00\r\n\x1a\n")


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    bomb = cpio.newc_bytes([cpio.file("zeros", b"\0" * (64 << 20))], mtime=0)
    path = write(tmp_path, lzma.compress(bomb, check=lzma.CHECK_CRC32))
    assert path.stat().st_size < 100_000
    with pytest.raises(InvalidImage, match="unpacks to more than 1048576 bytes"):
        Initramfs(path, max_unpacked=1 << 20)


def test_read_errors(tmp_path: Path) -> None:
    with Initramfs(write(tmp_path, MAIN)) as ird:
        with pytest.raises(InvalidOptions, match="not in the initramfs"):
            ird.read("etc/shadow")
        with pytest.raises(InvalidOptions, match="is a dir, not a regular file"):
            ird.read("etc/cmdline.d")
        with pytest.raises(InvalidOptions, match="more than the limit"):
            ird.read("usr/bin/curl", limit=10)
