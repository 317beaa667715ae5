"""Compressors, registered by on-disk id (``squashfs_fs.h``: ZLIB 1, LZO 3, XZ 4, LZ4 5, ZSTD 6).

Each :class:`Compressor` compresses one block at a time and is safe to call from several
threads at once (the codecs release the GIL while they work).  ``options_bytes`` gives the
compressor options block the writer stores after the superblock, or None when the options
are the defaults the kernel assumes.  Optional codecs (``zstandard``, ``lz4``, ``lzo``) are
imported on first use; a missing one is an :class:`InvalidOptions` naming the package.

xz: like mksquashfs, blocks are xz streams with a CRC32 check (the kernel's decoder
supports only CRC32 and none), LZMA2 at preset 6 with the dictionary as large as a block,
and optionally one BCJ filter in front.  mksquashfs compresses every block once per filter
plus once without and keeps the smallest; :class:`XzCompressor` first guesses from the
block's content whether a filter can help (see :func:`x86_code_score`) and only tries both
when the guess is unclear; with ``bcj_mode="exhaustive"`` it keeps what mksquashfs would, trying
both chains on every block but those without an x86 branch opcode, where the filter changes
nothing and the plain stream wins.
"""

from __future__ import annotations

import importlib
import lzma
import re
import struct
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.squashfs.constants import CompressionId
from liveimg.squashfs.options import SquashfsOptions


