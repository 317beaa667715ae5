"""liveimg: turn an installed Linux disk image into network-bootable live artifacts.

The library other build tools use is this package's top level::

    import liveimg

    info = liveimg.inspect("atomic.qcow2")                  # ImageInfo: root, /boot, deployments...
    result = liveimg.build("atomic.qcow2", "out", liveimg.BuildOptions(
        pxe=liveimg.PxeOptions(url="http://pxe.example.com/atomic")))
    assert liveimg.boot_test("out", liveimg.BootTestOptions(via="ipxe")).ok

:func:`build` runs the whole pipeline (inspect, rootfs, squashfs, dracut, pxe) into an OUTDIR
replaced as a whole or not at all; :func:`inspect` describes an image; :func:`make_iso` makes a
hybrid live ISO from a finished OUTDIR; :func:`boot_test` boots an OUTDIR in QEMU and checks the
live system from inside.  Options are frozen dataclasses
checked when made; every error is a :class:`LiveImgError` subclass saying who must act
(:class:`InvalidOptions` the caller, :class:`InvalidImage` the input, :class:`ToolError` an
external program, :class:`HostError` this machine, :class:`InternalError` liveimg itself;
:class:`Cancelled` when a signal ended the work).  Progress goes to a :class:`Progress` given
a sink: any callable taking an :class:`Event`, or :class:`JsonLines`, :class:`StageLines`,
:class:`TerminalBar`.
:func:`write_image` writes an image (a hybrid ISO) to a USB stick and reads it back,
after :func:`probe_target` has named the device and refused what is not a removable,
unused whole disk large enough (:class:`DeviceRefused`).

Stability: the names in ``__all__`` are the public API.  Until 1.0 they may change between
minor versions, and every change is named in the release notes; the stage modules
(``liveimg.rootfs``, ``liveimg.squashfs``, ``liveimg.dracut``, ...) are usable on their own
but carry no such promise.
"""

from __future__ import annotations

from liveimg._version import __version__
from liveimg.boottest import BootTestOptions, BootTestResult, boot_test
from liveimg.context import BuildResult
from liveimg.dracut import Compression, DracutOptions
from liveimg.efi import EfiMode, EfiOptions
from liveimg.errors import (
    Cancelled,
    HostError,
    ImageNotFound,
    InternalError,
    InvalidImage,
    InvalidOptions,
    LiveImgError,
    OutdirBusy,
    ToolError,
    ToolNotFound,
    ToolTimeout,
)
from liveimg.guest import inspect_image as inspect
from liveimg.imageinfo import ImageInfo
from liveimg.iso import IsoOptions, IsoResult, make_iso
from liveimg.options import BuildOptions, RootfsType
from liveimg.pipeline import build
from liveimg.progress import Event, JsonLines, Progress, StageLines, TerminalBar
from liveimg.pxe import CloudInitSeed, PxeOptions
from liveimg.rootfs import RootfsOptions
from liveimg.squashfs import SquashfsOptions
from liveimg.write import (
    BlockDevice,
    DeviceRefused,
    WriteOptions,
    WriteResult,
    WriteVerifyFailed,
    probe_target,
    write_image,
)

__all__ = [
    "BlockDevice",
    "BootTestOptions",
    "BootTestResult",
    "BuildOptions",
    "BuildResult",
    "Cancelled",
    "CloudInitSeed",
    "Compression",
    "DeviceRefused",
    "DracutOptions",
    "EfiMode",
    "EfiOptions",
    "Event",
    "HostError",
    "ImageInfo",
    "ImageNotFound",
    "InternalError",
    "InvalidImage",
    "InvalidOptions",
    "IsoOptions",
    "IsoResult",
    "JsonLines",
    "LiveImgError",
    "OutdirBusy",
    "Progress",
    "PxeOptions",
    "RootfsOptions",
    "RootfsType",
    "SquashfsOptions",
    "StageLines",
    "TerminalBar",
    "ToolError",
    "ToolNotFound",
    "ToolTimeout",
    "WriteOptions",
    "WriteResult",
    "WriteVerifyFailed",
    "__version__",
    "boot_test",
    "build",
    "inspect",
    "make_iso",
    "probe_target",
    "write_image",
]
