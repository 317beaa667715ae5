"""Compressed blocks reused from the build cache: the same image bytes warm or cold; keys that follow every setting."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import zlib
from pathlib import Path

import pytest
import zstandard

from liveimg import run as runner
from liveimg._version import __version__
from liveimg.cache import Cache
from liveimg.squashfs import write_squashfs_file
from liveimg.squashfs.block_cache import BlockCache, compressor_fingerprint
from liveimg.squashfs.compressor import XzCompressor, make_compressor
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.writer import pack, pack_file
from tests import support

pytestmark = pytest.mark.unit


def make_tree(root: Path, seed: int = 1) -> None:
    """Compressible and incompressible blocks, tails for fragments, x86-like code and empty files."""
    rng = random.Random(seed)
    root.mkdir()
    (root / "d").mkdir()
    for i in range(12):
        text = b"".join(b"line %d of file %d: %s\n" % (n, i, b"x" * rng.randrange(40)) for n in range(150 * i))
        (root / "d" / f"text{i}").write_bytes(text)
        (root / f"random{i}").write_bytes(rng.randbytes(3000 * i + 17))  # stored uncompressed: "U" entries
    code = bytearray(rng.randbytes(60_000))
    for pos in range(0, len(code) - 5, 23):  # calls with small displacements: the BCJ heuristics' case
        code[pos : pos + 5] = b"\xe8" + rng.randrange(1 << 16).to_bytes(3, "little") + b"\0"
    (root / "code").write_bytes(bytes(code))
    (root / "empty").write_bytes(b"")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


OPTIONS = SquashfsOptions(comp="xz", Xbcj=("x86",), block_size=16384, mkfs_time=7, processors=2)


def test_warm_and_cold_images_are_byte_identical(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    plain = pack(src, tmp_path / "plain.sqfs", OPTIONS)
    cache = Cache(tmp_path / "cache")
    cold = pack(src, tmp_path / "cold.sqfs", OPTIONS, cache=cache)
    warm = pack(src, tmp_path / "warm.sqfs", OPTIONS, cache=cache)
    assert sha(tmp_path / "plain.sqfs") == sha(tmp_path / "cold.sqfs") == sha(tmp_path / "warm.sqfs")
    blocks = cold.stats["blocks"] + cold.stats["fragments"]
    assert cold.stats["uncompressed_blocks"] > 0  # the "stored as it is" answer is cached too
    assert (cold.stats["cache_hits"], cold.stats["cache_misses"]) == (0, blocks)
    assert (warm.stats["cache_hits"], warm.stats["cache_misses"]) == (blocks, 0)
    assert warm.stats["codec_cpu_ms"] == 0 < cold.stats["codec_cpu_ms"]
    assert "cache_hits" not in plain.stats
    stats = cache.stats()["squashfs"]
    assert (stats.hits, stats.misses) == (blocks, blocks)
    assert stats.bytes_reused == stats.bytes_stored > 0
    # Other worker counts, fragments or times change no block: still all hits, same data.
    other = pack(src, tmp_path / "other.sqfs", OPTIONS.replace(processors=3, mkfs_time=8), cache=cache)
    assert other.stats["cache_misses"] == 0
    support.need("unsquashfs")
    listing = runner.run(["unsquashfs", "-lln", tmp_path / "warm.sqfs"]).stdout
    assert "code" in listing


@pytest.mark.parametrize(
    "change",
    [
        {"Xcompression_level": None, "comp": "gzip", "Xbcj": ()},  # another codec
        {"Xbcj": ()},  # no BCJ filter
        {"Xdict_size": 8192},
        {"block_size": 8192},
    ],
)
def test_a_setting_that_changes_blocks_gets_no_hits(tmp_path: Path, change: dict[str, object]) -> None:
    src = tmp_path / "src"
    make_tree(src)
    cache = Cache(tmp_path / "cache")
    pack(src, tmp_path / "a.sqfs", OPTIONS, cache=cache)
    changed = OPTIONS.replace(**change)
    result = pack(src, tmp_path / "b.sqfs", changed, cache=cache)
    assert result.stats["cache_hits"] == 0
    pack(src, tmp_path / "c.sqfs", changed)
    assert sha(tmp_path / "b.sqfs") == sha(tmp_path / "c.sqfs")


def test_the_level_is_in_the_key(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    cache = Cache(tmp_path / "cache")
    for level in (1, 9):
        result = pack(src, tmp_path / f"{level}.sqfs", SquashfsOptions(comp="gzip", Xcompression_level=level,
                                                                     mkfs_time=7), cache=cache)  # fmt: skip
        assert result.stats["cache_hits"] == 0
        pack(src, tmp_path / f"{level}-plain.sqfs", SquashfsOptions(comp="gzip", Xcompression_level=level, mkfs_time=7))
        assert sha(tmp_path / f"{level}.sqfs") == sha(tmp_path / f"{level}-plain.sqfs")


def test_the_fingerprint_takes_any_setting_of_the_compressor() -> None:
    base = make_compressor(OPTIONS)
    described = json.loads(compressor_fingerprint(base))
    assert described["liveimg"] == __version__
    assert described["liblzma"] and all(name.startswith("liblzma.so.") for name in described["liblzma"])
    assert described["zlib"] == zlib.ZLIB_RUNTIME_VERSION
    assert described["settings"] == {"block_size": 16384, "dict_size": 16384, "filters": ["x86"]}
    zstd = json.loads(compressor_fingerprint(make_compressor(SquashfsOptions(comp="zstd"))))
    assert zstd["modules"] == {"zstandard": zstandard.__version__}
    assert compressor_fingerprint(base) == compressor_fingerprint(make_compressor(OPTIONS.replace(processors=1)))

    class Exhaustive(XzCompressor):  # as a new option would: an attribute of the compressor
        def __init__(self, options: SquashfsOptions) -> None:
            super().__init__(options)
            self.bcj_mode = "exhaustive"

    assert compressor_fingerprint(Exhaustive(OPTIONS)) != compressor_fingerprint(base)

    class Tuned(XzCompressor):  # a heuristic's threshold changes which filter wins
        LOW = 1.0

    assert compressor_fingerprint(Tuned(OPTIONS)) != compressor_fingerprint(base)
    for change in ({"Xhc": True}, {"comp": "zstd", "Xbcj": ()}, {"Xcompression_level": 3, "comp": "zstd", "Xbcj": ()}):
        assert compressor_fingerprint(make_compressor(OPTIONS.replace(**change))) != compressor_fingerprint(base)


def test_a_damaged_entry_is_compressed_again(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    cache = Cache(tmp_path / "cache")
    cold = pack(src, tmp_path / "a.sqfs", OPTIONS, cache=cache)
    entries = sorted(p for p in (cache.root / "v1" / "squashfs").rglob("*") if p.is_file())
    for path in entries[:5]:
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))
    warm = pack(src, tmp_path / "b.sqfs", OPTIONS, cache=cache)
    assert warm.stats["cache_misses"] == 5
    assert warm.stats["cache_hits"] == cold.stats["cache_misses"] - 5
    assert sha(tmp_path / "a.sqfs") == sha(tmp_path / "b.sqfs")


def test_repeated_blocks_count_the_same_whatever_the_threads(tmp_path: Path) -> None:
    """A block met by several workers at once is looked up once: a cold build's counts are fixed."""
    block = os.urandom(8192) + b"\0" * 8192
    src = tmp_path / "rootfs.img"
    src.write_bytes(block * 64 + b"tail")
    counts = set()
    for run in range(3):
        cache = Cache(tmp_path / f"cache{run}")
        result = pack_file(src, tmp_path / f"{run}.sqfs", options=OPTIONS.replace(processors=4), cache=cache)
        counts.add((result.stats["cache_hits"], result.stats["cache_misses"]))
        s = cache.stats()["squashfs"]
        counts.add((s.hits, s.misses))
    assert counts == {(63, 2)}  # 64 equal blocks, one a miss; the fragment with the tail a miss


def test_blocks_are_hashed_in_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[str] = set()
    real_key = BlockCache.key

    def key(self: BlockCache, raw: bytes) -> str:
        threads.add(threading.current_thread().name)
        return real_key(self, raw)

    monkeypatch.setattr(BlockCache, "key", key)
    src = tmp_path / "src"
    make_tree(src)
    pack(src, tmp_path / "a.sqfs", OPTIONS, cache=Cache(tmp_path / "cache"))
    assert threads and all(name.startswith("squashfs-compress") for name in threads)


def test_mksquashfs_backend_ignores_the_cache(tmp_path: Path) -> None:
    support.need("mksquashfs")
    src = tmp_path / "rootfs.img"
    src.write_bytes(b"data " * 100_000)
    cache = Cache(tmp_path / "cache")
    write_squashfs_file(src, tmp_path / "m.sqfs", options=OPTIONS, backend="mksquashfs", cache=cache)
    assert cache.stats()["squashfs"].misses == 0 and cache.size() == 0
    write_squashfs_file(src, tmp_path / "n.sqfs", options=OPTIONS, cache=cache)
    assert cache.stats()["squashfs"].misses > 0 and cache.size() > 0
