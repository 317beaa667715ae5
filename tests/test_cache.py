"""liveimg.cache: the content-addressed store, with real files and real concurrent processes."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import multiprocessing
import os
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from liveimg.cache import DEFAULT_MAX_BYTES, Cache, CacheStats, default_cache_root, open_cache, open_default_cache
from liveimg.errors import HostError, InvalidOptions

pytestmark = pytest.mark.unit

_MP = multiprocessing.get_context("fork")


def key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def value(i: int, size: int) -> bytes:
    """Bytes that differ per ``i``, so a torn read (two values mixed) shows."""
    return hashlib.sha256(str(i).encode()).digest() * (size // 32)


def entry_path(cache: Cache, ns: str, k: str) -> Path:
    return cache.root / "v1" / ns / k[:2] / k


def test_put_get_and_stats(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c", max_bytes=1 << 20)
    assert cache.get("squashfs", key("a")) is None
    assert cache.put("squashfs", key("a"), b"hello")
    assert cache.get("squashfs", key("a")) == b"hello"
    assert cache.get("initramfs", key("a")) is None  # namespaces are apart
    assert cache.put("squashfs", key("empty"), b"")
    assert cache.get("squashfs", key("empty")) == b""
    stats = cache.stats()
    assert stats["squashfs"] == CacheStats(hits=2, misses=1, bytes_reused=5, bytes_stored=5, errors=0)
    assert stats["initramfs"] == CacheStats(misses=1)
    assert stats["squashfs"].to_json() == {
        "hits": 2,
        "misses": 1,
        "bytes_reused": 5,
        "bytes_stored": 5,
        "errors": 0,
    }


@pytest.mark.parametrize(
    ("ns", "k", "message"),
    [
        ("nope", key("a"), "unknown cache namespace 'nope'"),
        ("squashfs", key("a").upper(), "bad cache key"),
        ("squashfs", key("a")[:63], "bad cache key"),
        ("squashfs", "../" + key("a")[3:], "bad cache key"),
        ("squashfs", key("a") + "\n", "bad cache key"),
    ],
)
def test_bad_keys_are_refused(tmp_path: Path, ns: str, k: str, message: str) -> None:
    cache = Cache(tmp_path / "c")
    for call in (lambda: cache.get(ns, k), lambda: cache.put(ns, k, b"x"), lambda: cache.get_file(ns, k)):
        with pytest.raises(InvalidOptions, match=message):
            call()
    assert not list((tmp_path / "c" / "v1").iterdir())


def test_the_directory_is_private_and_made(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    cache = Cache(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "v1").stat().st_mode) == 0o700
    cache.put("squashfs", key("a"), b"x")
    for d in (root / "v1" / "squashfs", entry_path(cache, "squashfs", key("a")).parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry_path(cache, "squashfs", key("a")).stat().st_mode) == 0o600


def test_an_unusable_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(HostError, match=r"cache directory .*/file is not a directory \(give another"):
        Cache(tmp_path / "file")
    with pytest.raises(HostError, match=r"cache directory /proc/liveimg-cache is unusable: "):
        Cache(Path("/proc/liveimg-cache"))
    with pytest.raises(InvalidOptions, match="negative"):
        Cache(tmp_path / "c", max_bytes=-1)


def test_default_root_and_its_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEIMG_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == tmp_path / "home" / ".cache" / "liveimg" / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "liveimg" / "cache"
    assert open_cache(None).root == tmp_path / "xdg" / "liveimg" / "cache"
    assert open_cache(None).max_bytes == DEFAULT_MAX_BYTES == 10 * 1024**3
    monkeypatch.setenv("LIVEIMG_CACHE", str(tmp_path / "env"))
    assert default_cache_root() == tmp_path / "env"
    assert open_cache(tmp_path / "opt", 123).root == tmp_path / "opt"  # the option wins
    assert open_cache(tmp_path / "opt", 123).max_bytes == 123


def test_an_unusable_default_degrades_but_a_named_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.delenv("LIVEIMG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with caplog.at_level(logging.WARNING, logger="liveimg.cache"):
        assert open_default_cache() is None
    assert "building without a cache: cache directory" in caplog.text
    monkeypatch.setenv("LIVEIMG_CACHE", str(tmp_path / "file"))
    with pytest.raises(HostError, match="is not a directory"):
        open_default_cache()
    monkeypatch.setenv("LIVEIMG_CACHE", str(tmp_path / "ok"))
    usable = open_default_cache()
    assert usable is not None and usable.root == tmp_path / "ok"


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty", "longer"])
def test_a_damaged_entry_is_a_miss_and_a_put_repairs_it(tmp_path: Path, damage: str) -> None:
    cache = Cache(tmp_path / "c")
    k = key("a")
    data = value(1, 4096)
    cache.put("squashfs", k, data)
    path = entry_path(cache, "squashfs", k)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-1]
    elif damage == "flip":
        raw[-100] ^= 1
    elif damage == "header":
        raw[0] ^= 1
    elif damage == "empty":
        raw = bytearray()
    else:
        raw += b"\0"
    path.write_bytes(bytes(raw))
    assert cache.get("squashfs", k) is None
    assert cache.stats()["squashfs"].misses == 1
    cache.put("squashfs", k, data)
    assert cache.get("squashfs", k) == data


def test_file_entries(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    src = tmp_path / "initramfs.img"
    src.write_bytes(value(7, 100_000))
    k = key("initrd")
    assert cache.get_file("initramfs", k) is None
    assert cache.put_file("initramfs", k, src)
    got = cache.get_file("initramfs", k)
    assert got is not None and got.read_bytes() == src.read_bytes()
    assert got.stat().st_ino == src.stat().st_ino  # same filesystem: a hard link, no copy
    assert cache.copy_file("initramfs", k, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == src.read_bytes()
    assert cache.get("initramfs", k) is None  # a byte entry of the same key is another entry
    s = cache.stats()["initramfs"]
    assert (s.hits, s.misses, s.bytes_reused, s.bytes_stored) == (2, 2, 200_000, 100_000)

    # The caller rewrites its hard-linked file in place: the entry no longer matches, a miss.
    with open(src, "r+b") as f:
        f.write(b"X")
    assert cache.get_file("initramfs", k) is None
    (tmp_path / "untouched").write_bytes(b"keep")
    assert not cache.copy_file("initramfs", k, tmp_path / "untouched")
    assert (tmp_path / "untouched").read_bytes() == b"keep"
    # Replaced by rename, as the contract asks: the entry is safe.
    src2 = tmp_path / "new.img"
    src2.write_bytes(b"fresh")
    assert cache.put_file("initramfs", k, src2)
    os.replace(tmp_path / "out.img", src2)
    assert cache.get_file("initramfs", k) is not None


def test_file_entries_across_filesystems_are_copied(tmp_path: Path) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.fail("/dev/shm must be another filesystem than the tests' temporary directory")
    cache = Cache(tmp_path / "c")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        src = Path(other) / "f"
        src.write_bytes(b"across")
        assert cache.put_file("initramfs", key("x"), src)
        got = cache.get_file("initramfs", key("x"))
        assert got is not None and got.read_bytes() == b"across"
        assert got.stat().st_dev != src.stat().st_dev


def test_trim_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c", max_bytes=3 * (1024 + 48))
    names = ["a", "b", "c", "d"]
    for i, name in enumerate(names):
        cache.put("squashfs", key(name), value(i, 1024))
        os.utime(entry_path(cache, "squashfs", key(name)), (1000.0 + i, 1000.0 + i))
    assert cache.size() == 4 * 1072
    assert cache.get("squashfs", key("a")) is not None  # a hit: "a" is now the newest
    assert cache.trim() == 1072
    assert cache.get("squashfs", key("b")) is None
    assert all(cache.get("squashfs", key(n)) is not None for n in ("a", "c", "d"))
    assert cache.trim() == 0  # under the bound: nothing to do
    # File entries count their data and their record, and go whole.
    src = tmp_path / "f"
    src.write_bytes(b"z" * 5000)
    cache.put_file("initramfs", key("f"), src)
    assert cache.trim() > 0
    assert cache.get_file("initramfs", key("f")) is None  # the newest, but alone over the bound
    left = sorted(p.name for p in (cache.root / "v1").rglob("*") if p.is_file())
    assert not any(name.startswith(key("f")) for name in left)
    cache.max_bytes = 0
    cache.trim()
    assert cache.size() == 0


def test_trim_removes_what_dead_writers_left(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    cache.put("squashfs", key("a"), b"x")
    fan = entry_path(cache, "squashfs", key("a")).parent
    old, fresh, orphan = fan / ".tmp-dead", fan / ".tmp-writing", fan / (key("o") + ".data")
    for p in (old, fresh, orphan):
        p.write_bytes(b"partial")
    for p in (old, orphan):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    cache.trim()
    assert not old.exists() and not orphan.exists()
    assert fresh.exists()  # perhaps a live writer's
    assert cache.get("squashfs", key("a")) == b"x"


# -- real processes


def _writer(root: str, rounds: int, n_keys: int) -> None:
    cache = Cache(Path(root), max_bytes=1 << 30)
    for r in range(rounds):
        for i in range(n_keys):
            cache.put("squashfs", key(str(i)), value(i, 64 * 1024))
        if r % 5 == 0:
            os.sched_yield()


def _reader(root: str, rounds: int, n_keys: int, out: multiprocessing.queues.Queue[tuple[int, int, int]]) -> None:
    cache = Cache(Path(root), max_bytes=1 << 30)
    hits = misses = bad = 0
    for _ in range(rounds):
        for i in range(n_keys):
            got = cache.get("squashfs", key(str(i)))
            if got is None:
                misses += 1
            elif got == value(i, 64 * 1024):
                hits += 1
            else:
                bad += 1
    out.put((hits, misses, bad))


def _trimmer(root: str, rounds: int) -> None:
    cache = Cache(Path(root), max_bytes=0)
    for _ in range(rounds):
        cache.trim()


def _run(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"{p.name} ended with {p.exitcode}"


def test_concurrent_puts_gets_and_evictions_never_tear(tmp_path: Path) -> None:
    root = str(tmp_path / "c")
    Cache(Path(root))
    results: multiprocessing.queues.Queue[tuple[int, int, int]] = _MP.Queue()
    procs = [_MP.Process(target=_writer, args=(root, 40, 8), name=f"writer{i}") for i in range(2)]
    procs += [_MP.Process(target=_reader, args=(root, 60, 8, results), name=f"reader{i}") for i in range(2)]
    procs += [_MP.Process(target=_trimmer, args=(root, 200), name=f"trim{i}") for i in range(2)]
    _run(procs)
    totals = [results.get(timeout=10) for _ in range(2)]
    assert sum(bad for _, _, bad in totals) == 0  # the whole value or a miss, never a mix
    assert sum(hits for hits, _, _ in totals) > 0  # the race was real: reads hit between evictions
    assert sum(misses for _, misses, _ in totals) > 0
    # Nothing half-written is left as an entry.
    cache = Cache(Path(root), max_bytes=1 << 30)
    for i in range(8):
        assert cache.get("squashfs", key(str(i))) in (None, value(i, 64 * 1024))


def _hold_lock(root: str, held: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    fd = os.open(os.path.join(root, "lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.set()
    release.wait(60)
    os.close(fd)


def _trim_once(root: str, done: multiprocessing.synchronize.Event) -> None:
    Cache(Path(root), max_bytes=0).trim()
    done.set()


def test_trims_take_turns(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = Cache(root)
    cache.put("squashfs", key("a"), b"x")
    held, release, done = _MP.Event(), _MP.Event(), _MP.Event()
    holder = _MP.Process(target=_hold_lock, args=(str(root), held, release))
    holder.start()
    assert held.wait(30)
    trimmer = _MP.Process(target=_trim_once, args=(str(root), done))
    trimmer.start()
    assert not done.wait(1.0)  # it waits for the lock
    assert cache.get("squashfs", key("a")) == b"x"
    release.set()
    assert done.wait(30)
    trimmer.join(30)
    holder.join(30)
    assert cache.get("squashfs", key("a")) is None


def test_two_trims_at_once_end_under_the_bound(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = Cache(root, max_bytes=10 * (1024 + 48))
    for i in range(200):
        cache.put("squashfs", key(str(i)), value(i, 1024))
    procs = [_MP.Process(target=_bounded_trim, args=(str(root),)) for _ in range(2)]
    _run(procs)
    assert cache.size() <= 10 * (1024 + 48)
    assert cache.size() == 10 * (1024 + 48)


def _bounded_trim(root: str) -> None:
    Cache(Path(root), max_bytes=10 * (1024 + 48)).trim()
