"""Compress an uncompressed initramfs on the host, with every core.

dracut compresses with one process inside the guest (and under TCG in the appliance, xz
there is very slow).  liveimg has dracut write an uncompressed image (``--no-compress``) and
compresses it here with the host's multi-threaded tools, using the settings dracut itself
uses so that every kernel that boots dracut's images boots ours:

=========  ========================================================  =================================
codec      command (the first one found)                             fallback without the tool
=========  ========================================================  =================================
xz         ``xz --check=crc32 --lzma2=dict=1MiB -TN`` (N at least 2)  Python lzma (one thread)
zstd       ``zstd -15 -T0``                                          Python zstandard (all threads)
gzip       ``pigz -9 -n -T -R -pN``, else ``gzip -n -9``             Python gzip (one thread)
lz4        ``lz4 -l -9`` (the legacy frame the kernel reads)           Python lz4 (one thread)
none       copy                                                      --
=========  ========================================================  =================================

The kernel's xz decoder knows only CRC32 checks, hence ``--check=crc32``.  Leading
uncompressed archives (an early-microcode cpio) are kept as they are, uncompressed and
first, with only the last archive compressed, as dracut does.

The output does not depend on the number of cores (reproducible builds): xz, zstd and pigz
split their input into blocks of a size their settings fix, whatever their thread count; but
xz with one thread (``-T1``, or ``-T0`` on one core before xz 5.4) writes its single-threaded
format, and pigz with one compresses otherwise too, so both always get two threads at least.
A codec's Python fallback writes other bytes than its tool.
"""

from __future__ import annotations

import enum
import functools
import gzip
import importlib.metadata
import logging
import lzma
import os
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from liveimg import run as runner
from liveimg.dracut.initramfs import optional_module, plain_segments
from liveimg.dracut.output import replaced_whole
from liveimg.errors import InvalidOptions
from liveimg.staging import temp_beside

log = logging.getLogger(__name__)


class Compression(enum.StrEnum):
    """How the initramfs is compressed (``--initramfs-compression``); ``none`` leaves it a plain cpio."""

    XZ = "xz"
    ZSTD = "zstd"
    GZIP = "gzip"
    LZ4 = "lz4"
    NONE = "none"


#: Default levels, dracut's own (``dracut.sh``: zstd -15, gzip -9, lz4 -9, xz default -6).
DEFAULT_LEVELS: dict[Compression, int] = {
    Compression.XZ: 6,
    Compression.ZSTD: 15,
    Compression.GZIP: 9,
    Compression.LZ4: 9,
}
_LEVEL_RANGE: dict[Compression, tuple[int, int]] = {
    Compression.XZ: (0, 9),
    Compression.ZSTD: (1, 19),
    Compression.GZIP: (1, 9),
    Compression.LZ4: (1, 12),
}


@dataclass(frozen=True)
class Compressed:
    path: Path
    compression: Compression
    size: int
    unpacked: int
    seconds: float
    command: str  # what did the work: a command line, or "python <module>"
    reused: bool = False  # taken from the build cache (liveimg.dracut.reuse), not compressed again


def tool_command(compression: Compression, level: int, threads: int) -> list[str] | None:
    """The command that compresses stdin to stdout, or None if no tool for it is installed."""
    t = str(threads)
    # xz and pigz write other bytes with one thread: at least two, whatever the cores (see the module doc).
    parallel = str(max(2, threads or len(os.sched_getaffinity(0))))
    if compression is Compression.XZ and runner.which("xz"):
        return ["xz", f"-{level}", "--check=crc32", "--lzma2=dict=1MiB", f"-T{parallel}", "-c"]
    if compression is Compression.ZSTD and runner.which("zstd"):
        return ["zstd", f"-{level}", f"-T{t}", "-q", "-c"]
    if compression is Compression.GZIP and runner.which("pigz"):
        return ["pigz", f"-{level}", "-n", "-T", "-R", "-c", f"-p{parallel}"]
    if compression is Compression.GZIP and runner.which("gzip"):
        return ["gzip", f"-{level}", "-n", "-c"]
    if compression is Compression.LZ4 and runner.which("lz4"):
        return ["lz4", "-l", f"-{level}", "-c"]
    return None


def fingerprint(compression: Compression, level: int) -> str:
    """What decides the bytes a compression writes: the command (or Python module) and its version.

    Two builds whose fingerprints are equal write the same compressed initramfs from the same
    uncompressed one: the build cache keys its entries with it (:mod:`liveimg.dracut.reuse`).
    """
    if compression is Compression.NONE:
        return "none"
    argv = tool_command(compression, level, 2)
    if argv is None:
        return f"python {compression} {level} (Python {sys.version.split()[0]}; {_module_version(compression)})"
    return f"{' '.join(argv)} ({_tool_version(argv[0])})"


