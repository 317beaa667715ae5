from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveimg.cli import main
from liveimg.squashfs.reader import SquashfsReader


def test_pack_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("hi\n")
    image = tmp_path / "o.sqfs"
    argv = ["squashfs", "pack", str(src), str(image), "--comp", "zstd", "--Xcompression-level", "3", "-b", "64K"]
    assert main([*argv, "--mkfs-time", "7", "--progress", "none"]) == 0
    with SquashfsReader(image) as r:
        assert r.options.comp == "zstd" and r.options.compression_level == 3
        assert r.sb.block_size == 65536 and r.sb.mkfs_time == 7
    capsys.readouterr()
    assert main(["squashfs", "info", str(image), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compressor"] == "zstd"
    assert report["entries"] == {"dir": 1, "reg": 1}


def test_pack_one_file_with_lorax_compress_args(tmp_path: Path) -> None:
    img = tmp_path / "rootfs.img"
    img.write_bytes(b"\x7fELF" + bytes(70_000))
    image = tmp_path / "live.sqfs"
    argv = ["squashfs", "pack", str(img), str(image), "--file-as", "LiveOS/rootfs.img", "--compress-arg", "-Xbcj x86"]
    assert main([*argv, "--progress", "none"]) == 0
    with SquashfsReader(image) as r:
        assert r.options.Xbcj == ("x86",)
        assert r.read_file(r.lookup("LiveOS/rootfs.img")) == img.read_bytes()  # type: ignore[arg-type]


def test_bad_options_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["squashfs", "pack", str(tmp_path), str(tmp_path / "o"), "--comp", "gzip", "--Xbcj", "x86"]) == 1
    assert "liveimg: error: Xbcj needs comp='xz', not 'gzip'" in capsys.readouterr().err
    assert main(["squashfs", "info", str(tmp_path / "missing")]) == 1
