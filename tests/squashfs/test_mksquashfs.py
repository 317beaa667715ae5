from __future__ import annotations

from pathlib import Path

import pytest

from liveimg.errors import InvalidOptions
from liveimg.squashfs.mksquashfs import mksquashfs_argv, mksquashfs_env
from liveimg.squashfs.options import SquashfsOptions

SRC, DST = Path("/src"), Path("/out/img")


def test_argv_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    argv = mksquashfs_argv(SRC, DST, SquashfsOptions())
    assert argv == [
        "mksquashfs", "/src", "/out/img", "-noappend", "-no-progress", "-quiet",
        "-comp", "xz", "-b", "131072",
    ]  # fmt: skip


def test_argv_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    opts = SquashfsOptions(
        comp="xz",
        block_size=1 << 20,
        Xbcj=("arm", "armthumb"),
        Xdict_size=1 << 19,
        always_use_fragments=True,
        no_exports=True,
        no_xattrs=True,
        force_uid=10,
        force_gid=20,
        mkfs_time=99,
        all_time=100,
        processors=2,
    )
    assert mksquashfs_argv(SRC, DST, opts)[6:] == [
        "-comp", "xz", "-b", "1048576", "-Xbcj", "arm,armthumb", "-Xdict-size", "524288",
        "-always-use-fragments", "-no-exports", "-no-xattrs", "-force-uid", "10", "-force-gid", "20",
        "-mkfs-time", "99", "-all-time", "100", "-processors", "2",
    ]  # fmt: skip


def test_argv_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    zstd = mksquashfs_argv(SRC, DST, SquashfsOptions(comp="zstd", Xcompression_level=19, no_fragments=True))
    assert zstd[6:] == ["-comp", "zstd", "-b", "131072", "-Xcompression-level", "19", "-no-fragments"]
    lz4 = mksquashfs_argv(SRC, DST, SquashfsOptions(comp="lz4", Xhc=True, all_root=True))
    assert lz4[6:] == ["-comp", "lz4", "-b", "131072", "-Xhc", "-all-root"]


def test_source_date_epoch_is_passed_on_unless_a_time_option_clashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """mksquashfs takes SOURCE_DATE_EPOCH itself (superblock time, inode times clamped), not next to -mkfs-time."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    plain = SquashfsOptions(comp="gzip")
    assert mksquashfs_argv(SRC, DST, plain)[-2:] == ["-b", "131072"]
    assert mksquashfs_env(plain) == {}
    timed = SquashfsOptions(comp="gzip", mkfs_time=5)
    assert mksquashfs_argv(SRC, DST, timed)[-2:] == ["-mkfs-time", "5"]
    assert mksquashfs_env(timed) == {"SOURCE_DATE_EPOCH": None}
    forced = SquashfsOptions(comp="gzip", all_time=7)
    assert mksquashfs_argv(SRC, DST, forced)[-4:] == ["-mkfs-time", "1700000000", "-all-time", "7"]
    assert mksquashfs_env(forced) == {"SOURCE_DATE_EPOCH": None}
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert mksquashfs_env(plain) == {"SOURCE_DATE_EPOCH": None}


def test_argv_validates() -> None:
    with pytest.raises(InvalidOptions, match="Xbcj needs comp='xz'"):
        mksquashfs_argv(SRC, DST, SquashfsOptions(comp="zstd", Xbcj=("x86",)))
