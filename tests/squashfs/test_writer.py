"""The native writer against the real tools: unsquashfs, mksquashfs, sqfsdiff, dissect.squashfs."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveimg import run as runner
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.reader import SquashfsReader
from liveimg.squashfs.writer import pack
from tests import support
from tests.squashfs import treegen

CODECS = [
    SquashfsOptions(comp="gzip"),
    SquashfsOptions(comp="xz"),
    SquashfsOptions(comp="xz", Xbcj=("x86",)),
    SquashfsOptions(comp="xz", Xbcj=("arm", "armthumb"), Xdict_size=8192),
    SquashfsOptions(comp="zstd"),
    SquashfsOptions(comp="zstd", Xcompression_level=3),
    SquashfsOptions(comp="lz4"),
    SquashfsOptions(comp="lz4", Xhc=True),
    SquashfsOptions(comp="gzip", Xcompression_level=1),
]
FRAGMENT_CHOICES = [{}, {"no_fragments": True}, {"always_use_fragments": True}]


def _options(draw_codec: SquashfsOptions, block_size: int, frags: dict[str, bool]) -> SquashfsOptions:
    o = draw_codec.replace(block_size=block_size, mkfs_time=1_700_000_000, processors=2, **frags)
    if o.Xdict_size and o.Xdict_size > block_size:
        o = o.replace(Xdict_size=None)
    return o.validate()


def _scratch(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    if p.exists():
        shutil.rmtree(p)
    return p


def extract_and_compare(image: Path, src: Path, work: Path) -> None:
    out = _scratch(work, "extracted")
    runner.run(["unsquashfs", "-no-progress", "-d", out, image])
    got, got_links = treegen.snapshot(out)
    want, want_links = treegen.snapshot(src)
    assert got.keys() == want.keys()
    for path, record in want.items():
        assert got[path] == record, path
    assert got_links == want_links


def reference_compare(image: Path, src: Path, work: Path, options: SquashfsOptions) -> None:
    """mksquashfs on the same tree: same listing, and sqfsdiff finds no difference."""
    from liveimg.squashfs.mksquashfs import mksquashfs

    ref = work / "ref.sqfs"
    mksquashfs(src, ref, options)
    ours = runner.run(["unsquashfs", "-lln", image]).stdout.splitlines()
    theirs = runner.run(["unsquashfs", "-lln", ref]).stdout.splitlines()
    assert ours == theirs
    runner.run(["sqfsdiff", "--timestamps", "--old", ref, "--new", image])
    with SquashfsReader(image) as a, SquashfsReader(ref) as b:
        for field in ("flags", "inodes", "no_ids", "block_size", "block_log", "compression", "mkfs_time"):
            assert getattr(a.sb, field) == getattr(b.sb, field), field
        assert a.comp_options_raw == b.comp_options_raw
        assert a.sb.bytes_used <= a.path.stat().st_size == -(-a.sb.bytes_used // 4096) * 4096


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(
    specs=treegen.trees(root=True),
    codec=st.sampled_from(CODECS),
    block_size=st.sampled_from([4096, 8192, 131072]),
    frags=st.sampled_from(FRAGMENT_CHOICES),
)
def test_generated_trees_round_trip(
    tmp_path: Path, specs: list[treegen.Spec], codec: SquashfsOptions, block_size: int, frags: dict[str, bool]
) -> None:
    support.need("unsquashfs", "mksquashfs", "sqfsdiff")
    support.need_root()
    src = _scratch(tmp_path, "src")
    treegen.build(src, specs)
    image = tmp_path / "ours.sqfs"
    options = _options(codec, block_size, frags)
    pack(src, image, options)
    extract_and_compare(image, src, tmp_path)
    reference_compare(image, src, tmp_path, options)
    # our own reader agrees on every file's content
    with SquashfsReader(image) as r:
        from liveimg.squashfs.inode import RegInode

        for path, inode in r.walk():
            if isinstance(inode, RegInode):
                data = (src / os.fsdecode(path)).read_bytes()
                assert r.read_file(inode) == data


@pytest.mark.parametrize("level", [None, 3])
def test_lzo_like_mksquashfs(tmp_path: Path, level: int | None) -> None:
    support.need("unsquashfs", "mksquashfs", "sqfsdiff")
    support.need_module("lzo", "PyPI python-lzo (needs Debian's liblzo2-dev)")
    src = tmp_path / "src"
    src.mkdir()
    (src / "text").write_bytes(b"lzo squashfs " * 30000)
    (src / "small").write_bytes(b"tail")
    options = SquashfsOptions(comp="lzo", Xcompression_level=level, mkfs_time=0)
    image = tmp_path / "ours.sqfs"
    pack(src, image, options)
    extract_and_compare(image, src, tmp_path)
    reference_compare(image, src, tmp_path, options)
    assert image.stat().st_size == (tmp_path / "ref.sqfs").stat().st_size


def test_big_directory_and_long_names(tmp_path: Path) -> None:
    """10 000 entries in one directory (directory index) and 255-byte names."""
    support.need("unsquashfs", "mksquashfs", "sqfsdiff")
    src = tmp_path / "src"
    big = src / "big"
    big.mkdir(parents=True)
    for i in range(10_000):
        (big / f"entry-{i:05d}-{'x' * (i % 40)}").write_bytes(b"%d\n" % i if i % 3 else b"")
    (src / ("n" * 255)).write_text("long")
    (src / ("é" * 127)).write_text("long unicode")
    for p in [big, src]:
        os.utime(p, (1_600_000_000, 1_600_000_000))
    image = tmp_path / "ours.sqfs"
    options = SquashfsOptions(comp="lz4", mkfs_time=0)
    pack(src, image, options)
    extract_and_compare(image, src, tmp_path)
    reference_compare(image, src, tmp_path, options)
    with SquashfsReader(image) as r:
        inode = r.lookup("big")
        assert len(getattr(inode, "index", [])) > 5
        assert r.read_file(r.lookup("big/entry-09998-" + "x" * (9998 % 40))) == b"9998\n"  # type: ignore[arg-type]


def test_dissect_reads_our_images(tmp_path: Path) -> None:
    from dissect.squashfs import SquashFS

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "small").write_bytes(b"tail" * 10)
    (src / "big").write_bytes(os.urandom(200_000) + b"\0" * 300_000)
    (src / "link").symlink_to("d/small")
    for comp in ("gzip", "xz", "zstd", "lz4"):
        image = tmp_path / f"{comp}.sqfs"
        pack(src, image, SquashfsOptions(comp=comp, Xbcj=("x86",) if comp == "xz" else ()))
        with open(image, "rb") as f:
            fs = SquashFS(f)
            assert fs.get("d/small").open().read() == b"tail" * 10
            assert (
                hashlib.sha256(fs.get("big").open().read()).digest()
                == hashlib.sha256((src / "big").read_bytes()).digest()
            )
            assert fs.get("link").link == "d/small"


@pytest.mark.parametrize("comp", ["xz", "zstd", "gzip", "lz4"])
def test_byte_identical_for_any_worker_count(tmp_path: Path, comp: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(os.urandom(1000 * i) + (b"text %d\n" % i) * (3000 * (i % 5)))
    (src / "dup").write_bytes((src / "f29").read_bytes())
    hashes = set()
    for workers in (1, 2, 3, 1):
        image = tmp_path / f"img{workers}.sqfs"
        pack(src, image, SquashfsOptions(comp=comp, block_size=16384, processors=workers, mkfs_time=5))
        hashes.add(hashlib.sha256(image.read_bytes()).hexdigest())
    assert len(hashes) == 1


def test_sparse_file_holes_and_zero_blocks(tmp_path: Path) -> None:
    support.need("unsquashfs")
    src = tmp_path / "src"
    src.mkdir()
    img = src / "rootfs.img"
    with open(img, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, almost all hole
        f.seek(200 << 20)
        f.write(os.urandom(100_000))
        f.write(b"\0" * 300_000)  # written zeros: stored as holes too
        f.seek((1 << 30) - 10)
        f.write(b"end marker")
    image = tmp_path / "o.sqfs"
    result = pack(src, image, SquashfsOptions(comp="zstd", Xcompression_level=1))
    assert result.size < 1 << 20
    assert result.stats["sparse_blocks"] >= 8000
    with SquashfsReader(image) as r:
        inode = r.lookup("rootfs.img")
        assert inode.inode_type == 9  # LREG: sparse
        h = hashlib.sha256()
        for chunk in r.iter_file(inode):  # type: ignore[arg-type]
            h.update(chunk)
    want = hashlib.sha256()
    with open(img, "rb") as f:
        while chunk := f.read(1 << 20):
            want.update(chunk)
    assert h.digest() == want.digest()
