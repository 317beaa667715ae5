"""The kernel, beside the initramfs (part of the dracut stage): copied out of ``LiveOS/rootfs.img``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from liveimg import e2fs
from liveimg.errors import InvalidImage

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    kernel = ctx.info.kernel
    name = f"vmlinuz-{kernel.version}"
    with ctx.stage("dracut"):
        copy_kernel(ctx.rootfs.path, kernel.path, ctx.txn.out / name)
    ctx.kernel = name


def copy_kernel(rootfs_img: Path, guest_path: str, dest: Path) -> None:
    """Copy the kernel out of rootfs.img (where /boot is merged) without mounting it."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    e2fs.dump_file(rootfs_img, guest_path, tmp)
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise InvalidImage(f"the kernel {guest_path} is missing or empty in the image")
    tmp.chmod(0o644)
    tmp.rename(dest)
