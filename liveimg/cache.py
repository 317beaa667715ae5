"""A content-addressed build cache on disk, shared by builds and by processes.

A :class:`Cache` maps ``(namespace, key)`` to bytes.  The caller computes the key: the hex
sha256 of everything that decides the value (a format-version tag, the options, the input),
so an entry never goes stale; it is only evicted.  Entries are small byte strings
(:meth:`Cache.get`, :meth:`Cache.put`: the squashfs writer's compressed blocks) or whole files
(:meth:`Cache.get_file`, :meth:`Cache.put_file`, :meth:`Cache.copy_file`: a compressed
initramfs).

The contract:

* **Atomic.** An entry is written to a temporary file in its own directory and renamed into
  place; a reader sees no entry or a whole one.  Two processes that put the same key both
  succeed (the last rename wins; the values are the same by construction).
* **Checked on every read.** A byte entry is a 48-byte header (magic, payload length, payload
  sha256) and the payload; a file entry is its data file and a byte entry beside it holding the
  data's length and sha256.  A read checks the length and the sha256; an entry that fails
  (truncated by a crash, changed on disk, or a hard-linked source that its owner changed later)
  is a miss, and the next put replaces it.  Nothing is fsynced: a crash can only make a miss.
* **A read never tears.** A byte entry is read through one open file; eviction unlinks names,
  so a read that raced it returns the whole value or a miss.  :meth:`Cache.copy_file` copies a
  file entry through an open file too.  :meth:`Cache.get_file` returns a path: the file behind
  it is whole, but a concurrent :meth:`Cache.trim` may unlink it before the caller opens it
  (a caller treats :class:`FileNotFoundError` then as a miss, or uses :meth:`Cache.copy_file`).
* **LRU, bounded.** A hit sets the entry's modification time to now; :meth:`Cache.trim`
  (called after a build) evicts the least recently used entries until the cache holds at most
  ``max_bytes``.  Trims are serialised by ``flock`` on ``ROOT/lock``; gets and puts take no lock.
* **Private.** The entries live in ``ROOT/v1`` (mode 0700); ROOT is created 0700 when missing.
  The checksums detect damage, not malice: whoever can write the cache can choose what a
  build reuses, so it must be the user's own directory.
* **Failure.** A root that cannot be created or written is a one-line :class:`HostError` from
  the constructor (:func:`open_cache` turns it into a warning and no cache for the default
  location).  Once open, an I/O error on a get is a miss and on a put a value not stored
  (counted in :class:`CacheStats` ``errors``); a full disk never fails a build.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from liveimg.errors import HostError, InvalidOptions

log = logging.getLogger(__name__)

#: The namespaces an entry can live in: one per kind of value, each with its own statistics.
NAMESPACES = frozenset({"squashfs", "initramfs", "initramfs-packed"})
#: The size bound when none is given.
DEFAULT_MAX_BYTES = 10 * 1024**3
#: The environment variable that names the cache directory (``--cache`` wins over it).
ENV_DIR = "LIVEIMG_CACHE"

#: The on-disk layout's version: a directory of its own, so a new layout ignores the old one.
_LAYOUT = "v1"
_MAGIC = b"LIVEIMG\x01"
_HEADER = struct.Struct("<8sQ32s")
_FILE_RECORD = struct.Struct("<Q32s")
_KEY = re.compile(r"[0-9a-f]{64}\Z")
_TMP_PREFIX = ".tmp-"
#: A temporary file or an orphaned data file older than this is a dead writer's: trim removes it.
_STALE_SECONDS = 3600.0
_CHUNK = 1024 * 1024


@dataclass
class CacheStats:
    """What one namespace of a cache did for this process: the manifest's ``cache`` section.

    ``bytes_reused`` counts the payload bytes returned by hits, ``bytes_stored`` those written
    by puts; ``errors`` the gets and puts that failed on I/O (each a miss or a value not stored).
    """

    hits: int = 0
    misses: int = 0
    bytes_reused: int = 0
    bytes_stored: int = 0
    errors: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def default_cache_root() -> Path:
    """``$LIVEIMG_CACHE``, else ``$XDG_CACHE_HOME/liveimg/cache``, else ``~/.cache/liveimg/cache``."""
    explicit = os.environ.get(ENV_DIR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "liveimg" / "cache"


def check_key(ns: str, key: str) -> None:
    """:class:`InvalidOptions` unless ``ns`` is in :data:`NAMESPACES` and ``key`` is 64 lowercase hex digits."""
    if ns not in NAMESPACES:
        raise InvalidOptions(f"unknown cache namespace {ns!r}: one of {', '.join(sorted(NAMESPACES))}")
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidOptions(f"bad cache key {key!r}: give a hex sha256 (64 lowercase hex digits)")


class Cache:
    """A content-addressed store in directory ``root``, bounded to ``max_bytes`` by :meth:`trim`.

    Thread-safe and process-safe (see the module's contract).  Raises :class:`HostError` when
    ``root`` cannot be created or written, :class:`InvalidOptions` for a negative bound.
    """

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise InvalidOptions(f"cache size bound {max_bytes} is negative: give a size of 0 or more")
        self.root = Path(root).absolute()
        self.max_bytes = max_bytes
        self._entries = self.root / _LAYOUT
        self._lock = threading.Lock()
        self._stats = {ns: CacheStats() for ns in NAMESPACES}
        self._made: set[Path] = set()
        hint = "give another directory with --cache DIR, or --no-cache"
        if self.root.exists() and not self.root.is_dir():
            raise HostError(f"cache directory {self.root} is not a directory", hint=hint)
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._entries.mkdir(mode=0o700, exist_ok=True)
            # Writable? A temporary file proves it where access() cannot (root, read-only mounts).
            fd, probe = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self._entries)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise HostError(f"cache directory {self.root} is unusable: {exc.strerror or exc}", hint=hint) from exc

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # -- statistics

    def stats(self) -> dict[str, CacheStats]:
        """A copy of the statistics so far, by namespace."""
        with self._lock:
            return {ns: CacheStats(**asdict(s)) for ns, s in sorted(self._stats.items())}

    def _count(
        self, ns: str, *, hit: bool | None = None, reused: int = 0, stored: int = 0, error: bool = False
    ) -> None:
        with self._lock:
            s = self._stats[ns]
            if hit is True:
                s.hits += 1
            elif hit is False:
                s.misses += 1
            s.bytes_reused += reused
            s.bytes_stored += stored
            s.errors += int(error)

    # -- paths

    def _path(self, ns: str, key: str) -> Path:
        check_key(ns, key)
        return self._entries / ns / key[:2] / key

    def _dir_for(self, path: Path) -> Path:
        parent = path.parent
        if parent not in self._made:
            parent.parent.mkdir(mode=0o700, exist_ok=True)  # the namespace's, then its fan-out's
            parent.mkdir(mode=0o700, exist_ok=True)
            with self._lock:
                self._made.add(parent)
        return parent

    # -- byte entries

    def get(self, ns: str, key: str) -> bytes | None:
        """The value stored under ``(ns, key)``, or None (a miss: absent, damaged or unreadable)."""
        path = self._path(ns, key)
        data, error = _read_entry(path)
        if data is None:
            self._count(ns, hit=False, error=error)
            return None
        _touch(path)
        self._count(ns, hit=True, reused=len(data))
        return data

    def put(self, ns: str, key: str, data: bytes) -> bool:
        """Store ``data`` under ``(ns, key)``, atomically; False if it could not be written."""
        path = self._path(ns, key)
        header = _HEADER.pack(_MAGIC, len(data), hashlib.sha256(data).digest())
        try:
            with self._temp(path) as (fd, _tmp):
                _write_all(fd, header)
                _write_all(fd, data)
        except OSError as exc:
            log.debug("cache: cannot store %s/%s: %s", ns, key, exc)
            self._count(ns, error=True)
            return False
        self._count(ns, stored=len(data))
        return True

    # -- file entries

    def get_file(self, ns: str, key: str) -> Path | None:
        """The path of the file stored under ``(ns, key)`` after checking its length and sha256, or None.

        Read the file, or hard link it, never write it.  A concurrent :meth:`trim` may unlink it
        before it is opened (then it is a miss); :meth:`copy_file` has no such window.
        """
        record, data = self._file_paths(ns, key)
        try:
            with open(data, "rb") as f:
                size = self._check_file(record, f)
        except OSError:
            size = None
        if size is None:
            self._count(ns, hit=False)
            return None
        _touch(record)
        self._count(ns, hit=True, reused=size)
        return data

    def copy_file(self, ns: str, key: str, dest: Path) -> bool:
        """Copy the file stored under ``(ns, key)`` to ``dest`` (replaced), checked; False on a miss.

        The copy is read through one open file, so an eviction cannot tear it; ``dest`` is
        written in place (the caller makes it atomic if it needs to), and on a miss it is
        left as it was.
        """
        record, data = self._file_paths(ns, key)
        with contextlib.ExitStack() as stack:
            try:
                src = stack.enter_context(open(data, "rb"))
                size = self._check_file(record, src)
            except OSError:
                size = None
            if size is None:
                self._count(ns, hit=False)
                return False
            src.seek(0)
            try:
                with open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            except OSError as exc:
                raise HostError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        _touch(record)
        self._count(ns, hit=True, reused=size)
        return True

    def put_file(self, ns: str, key: str, src_path: Path) -> bool:
        """Store the file ``src_path`` under ``(ns, key)``: a hard link where possible, else a copy.

        The caller may keep its file, but must replace it (rename over it), not rewrite it: a
        rewritten hard-linked source no longer matches its checksum, and is then a miss.
        False if it could not be stored.
        """
        record, data = self._file_paths(ns, key)
        try:
            with self._temp(data) as (fd, tmp):
                try:
                    os.unlink(tmp)
                    os.link(src_path, tmp)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
                        raise
                    with open(src_path, "rb") as s, open(tmp, "wb") as d:
                        shutil.copyfileobj(s, d, _CHUNK)
                with open(tmp, "rb") as f:
                    size, digest = _hash_file(f)
            # The record, a byte entry like any other, is renamed into place after the data:
            # a reader that finds it finds the data too.
            payload = _FILE_RECORD.pack(size, digest)
            with self._temp(record) as (fd, _tmp):
                _write_all(fd, _HEADER.pack(_MAGIC, len(payload), hashlib.sha256(payload).digest()))
                _write_all(fd, payload)
        except OSError as exc:
            log.debug("cache: cannot store %s/%s from %s: %s", ns, key, src_path, exc)
            self._count(ns, error=True)
            return False
        self._count(ns, stored=size)
        return True

    def _file_paths(self, ns: str, key: str) -> tuple[Path, Path]:
        path = self._path(ns, key)
        return path.with_name(key + ".file"), path.with_name(key + ".data")

    @staticmethod
    def _check_file(record: Path, f: BinaryIO) -> int | None:
        """The data's length if the open data file ``f`` matches its record, else None."""
        payload, _error = _read_entry(record)
        if payload is None or len(payload) != _FILE_RECORD.size:
            return None
        size, digest = _FILE_RECORD.unpack(payload)
        if os.fstat(f.fileno()).st_size != size:
            return None
        got_size, got = _hash_file(f)
        return size if (got_size, got) == (size, digest) else None

    @contextlib.contextmanager
    def _temp(self, dest: Path) -> Iterator[tuple[int, Path]]:
        """A temporary file beside ``dest``, renamed over it when the block ends, removed on error."""
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self._dir_for(dest))
        tmp = Path(name)
        try:
            try:
                yield fd, tmp
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- eviction

    def size(self) -> int:
        """The bytes the entries take now (their files' lengths)."""
        return sum(e.size for e in self._scan(time.time())[0])

    def trim(self) -> int:
        """Evict least recently used entries until the cache holds at most ``max_bytes``; the bytes evicted.

        Also removes what dead writers left (temporary files and orphaned data over an hour
        old).  One trim at a time (``flock`` on ``ROOT/lock``); a second waits for the first.
        """
        with self._trim_lock():
            now = time.time()
            entries, stale = self._scan(now)
            for path in stale:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            total = sum(e.size for e in entries)
            evicted = 0
            for entry in sorted(entries, key=lambda e: (e.used, str(e.paths[0]))):
                if total <= self.max_bytes:
                    break
                try:
                    # Used since the scan (a hit in another process): it is no longer the oldest.
                    if os.stat(entry.paths[0]).st_mtime > entry.used:
                        continue
                except OSError:
                    pass
                for path in entry.paths:  # the record before its data: a reader sees a miss
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                total -= entry.size
                evicted += entry.size
            return evicted

    @contextlib.contextmanager
    def _trim_lock(self) -> Iterator[None]:
        try:
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HostError(f"cannot lock cache directory {self.root}: {exc.strerror or exc}") from exc
        try:
            with contextlib.suppress(OSError):  # a filesystem without flock: trim unguarded
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _scan(self, now: float) -> tuple[list[_Entry], list[Path]]:
        """Every entry (with its size and last use), and the stale files to remove."""
        entries: list[_Entry] = []
        stale: list[Path] = []
        if not self._entries.is_dir():
            return entries, stale
        for ns_dir in _subdirs(self._entries):
            for fan in _subdirs(ns_dir):
                files: dict[str, os.stat_result] = {}
                with contextlib.suppress(OSError), os.scandir(fan) as it:
                    for de in it:
                        with contextlib.suppress(OSError):
                            files[de.name] = de.stat(follow_symlinks=False)
                for name, st in files.items():
                    path = Path(fan) / name
                    if name.startswith(_TMP_PREFIX):
                        if now - st.st_mtime > _STALE_SECONDS:
                            stale.append(path)
                    elif name.endswith(".file"):
                        data = name[: -len(".file")] + ".data"
                        size = st.st_size + (files[data].st_size if data in files else 0)
                        entries.append(_Entry((path, Path(fan) / data), size, st.st_mtime))
                    elif name.endswith(".data"):
                        if name[: -len(".data")] + ".file" not in files and now - st.st_mtime > _STALE_SECONDS:
                            stale.append(path)
                    else:
                        entries.append(_Entry((path,), st.st_size, st.st_mtime))
        return entries, stale


