"""The build cache in a build: chosen by the options, handed to the squashfs writer, reported, trimmed.

The appliance and the rootfs stage are stand-ins (tests/stages/standins.py); the pack and
manifest stages are the real ones.  The real pipeline, cold then warm, on the atomic sample
is in tests/integration/test_reproducible.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from liveimg import pipeline
from liveimg.cache import Cache, CacheStats
from liveimg.cli import build_options, build_parser
from liveimg.context import Build
from liveimg.erofs import ErofsOptions
from liveimg.errors import HostError
from liveimg.layouts.erofs_ext4 import ErofsExt4
from liveimg.options import BuildOptions
from liveimg.outdir import OutdirTransaction
from liveimg.pipeline import build
from liveimg.progress import Progress
from liveimg.rootfs import Method, RootfsImage
from liveimg.stages import pack
from tests.stages import standins
from tests.support import need

#: Enough content that the live file has a few hundred data blocks.
FILES = {f"usr/share/doc/file{i}": (b"some text %d " % i) * 20_000 for i in range(10)}


def _build(tmp_path: Path, name: str, options: BuildOptions) -> dict[str, Any]:
    image = tmp_path / "disk.raw"
    if not image.exists():
        image.write_bytes(b"an image" * 512)
    result = build(image, tmp_path / name, options)
    manifest: dict[str, Any] = json.loads((tmp_path / name / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    return manifest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    standins.use(monkeypatch, [], files=FILES)
    # The stand-in rootfs.img once, linked into every build: mkfs.ext4 gives a new UUID each time.
    made: list[Path] = []

    def rootfs(ctx: Build) -> None:
        if not made:
            standins.rootfs(ctx)
            made.append(tmp_path / "rootfs.img")
            os.link(ctx.rootfs.path, made[0])
            return
        with ctx.stage("rootfs"):
            (ctx.txn.work / "LiveOS").mkdir()
            image = ctx.txn.work / "LiveOS" / "rootfs.img"
            os.link(made[0], image)  # a copy would lose the holes: the squashfs would say so
            size = image.stat().st_size
            ctx.rootfs = RootfsImage(image, size, size, size, Method.COPY, "LiveOS", "", True)

    monkeypatch.setattr(pipeline, "STAGES", tuple(rootfs if s is standins.rootfs else s for s in pipeline.STAGES))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.delenv("LIVEIMG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.mark.usefixtures("env")
def test_a_second_build_reuses_the_blocks_of_the_first(tmp_path: Path) -> None:
    options = BuildOptions(compression="zstd", cache_dir=tmp_path / "cache")
    cold = _build(tmp_path, "cold", options)
    warm = _build(tmp_path, "warm", options)
    name = cold["rootfs"]["file"]
    assert _sha(tmp_path / "cold" / name) == _sha(tmp_path / "warm" / name)
    assert cold["cache"]["dir"] == str(tmp_path / "cache")
    c, w = cold["cache"]["namespaces"]["squashfs"], warm["cache"]["namespaces"]["squashfs"]
    assert c["hits"] < 10 < c["misses"]  # repeated blocks inside one image hit already
    assert (w["hits"], w["misses"]) == (c["hits"] + c["misses"], 0)
    assert w["bytes_reused"] == c["bytes_stored"] + c["bytes_reused"] > 0
    assert set(cold["cache"]["namespaces"]) == {"squashfs", "initramfs", "initramfs-packed"}
    # A cold build writes the same section every time (no time, no path of the run in it).
    again = _build(tmp_path, "again", BuildOptions(compression="zstd", cache_dir=tmp_path / "cache2"))
    assert again["cache"]["namespaces"] == cold["cache"]["namespaces"]
    assert not (tmp_path / "xdg").exists()  # --cache DIR, not the default


@pytest.mark.usefixtures("env")
def test_the_default_cache_and_no_cache(tmp_path: Path) -> None:
    default = tmp_path / "xdg" / "liveimg" / "cache"
    manifest = _build(tmp_path, "a", BuildOptions(compression="zstd"))
    assert manifest["cache"]["dir"] == str(default)
    assert Cache(default).size() > 0
    manifest = _build(tmp_path, "b", BuildOptions(compression="zstd", cache=False, cache_dir=tmp_path / "unused"))
    assert manifest["cache"] is None
    assert not (tmp_path / "unused").exists()


@pytest.mark.usefixtures("env")
def test_mksquashfs_does_not_use_the_cache(tmp_path: Path) -> None:
    need("mksquashfs")
    manifest = _build(tmp_path, "m", BuildOptions(squashfs_backend="mksquashfs", cache_dir=tmp_path / "cache"))
    assert manifest["cache"]["namespaces"]["squashfs"] == {
        "hits": 0, "misses": 0, "bytes_reused": 0, "bytes_stored": 0, "errors": 0,
    }  # fmt: skip
    assert Cache(tmp_path / "cache").size() == 0


@pytest.mark.usefixtures("env")
def test_the_build_trims_the_cache_to_its_bound(tmp_path: Path) -> None:
    _build(tmp_path, "a", BuildOptions(compression="zstd", cache_dir=tmp_path / "first"))
    one_build = Cache(tmp_path / "first").size()
    cache = Cache(tmp_path / "cache")
    cache.put("squashfs", "0" * 64, b"an old entry" * 1000)
    os.utime(cache.root / "v1" / "squashfs" / "00" / ("0" * 64), (1, 1))
    _build(tmp_path, "b", BuildOptions(compression="zstd", cache_dir=cache.root, cache_max_bytes=one_build))
    assert cache.size() == one_build  # the least recently used went, and only it
    assert cache.get("squashfs", "0" * 64) is None


@pytest.mark.usefixtures("env")
def test_an_unusable_cache_named_by_the_caller_stops_the_build_before_anything(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 4096)
    with pytest.raises(HostError, match=r"cache directory .*/file is not a directory \(give another directory"):
        build(image, tmp_path / "out", BuildOptions(cache_dir=tmp_path / "file"))
    assert sorted(os.listdir(tmp_path)) == ["disk.raw", "file"]


@pytest.mark.usefixtures("env")
def test_an_unusable_default_cache_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with caplog.at_level(logging.WARNING):
        manifest = _build(tmp_path, "a", BuildOptions(compression="zstd"))
    assert manifest["cache"] is None
    assert "building without a cache: cache directory" in caplog.text


def test_the_command_line() -> None:
    def options(*flags: str) -> BuildOptions:
        return build_options(build_parser().parse_args(["build", "img", "-o", "out", *flags]), None)

    assert (options().cache, options().cache_dir, options().cache_max_bytes) == (True, None, None)
    assert options("--cache", "/c").cache_dir == Path("/c")
    assert options("--no-cache").cache is False
    assert options("--cache-size", "512M").cache_max_bytes == 512 << 20
    assert options("--cache-size", "2").cache_max_bytes == 2 << 30
    with pytest.raises(SystemExit):
        options("--cache", "/c", "--no-cache")


def test_the_erofs_layout_does_not_use_the_cache(tmp_path: Path) -> None:
    need("mkfs.erofs")
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 4096)
    rootfs_img = tmp_path / "rootfs.img"
    rootfs_img.write_bytes(b"a live root " * 100_000)
    cache = Cache(tmp_path / "cache")
    txn = OutdirTransaction(tmp_path / "out")
    try:
        layout = ErofsExt4()
        layout.pack_options = ErofsOptions(compressor="lz4hc")
        ctx = Build(image, BuildOptions(rootfs_type="erofs"), layout, txn, Progress(), cache=cache)
        size = rootfs_img.stat().st_size
        ctx.rootfs = RootfsImage(rootfs_img, size, size, size, Method.COPY, "LiveOS", "", True)
        pack.run(ctx)
        assert (txn.out / layout.file_name).stat().st_size > 0
    finally:
        txn.close()
    assert cache.stats()["squashfs"] == CacheStats()
    assert cache.size() == 0
