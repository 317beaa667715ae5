"""Stage 3: pack ``LiveOS/rootfs.img`` (or any tree) into a squashfs image.

Two backends take the same :class:`SquashfsOptions`: liveimg's own writer (``"native"``,
the default: :func:`pack`, :func:`pack_file`, :class:`SquashfsWriter`) and the mksquashfs
wrapper (``"mksquashfs"``: :func:`mksquashfs`, :func:`mksquashfs_file`).  The pipeline
calls :func:`write_squashfs_file`; :func:`write_squashfs` packs a directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from liveimg.cache import Cache
from liveimg.errors import InvalidOptions
from liveimg.progress import Progress
from liveimg.squashfs.mksquashfs import mksquashfs, mksquashfs_file
from liveimg.squashfs.options import SquashfsOptions, SquashfsResult, bcj_for_arch, parse_compress_args
from liveimg.squashfs.reader import SquashfsReader, describe
from liveimg.squashfs.writer import SquashfsWriter, pack, pack_file

Backend = Literal["native", "mksquashfs"]
BACKENDS: tuple[Backend, ...] = ("native", "mksquashfs")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InvalidOptions(f"unknown squashfs backend {backend!r}", hint="choose native or mksquashfs")


def write_squashfs(
    source: Path,
    dest: Path,
    options: SquashfsOptions | None = None,
    progress: Progress | None = None,
    *,
    backend: Backend = "native",
    cache: Cache | None = None,
) -> SquashfsResult:
    """Pack the directory ``source`` into ``dest`` with the chosen backend (only the native one uses ``cache``)."""
    _check_backend(backend)
    if backend == "mksquashfs":
        return mksquashfs(source, dest, options, progress)
    return pack(source, dest, options, progress, cache=cache)


def write_squashfs_file(
    file: Path,
    dest: Path,
    arcname: str = "LiveOS/rootfs.img",
    options: SquashfsOptions | None = None,
    progress: Progress | None = None,
    *,
    backend: Backend = "native",
    cache: Cache | None = None,
) -> SquashfsResult:
    """Pack one file as ``arcname`` into ``dest`` with the chosen backend (no staging copy natively).

    Only the native backend reuses compressed blocks from ``cache``.
    """
    _check_backend(backend)
    if backend == "mksquashfs":
        return mksquashfs_file(file, dest, arcname, options, progress)
    return pack_file(file, dest, arcname, options, progress, cache=cache)


__all__ = [
    "BACKENDS",
    "Backend",
    "SquashfsOptions",
    "SquashfsReader",
    "SquashfsResult",
    "SquashfsWriter",
    "bcj_for_arch",
    "describe",
    "mksquashfs",
    "mksquashfs_file",
    "pack",
    "pack_file",
    "parse_compress_args",
    "write_squashfs",
    "write_squashfs_file",
]
