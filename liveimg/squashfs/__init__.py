"""Stage 3: pack ``LiveOS/rootfs.img`` (or any tree) into a squashfs image.

Two backends take the same :class:`SquashfsOptions`: the mksquashfs wrapper
(:mod:`liveimg.squashfs.mksquashfs`) and liveimg's own writer.
"""

from __future__ import annotations

from liveimg.squashfs.mksquashfs import mksquashfs, mksquashfs_file
from liveimg.squashfs.options import SquashfsOptions, SquashfsResult, bcj_for_arch, parse_compress_args

__all__ = [
    "SquashfsOptions",
    "SquashfsResult",
    "bcj_for_arch",
    "mksquashfs",
    "mksquashfs_file",
    "parse_compress_args",
]
