"""Host compression of dracut's uncompressed output, with the tools and without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.dracut import compress, cpio
from liveimg.dracut.compress import Compression, compress_initramfs, tool_command
from liveimg.dracut.initramfs import Initramfs
from liveimg.errors import InvalidImage, InvalidOptions, ToolError
from tests.dracut.test_initramfs import EARLY, MAIN, check_main, write
from tests.support import need

CODECS = [Compression.XZ, Compression.ZSTD, Compression.GZIP, Compression.LZ4]


@pytest.mark.parametrize("codec", CODECS)
def test_each_codec_with_its_tool(tmp_path: Path, codec: Compression) -> None:
    need({"gzip": "gzip"}.get(codec.value, codec.value))
    src = write(tmp_path, EARLY, MAIN, name="raw.cpio")
    result = compress_initramfs(src, tmp_path / "out.img", codec, level=1 if codec is not Compression.XZ else 0)
    assert result.command.split()[0] in ("xz", "zstd", "pigz", "gzip", "lz4")
    assert result.size == (tmp_path / "out.img").stat().st_size < src.stat().st_size
    assert (tmp_path / "out.img").stat().st_mode & 0o777 == 0o644
    with Initramfs(tmp_path / "out.img") as ird:
        # The early archive stays first and uncompressed; the main one is compressed.
        assert [s.compression for s in ird.segments] == ["none", codec.value]
        assert ird.segments[0].length == len(EARLY)
        check_main(ird)


@pytest.mark.parametrize("codec", CODECS)
def test_each_codec_in_python(tmp_path: Path, codec: Compression, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compress, "tool_command", lambda *_args: None)
    src = write(tmp_path, MAIN, name="raw.cpio")
    result = compress_initramfs(src, tmp_path / "out.img", codec)
    assert result.command.startswith("python ")
    with Initramfs(tmp_path / "out.img") as ird:
        assert [s.compression for s in ird.segments] == [codec.value]
        check_main(ird)


def test_xz_uses_crc32_and_multithreading(tmp_path: Path) -> None:
    need("xz")
    argv = tool_command(Compression.XZ, 6, 0)
    assert argv is not None and "--check=crc32" in argv and "-T1" not in argv and "-T0" not in argv
    src = write(tmp_path, MAIN, name="raw.cpio")
    compress_initramfs(src, tmp_path / "out.img", Compression.XZ)
    info = runner.run(["xz", "--robot", "--list", os.fspath(tmp_path / "out.img")]).stdout
    assert "CRC32" in info


@pytest.mark.parametrize("codec", [Compression.XZ, Compression.ZSTD, Compression.GZIP])
def test_the_bytes_do_not_depend_on_the_thread_count(tmp_path: Path, codec: Compression) -> None:
    """Reproducible builds: 1, 2 or 3 threads (one core, or more) give the same file; xz's one
    thread would write its single-threaded format, with other bytes."""
    need({"gzip": "pigz"}.get(codec.value, codec.value))
    # Three of xz's multi-threaded blocks (3 MiB with a 1 MiB dictionary), compressible.
    data = b"".join(i.to_bytes(4, "little") * (i % 7 + 1) for i in range(500_000))[: 9 << 20]
    src = write(tmp_path, cpio.newc_bytes([cpio.file("big", data)], mtime=0), name="raw.cpio")
    outputs = set()
    for threads in (1, 2, 3):
        out = tmp_path / f"out-{threads}.img"
        compress_initramfs(src, out, codec, level=1, threads=threads)
        outputs.add(out.read_bytes())
    assert len(outputs) == 1


def test_none_is_a_copy(tmp_path: Path) -> None:
    src = write(tmp_path, EARLY, MAIN, name="raw.cpio")
    compress_initramfs(src, tmp_path / "out.img", Compression.NONE)
    assert (tmp_path / "out.img").read_bytes() == src.read_bytes()


def test_bad_input_and_options(tmp_path: Path) -> None:
    compressed = write(tmp_path, b"\x1f\x8b\x08\x00" + b"\0" * 20, name="gz.cpio")
    with pytest.raises(InvalidImage, match="expected an uncompressed newc cpio archive"):
        compress_initramfs(compressed, tmp_path / "out.img")
    src = write(tmp_path, MAIN, name="raw.cpio")
    with pytest.raises(InvalidOptions, match="level 42 is out of range"):
        compress_initramfs(src, tmp_path / "out.img", Compression.ZSTD, level=42)
    with pytest.raises(InvalidOptions, match="threads"):
        compress_initramfs(src, tmp_path / "out.img", threads=-1)
    assert not (tmp_path / "out.img").exists()
    assert not list(tmp_path.glob(".out.img*"))


def test_a_failing_tool_leaves_nothing_beside_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output, and the scratch copy of the last archive the tool reads, are removed; the old output stays."""
    monkeypatch.setattr(compress, "tool_command", lambda *_args: ["false"])
    src = write(tmp_path, EARLY, MAIN, name="raw.cpio")
    (tmp_path / "out.img").write_bytes(b"previous")
    with pytest.raises(ToolError):
        compress_initramfs(src, tmp_path / "out.img", Compression.XZ)
    assert (tmp_path / "out.img").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img", "raw.cpio"]
