"""Compressed squashfs blocks reused from the build cache (:mod:`liveimg.cache`, namespace ``squashfs``).

A data or fragment block's key is the sha256 of :func:`compressor_fingerprint` (a format-version
tag, liveimg's version, the compressor's class and every plain setting it holds, the options
that can change compressed bytes, and the codec libraries loaded) followed by the uncompressed
block.  The value is the compressor's answer for that block: ``C`` and the compressed bytes, or
``U`` when it did not shrink (the block is stored uncompressed).  So a warm build writes the
same bytes a cold one would, and any setting that could change them gives other keys.

The lookup runs in the worker thread that would compress the block, so hashing adds to the
workers' time and not to the main thread's.  Two workers that meet the same block at once do not
both look it up: the second waits for the first and then reads what it stored, so a build's
hits and misses do not depend on thread timing (a cold build always counts the same).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import threading
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from liveimg._version import __version__
from liveimg.cache import Cache
from liveimg.squashfs.compressor import Compressor
from liveimg.squashfs.options import SquashfsOptions

#: Bump when the meaning of a cached value changes (what is hashed, how a value is encoded).
FORMAT = "liveimg-squashfs-block/1"
#: The namespace of :mod:`liveimg.cache` the blocks live in.
NAMESPACE = "squashfs"
#: Options that decide where blocks go or what the metadata says, never a block's compressed bytes.
#: Every other option (those added later included) is part of the key.
_NOT_IN_BLOCKS = frozenset({
    "no_fragments", "always_use_fragments", "no_exports", "no_xattrs", "all_root", "force_uid", "force_gid",
    "mkfs_time", "all_time", "processors",
})  # fmt: skip
#: liblzma, which Python's lzma links to (its version is in no Python attribute): found among the
#: libraries mapped.  zlib tells its own version; zstandard, lz4 and lzo by their modules' versions.
_LIBLZMA = re.compile(r"/liblzma\.so[.\d]*$")
_COMPRESSED, _STORED = b"C", b"U"

_Plain = int | float | str | bool | None


def _plain(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, _Plain)


def _settings(namespace: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(namespace.items()) if not k.startswith("__") and _plain(v)}


def _liblzma() -> list[str]:
    """The file names of the liblzma this process has mapped (imported with :mod:`lzma`): they carry its version."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
    except OSError:
        return []
    found = set()
    for path in paths:
        if _LIBLZMA.search(path):
            try:
                found.add(os.path.realpath(path).rsplit("/", 1)[-1])
            except OSError:
                continue
    return sorted(found)


def compressor_fingerprint(compressor: Compressor) -> bytes:
    """What decides a block's compressed bytes besides the block itself, as canonical JSON.

    Generic on purpose: the compressor's plain instance and class attributes (level, dictionary,
    filters, heuristics' thresholds, whatever a new option adds) and every option field not
    known to leave blocks alone, so that a new setting changes the key without a change here.
    """
    cls = type(compressor)
    class_settings: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, Compressor):
            class_settings.update(_settings(dict(vars(klass))))
    modules = {
        m.__name__: str(getattr(sys.modules.get(m.__name__.split(".")[0]), "__version__", ""))
        for m in vars(compressor).values()
        if isinstance(m, ModuleType)
    }
    options: SquashfsOptions = compressor.options
    description = {
        "format": FORMAT,
        "liveimg": __version__,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "class_settings": class_settings,
        "settings": _settings(dict(vars(compressor))),
        "options": {
            f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in _NOT_IN_BLOCKS
        },
        "modules": modules,
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "liblzma": _liblzma(),
        "python": sys.version_info[:2],
    }
    return json.dumps(description, sort_keys=True, default=str).encode()


class BlockCache:
    """The cache as the block processor uses it: :meth:`compress` instead of the compressor's own.

    ``hits`` and ``misses`` count this writer's blocks (the :class:`~liveimg.cache.Cache`'s
    statistics add up every writer that shares it).
    """

    def __init__(self, cache: Cache, compressor: Compressor) -> None:
        self.cache = cache
        self._prefix = hashlib.sha256(hashlib.sha256(compressor_fingerprint(compressor)).digest())
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Event] = {}
        self.hits = 0
        self.misses = 0

    def key(self, raw: bytes) -> str:
        h = self._prefix.copy()
        h.update(raw)
        return h.hexdigest()

    def compress(self, raw: bytes, compress: Callable[[bytes], bytes | None]) -> bytes | None:
        """``compress(raw)``, or what it gave for the same block and settings before (from the cache)."""
        key = self.key(raw)
        with self._lock:
            running = self._inflight.get(key)
            if running is None:
                done = self._inflight[key] = threading.Event()
        if running is not None:  # another worker has this block: wait for it, then read its result
            running.wait()
            return self._lookup_or_compress(key, raw, compress)
        try:
            return self._lookup_or_compress(key, raw, compress)
        finally:
            with self._lock:
                del self._inflight[key]
            done.set()

    def _lookup_or_compress(self, key: str, raw: bytes, compress: Callable[[bytes], bytes | None]) -> bytes | None:
        value = self.cache.get(NAMESPACE, key)
        if value is not None:
            tag, packed = value[:1], value[1:]
            if tag == _STORED and not packed:
                self._count(hit=True)
                return None
            if tag == _COMPRESSED and 0 < len(packed) < len(raw):
                self._count(hit=True)
                return packed
        self._count(hit=False)
        result = compress(raw)
        self.cache.put(NAMESPACE, key, _STORED if result is None else _COMPRESSED + result)
        return result

    def _count(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1


__all__ = ["FORMAT", "NAMESPACE", "BlockCache", "compressor_fingerprint"]
