"""liveimg: turn an installed Linux disk image into network-bootable live artifacts.

The pipeline, one module per stage: :mod:`liveimg.guest` (inspect the image, find the
ostree deployment), :mod:`liveimg.rootfs` (``LiveOS/rootfs.img``), :mod:`liveimg.squashfs`,
:mod:`liveimg.dracut` (the live initramfs), :mod:`liveimg.pxe` (boot configuration) and
:mod:`liveimg.boottest` (boot test, on :mod:`liveimg.qemu`, :mod:`liveimg.console` and
:mod:`liveimg.httpserve`), tied together by :mod:`liveimg.pipeline`.
"""

from __future__ import annotations

from liveimg.errors import (
    HostError,
    InternalError,
    InvalidImage,
    InvalidOptions,
    LiveImgError,
    ToolError,
    ToolNotFound,
)

__version__ = "0.1.0"

__all__ = [
    "HostError",
    "InternalError",
    "InvalidImage",
    "InvalidOptions",
    "LiveImgError",
    "ToolError",
    "ToolNotFound",
    "__version__",
]
