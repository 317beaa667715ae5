"""What ``liveimg build`` can be told: :class:`BuildOptions`, frozen; each stage's options keep their own checks."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from liveimg.dracut import DracutOptions
from liveimg.efi import EfiOptions
from liveimg.iso import IsoOptions
from liveimg.pxe import PxeOptions
from liveimg.rootfs import RootfsOptions
from liveimg.squashfs import Backend, SquashfsOptions, bcj_for_arch, parse_compress_args


class RootfsType(enum.StrEnum):
    """The names of the live layouts liveimg ships (``--rootfs-type``): what the live file holds.

    :attr:`BuildOptions.rootfs_type` takes any name :data:`liveimg.layouts.LAYOUTS` has;
    these are liveimg's own, and each one's class there says how it is packed and booted.
    """

    #: ``LiveOS/rootfs.img`` (ext4) inside the squashfs: what lorax ships and every dracut boots.
    SQUASHFS_EXT4 = "squashfs-ext4"
    #: The physical root's tree itself in the squashfs; dracut mounts it under an overlay.
    SQUASHFS = "squashfs"
    #: ``LiveOS/rootfs.img`` inside an EROFS image (lorax's erofs-ext4); needs dracut-ng in the image.
    EROFS = "erofs"


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``liveimg build`` can be told.  Stage options keep their own validation."""

    deployment: str | None = None
    kernel: str | None = None
    rootfs: RootfsOptions = field(default_factory=RootfsOptions)
    rootfs_type: str = RootfsType.SQUASHFS_EXT4  # a layout's name (liveimg.layouts.LAYOUTS)
    compression: str = "xz"  # lorax's --compression
    compress_args: tuple[str, ...] = ()  # lorax's --compress-arg: each "-Xopt value"
    squashfs: SquashfsOptions | None = None  # full control; wins over compression and compress_args
    squashfs_processors: int | None = None  # compression threads (None: all CPUs)
    squashfs_backend: Backend = "native"
    dracut: DracutOptions = field(default_factory=DracutOptions)
    pxe: PxeOptions = field(default_factory=PxeOptions)
    iso: IsoOptions | None = None  # --iso: a live ISO too
    efi: EfiOptions = field(default_factory=EfiOptions)  # the UEFI network boot chain (--efi, --efi-from)
    embed_rootfs: bool = False  # the live file as a second initrd, root=live:/<file> (liveimg.embed)
    verify: bool = True  # the live initramfs checks the live file's size and sha256 (liveimg.liveverify)
    workdir: Path | None = None
    keep_workdir: bool = False
    force: bool = False
    accel: str | None = None
    #: The build cache (:mod:`liveimg.cache`): on by default; ``cache_dir`` None means ``$LIVEIMG_CACHE``,
    #: else ``~/.cache/liveimg/cache``; ``cache_max_bytes`` None means 10 GiB.  Only the native squashfs
    #: writer uses it (not mksquashfs, not the erofs layout).
    cache: bool = True
    cache_dir: Path | None = None
    cache_max_bytes: int | None = None


def squashfs_options(options: BuildOptions, arch: str | None) -> SquashfsOptions:
    """The squashfs options in effect for an image of architecture ``arch``.

    As lorax: xz gets the BCJ filter of the architecture, unless compressor arguments are
    given -- but of the IMAGE's architecture, where lorax takes the host's.
    """
    if options.squashfs is not None:
        return options.squashfs.validate()
    base = SquashfsOptions(comp=options.compression)
    if options.compression == "xz" and not options.compress_args:
        base = base.replace(Xbcj=bcj_for_arch(arch or ""))
    if options.squashfs_processors is not None:
        base = base.replace(processors=options.squashfs_processors)
    return parse_compress_args(options.compress_args, base)


__all__ = ["BuildOptions", "RootfsType", "squashfs_options"]