def _optional(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidOptions(
            f"the {module} module is needed for this squashfs compressor", hint=f"pip install {package}"
        ) from None


class Compressor(ABC):
    """One block in, its compressed form out (None when it does not shrink)."""

    id: ClassVar[CompressionId]
    name: ClassVar[str]

    def __init__(self, options: SquashfsOptions) -> None:
        self.options = options
        self.block_size = options.block_size

    @property
    def settings(self) -> tuple[object, ...]:
        """Everything that decides the bytes a block compresses to: equal settings, equal output.

        For keys of caches of compressed blocks; subclasses add their own fields.
        """
        return (self.name, self.block_size)

    def compress(self, data: bytes | memoryview) -> bytes | None:
        """Compress a data block; None when the result would not be smaller."""
        out = self._compress(data)
        return out if len(out) < len(data) else None

    def compress_meta(self, data: bytes | memoryview) -> bytes | None:
        """Compress a metadata block (no filters that only help machine code)."""
        return self.compress(data)

    @abstractmethod
    def _compress(self, data: bytes | memoryview) -> bytes:
        """The codec's raw output for one block."""

    @abstractmethod
    def decompress(self, data: bytes, max_size: int) -> bytes:
        """One block back, at most ``max_size`` bytes."""

    def options_bytes(self) -> bytes | None:
        return None

    @classmethod
    def options_from_bytes(cls, data: bytes, base: SquashfsOptions) -> SquashfsOptions:
        """The options a compressor options block describes (for the reader)."""
        return base


class GzipCompressor(Compressor):
    """zlib streams (RFC 1950), level 9 and a 32 KiB window by default, like mksquashfs."""

    id = CompressionId.ZLIB
    name = "gzip"
    OPTS = struct.Struct("<IHH")  # compression_level, window_size, strategy

    def __init__(self, options: SquashfsOptions) -> None:
        super().__init__(options)
        self.level = options.compression_level or 9

    @property
    def settings(self) -> tuple[object, ...]:
        return (self.name, self.block_size, self.level)

    def _compress(self, data: bytes | memoryview) -> bytes:
        return zlib.compress(data, self.level)

    def decompress(self, data: bytes, max_size: int) -> bytes:
        return zlib.decompress(data, bufsize=max_size)

    def options_bytes(self) -> bytes | None:
        return None if self.level == 9 else self.OPTS.pack(self.level, 15, 0)

    @classmethod
    def options_from_bytes(cls, data: bytes, base: SquashfsOptions) -> SquashfsOptions:
        level, _window, _strategy = cls.OPTS.unpack_from(data)
        return base.replace(Xcompression_level=level)


#: BCJ filter ids in the xz options block ``flags`` (squashfs-tools xz_wrapper.h) and liblzma.
XZ_FILTER_FLAGS: Mapping[str, int] = {"x86": 1, "powerpc": 2, "ia64": 4, "arm": 8, "armthumb": 16, "sparc": 32}
LZMA_FILTERS: Mapping[str, int] = {
    "x86": lzma.FILTER_X86,
    "powerpc": lzma.FILTER_POWERPC,
    "ia64": lzma.FILTER_IA64,
    "arm": lzma.FILTER_ARM,
    "armthumb": lzma.FILTER_ARMTHUMB,
    "sparc": lzma.FILTER_SPARC,
}

# A near call or jump (E8/E9) whose 32-bit displacement is small, so its top byte is 00 or FF:
# the pattern the x86 BCJ filter rewrites.  Text and compressed data have few of them.
_X86_BRANCH = re.compile(rb"[\xe8\xe9][\x00-\xff]{3}[\x00\xff]", re.DOTALL)


def x86_code_score(data: bytes | memoryview) -> tuple[float, float]:
    """(branches with a small non-zero displacement per KiB, share of zero displacements).

    Linked x86 code scores about 5-50 with few zero displacements: the BCJ filter helps.
    Relocatable objects (static libraries) have ``E8 00 00 00 00`` placeholder calls, which
    the filter turns into distinct values: it hurts there.  Text and data score under 1.
    """
    raw = bytes(data) if isinstance(data, memoryview) else data
    if not raw:
        return 0.0, 0.0
    branches = len(_X86_BRANCH.findall(raw))
    zero = raw.count(b"\xe8\0\0\0\0") + raw.count(b"\xe9\0\0\0\0")
    return (branches - zero) * 1024 / len(raw), zero / branches if branches else 0.0


def has_x86_branch_opcode(data: bytes | memoryview) -> bool:
    """Whether ``data`` holds an E8 or E9 byte: the only opcodes the x86 BCJ filter looks at."""
    raw = bytes(data) if isinstance(data, memoryview) else data
    return b"\xe8" in raw or b"\xe9" in raw


class XzCompressor(Compressor):
    """xz (``.xz`` streams, CRC32 check) with optional BCJ filters, chosen per block."""

    id = CompressionId.XZ
    name = "xz"
    OPTS = struct.Struct("<II")  # dictionary_size, flags (BCJ filters)
    #: Below this x86 score a block is compressed without the filter only, above HIGH with it only
    #: (unless many calls are unrelocated: ZERO_MAX); in between both are tried and the smaller kept.
    #: Chosen on a sample of 750 blocks of Debian's /usr: 0.05 % larger than always trying both,
    #: with 5 % of the blocks compressed twice.
    LOW, HIGH, ZERO_MAX = 2.0, 5.0, 0.3

    def __init__(self, options: SquashfsOptions) -> None:
        super().__init__(options)
        self.dict_size = options.dict_size
        self.filters = options.Xbcj
        self.bcj_mode = options.bcj_mode
        lzma2: Mapping[str, Any] = {"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": self.dict_size}
        self._plain: list[Mapping[str, Any]] = [lzma2]
        self._bcj: list[list[Mapping[str, Any]]] = [[{"id": LZMA_FILTERS[f]}, lzma2] for f in self.filters]
        #: Blocks compressed with each choice, and how many needed both tries (for benchmarks).
        self.stats = {"plain": 0, "bcj": 0, "both": 0}
        self._lock = threading.Lock()

    @property
    def settings(self) -> tuple[object, ...]:
        return (self.name, self.block_size, self.dict_size, self.filters, self.bcj_mode)

    def _xz(self, data: bytes | memoryview, filters: list[Mapping[str, Any]]) -> bytes:
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)

    def candidates(self, data: bytes | memoryview) -> list[list[Mapping[str, Any]]]:
        """The filter chains worth trying for this block (x86: guessed from its content, unless exhaustive)."""
        if not self._bcj:
            return [self._plain]
        if self.filters == ("x86",) and self.bcj_mode == "heuristic":
            score, zeros = x86_code_score(data)
            if score < self.LOW or zeros > self.ZERO_MAX + 0.2:
                return [self._plain]
            if score > self.HIGH and zeros < self.ZERO_MAX:
                return [self._bcj[0]]
        elif self.filters == ("x86",) and not has_x86_branch_opcode(data):
            # Exhaustive, and the result is known without trying: the x86 filter rewrites only
            # what follows an E8 or E9 byte, so here it passes the block through unchanged; the
            # LZMA2 data is then the same and its stream no shorter (its header names one more
            # filter), and the plain stream, first among equals, is the one kept.
            return [self._plain]
        return [self._plain, *self._bcj]

    def _compress(self, data: bytes | memoryview) -> bytes:
        chains = self.candidates(data)
        best = min((self._xz(data, chain) for chain in chains), key=len)
        kind = "both" if len(chains) > 1 else ("plain" if chains[0] is self._plain else "bcj")
        with self._lock:
            self.stats[kind] += 1
        return best

    def compress_meta(self, data: bytes | memoryview) -> bytes | None:
        out = self._xz(data, self._plain)
        return out if len(out) < len(data) else None

    def decompress(self, data: bytes, max_size: int) -> bytes:
        return lzma.decompress(data, format=lzma.FORMAT_XZ)

    def options_bytes(self) -> bytes | None:
        flags = 0
        for f in self.filters:
            flags |= XZ_FILTER_FLAGS[f]
        if flags == 0 and self.dict_size == self.block_size:
            return None
        return self.OPTS.pack(self.dict_size, flags)

    @classmethod
    def options_from_bytes(cls, data: bytes, base: SquashfsOptions) -> SquashfsOptions:
        dict_size, flags = cls.OPTS.unpack_from(data)
        filters = tuple(name for name, bit in XZ_FILTER_FLAGS.items() if flags & bit)
        return base.replace(Xdict_size=dict_size, Xbcj=filters)