@functools.cache
def _tool_version(program: str) -> str:
    # xz prints its liblzma's version too: the library is what compresses.
    result = runner.run([program, "--version"], check=False, timeout=60)
    text = " ".join((result.stdout + result.stderr).split())
    return text[:200] if result.returncode == 0 else f"{program} --version failed: exit {result.returncode}"


def _module_version(compression: Compression) -> str:
    if compression is Compression.XZ:
        return "lzma"  # the interpreter's own liblzma: Python's version above names it
    if compression is Compression.GZIP:
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    module = {Compression.ZSTD: "zstandard", Compression.LZ4: "lz4"}[compression]
    try:
        return f"{module} {importlib.metadata.version(module)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{module} (not installed)"


def _python_compress(compression: Compression, level: int, src: Path, out: Path) -> str:
    data = src.read_bytes()
    if compression is Compression.XZ:
        filters: Sequence[dict[str, int]] = [{"id": lzma.FILTER_LZMA2, "preset": level, "dict_size": 1 << 20}]
        packed = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)
        module = "lzma"
    elif compression is Compression.GZIP:
        packed = gzip.compress(data, compresslevel=level, mtime=0)
        module = "gzip"
    elif compression is Compression.ZSTD:
        zstandard = optional_module("zstandard", "zstd compression needs the zstd program or")
        packed = zstandard.ZstdCompressor(level=level, threads=-1).compress(data)
        module = "zstandard"
    elif compression is Compression.LZ4:
        lz4_block = optional_module("lz4.block", "lz4 compression needs the lz4 program or")
        chunks = [b"\x02\x21\x4c\x18"]
        for i in range(0, len(data), 8 << 20):
            block = lz4_block.compress(data[i : i + (8 << 20)], mode="high_compression", compression=level,
                                       store_size=False)  # fmt: skip
            chunks += [len(block).to_bytes(4, "little"), block]
        packed = b"".join(chunks)
        module = "lz4"
    else:
        raise InvalidOptions(f"unknown compression {compression}")
    with open(out, "ab") as f:
        f.write(packed)
    return f"python {module}"


def compress_initramfs(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    compression: Compression = Compression.XZ,
    *,
    level: int | None = None,
    threads: int = 0,
    timeout: float = 3600,
) -> Compressed:
    """Compress the uncompressed initramfs ``source`` into ``output`` (written atomically).

    ``threads`` 0 means one per core; xz and pigz get two at least (see the module doc).
    ``source`` must be a chain of uncompressed newc archives (dracut ``--no-compress``); all but
    the last stay uncompressed.
    """
    src = Path(source)
    dst = Path(output)
    if level is None:
        level = DEFAULT_LEVELS.get(compression, 0)
    low, high = _LEVEL_RANGE.get(compression, (0, 0))
    if compression is not Compression.NONE and not low <= level <= high:
        raise InvalidOptions(f"{compression} level {level} is out of range ({low} to {high})")
    if threads < 0:
        raise InvalidOptions(f"threads must be 0 (all cores) or more, not {threads}")
    segments = plain_segments(src)
    started = time.monotonic()
    last_start, last_end = segments[-1]
    what = "copy"
    with replaced_whole(dst) as tmp:
        with open(tmp, "wb") as out, open(src, "rb") as inp:
            # Early archives first, uncompressed, each padded to 4 bytes as the kernel wants.
            for start, end in segments[:-1]:
                inp.seek(start)
                out.write(inp.read(end - start))
                out.write(b"\0" * (-out.tell() % 4))
        last = src
        try:
            if len(segments) > 1 or last_start != 0 or last_end != src.stat().st_size:
                # The last archive alone, for the tool to read: a scratch file beside the output.
                last = temp_beside(dst, ".main")
                with open(src, "rb") as inp, open(last, "wb") as part:
                    inp.seek(last_start)
                    _copy_range(inp, part, last_end - last_start)
            if compression is Compression.NONE:
                with open(tmp, "ab") as out, open(last, "rb") as inp:
                    shutil.copyfileobj(inp, out, 1 << 20)
            else:
                argv = tool_command(compression, level, threads)
                if argv is None:
                    what = _python_compress(compression, level, last, tmp)
                else:
                    with open(tmp, "ab") as out:
                        runner.run([*argv, os.fspath(last)], stdout=out, timeout=timeout)
                    what = " ".join(argv)
        finally:
            if last != src:
                last.unlink(missing_ok=True)
        os.chmod(tmp, 0o644)  # served over TFTP/HTTP: world-readable, like the kernel beside it
    seconds = time.monotonic() - started
    size = dst.stat().st_size
    unpacked = src.stat().st_size
    log.info("compressed %s with %s: %d -> %d bytes in %.1f s", src.name, what, unpacked, size, seconds)
    return Compressed(dst, compression, size, unpacked, seconds, what)


def _copy_range(src: BinaryIO, dst: BinaryIO, length: int) -> None:
    while length > 0:
        chunk = src.read(min(1 << 20, length))
        if not chunk:
            break
        dst.write(chunk)
        length -= len(chunk)