@dataclass(frozen=True)
class _Entry:
    paths: tuple[Path, ...]  # the entry's files, the one whose time is its last use first
    size: int
    used: float


def _subdirs(path: str | Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(de.path for de in it if de.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _read_entry(path: Path) -> tuple[bytes | None, bool]:
    """The payload of the byte entry at ``path`` if whole and unchanged, else None.

    The flag says whether an I/O error (not absence or damage) made it a miss.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None, False
    except OSError:
        return None, True
    if len(raw) < _HEADER.size:
        return None, False
    magic, length, digest = _HEADER.unpack_from(raw)
    payload = raw[_HEADER.size :]
    if magic != _MAGIC or length != len(payload) or hashlib.sha256(payload).digest() != digest:
        return None, False
    return payload, False


def _hash_file(f: BinaryIO) -> tuple[int, bytes]:
    f.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.digest()


def _touch(path: Path) -> None:
    """Mark the entry used now (its modification time is its place in the LRU order)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_cache(directory: Path | None, max_bytes: int | None = None) -> Cache:
    """The cache for a build: ``directory``, else :func:`default_cache_root`; bound ``max_bytes`` or the default.

    A directory the caller named (``directory`` or ``$LIVEIMG_CACHE``) that is unusable is a
    :class:`HostError`; callers that want the default location to degrade use
    :func:`open_default_cache`.
    """
    return Cache(directory if directory is not None else default_cache_root(), _bound(max_bytes))


def open_default_cache(max_bytes: int | None = None) -> Cache | None:
    """The cache at the default location, or None with a warning if it is unusable (never an error).

    ``$LIVEIMG_CACHE`` names the directory explicitly, so an unusable one is a :class:`HostError`.
    """
    if os.environ.get(ENV_DIR):
        return open_cache(None, max_bytes)
    try:
        return open_cache(None, max_bytes)
    except HostError as exc:
        log.warning("building without a cache: %s", exc)
        return None


def _bound(max_bytes: int | None) -> int:
    return DEFAULT_MAX_BYTES if max_bytes is None else max_bytes


__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENV_DIR",
    "NAMESPACES",
    "Cache",
    "CacheStats",
    "check_key",
    "default_cache_root",
    "open_cache",
    "open_default_cache",
]