class ZstdCompressor(Compressor):
    """Zstandard frames, level 15 by default (the ``zstandard`` package)."""

    id = CompressionId.ZSTD
    name = "zstd"
    OPTS = struct.Struct("<I")  # compression_level

    def __init__(self, options: SquashfsOptions) -> None:
        super().__init__(options)
        self._zstd = _optional("zstandard", "zstandard (liveimg[zstd])")
        self.level = options.compression_level or 15
        # A ZstdCompressor object must not be used by two threads at once: one per thread.
        self._local = threading.local()

    @property
    def settings(self) -> tuple[object, ...]:
        return (self.name, self.block_size, self.level)

    def _compress(self, data: bytes | memoryview) -> bytes:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = self._zstd.ZstdCompressor(level=self.level)
        out: bytes = cctx.compress(data)
        return out

    def decompress(self, data: bytes, max_size: int) -> bytes:
        out: bytes = self._zstd.ZstdDecompressor().decompress(data, max_output_size=max_size)
        return out

    def options_bytes(self) -> bytes | None:
        return None if self.level == 15 else self.OPTS.pack(self.level)

    @classmethod
    def options_from_bytes(cls, data: bytes, base: SquashfsOptions) -> SquashfsOptions:
        return base.replace(Xcompression_level=cls.OPTS.unpack_from(data)[0])


class Lz4Compressor(Compressor):
    """LZ4 raw blocks (the legacy format the kernel reads), optionally high-compression."""

    id = CompressionId.LZ4
    name = "lz4"
    OPTS = struct.Struct("<II")  # version (1: LZ4_LEGACY), flags (1: high compression)

    def __init__(self, options: SquashfsOptions) -> None:
        super().__init__(options)
        self._block = _optional("lz4.block", "lz4 (liveimg[lz4])")
        self.hc = options.Xhc

    @property
    def settings(self) -> tuple[object, ...]:
        return (self.name, self.block_size, self.hc)

    def _compress(self, data: bytes | memoryview) -> bytes:
        if self.hc:
            out: bytes = self._block.compress(data, mode="high_compression", compression=9, store_size=False)
        else:
            out = self._block.compress(data, store_size=False)
        return out

    def decompress(self, data: bytes, max_size: int) -> bytes:
        out: bytes = self._block.decompress(data, uncompressed_size=max_size)
        return out

    def options_bytes(self) -> bytes | None:
        # The kernel refuses lz4 images without an options block.
        return self.OPTS.pack(1, 1 if self.hc else 0)

    @classmethod
    def options_from_bytes(cls, data: bytes, base: SquashfsOptions) -> SquashfsOptions:
        version, flags = cls.OPTS.unpack_from(data)
        if version != 1:
            raise InvalidImage(f"lz4 options: unknown version {version}")
        return base.replace(Xhc=bool(flags & 1))


class LzoCompressor(Compressor):
    """LZO1X-999 (the ``python-lzo`` package, optional), level 8 by default."""

    id = CompressionId.LZO
    name = "lzo"
    OPTS = struct.Struct("<II")  # algorithm (4: lzo1x_999), compression_level

    def __init__(self, options: SquashfsOptions) -> None:
        super().__init__(options)
        self._lzo = _optional("lzo", "python-lzo (liveimg[lzo])")
        self.level = options.compression_level or 8

    @property
    def settings(self) -> tuple[object, ...]:
        return (self.name, self.block_size, self.level)

    def _compress(self, data: bytes | memoryview) -> bytes:
        out: bytes = self._lzo.compress(bytes(data), self.level, False)
        return out

    def decompress(self, data: bytes, max_size: int) -> bytes:
        out: bytes = self._lzo.decompress(data, False, max_size)
        return out

    def options_bytes(self) -> bytes | None:
        return None if self.level == 8 else self.OPTS.pack(4, self.level)

    @classmethod
    def options_from_bytes(cls, data: bytes, base: SquashfsOptions) -> SquashfsOptions:
        algorithm, level = cls.OPTS.unpack_from(data)
        if algorithm != 4:
            raise InvalidImage(f"lzo options: algorithm {algorithm} is not read, only lzo1x_999")
        return base.replace(Xcompression_level=level)


REGISTRY: Mapping[int, type[Compressor]] = {
    c.id: c for c in (GzipCompressor, XzCompressor, ZstdCompressor, Lz4Compressor, LzoCompressor)
}
BY_NAME: Mapping[str, type[Compressor]] = {c.name: c for c in REGISTRY.values()}


def make_compressor(options: SquashfsOptions) -> Compressor:
    """The compressor for validated ``options``."""
    return BY_NAME[options.comp](options)


def compressor_for_id(comp_id: int) -> type[Compressor]:
    try:
        return REGISTRY[comp_id]
    except KeyError:
        raise InvalidImage(f"squashfs compressor id {comp_id} is not supported") from None


DecompressFn = Callable[[bytes, int], bytes]
