"""The appliance stage: the input probed and opened once, its sha256 begun, and who reads it chosen.

``--inspect`` (:attr:`~liveimg.options.BuildOptions.inspect`) decides: the host's own reader
(:mod:`liveimg.nativeimage`: raw images whose filesystems are ext) or the libguestfs appliance.
With ``auto`` the native reader is tried first; the appliance is launched only when a stage
needs it (:meth:`~liveimg.context.Build.appliance`): when the native reader refuses the
image, for the copy method, the flat layout, a /boot the native reader does not read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from liveimg.guest import Guest, open_guest, probe_image
from liveimg.manifest import InputDigest
from liveimg.nativeimage import NativeImage, NativeRefused, NativeUnavailable
from liveimg.rootfs import work_drive_size

if TYPE_CHECKING:
    from liveimg.context import Build

log = logging.getLogger(__name__)

#: The appliance's RAM during a build, MiB.  It inspects, streams files (the copy method's
#: cp -a, the flat type's tar-out) and reads /boot: none of it needs more.  Its page cache
#: fills whatever it is given, and QEMU's RSS with it: the xfs-on-LVM sample's copy method
#: peaked at 1392 MiB of QEMU with libguestfs's default 1280 MiB, at 386 MiB with 256, in the
#: same time (``$LIBGUESTFS_MEMSIZE`` still wins).
APPLIANCE_MEMORY_MIB = 256


def run(ctx: Build) -> None:
    with ctx.stage("appliance", timed=False):
        ctx.input = probe_image(ctx.image)  # opened once: hashed, sized and read as it is now
        ctx.input_digest = InputDigest(ctx.input)
        ctx.launcher = lambda: launch(ctx)
        choice = ctx.options.inspect
        if choice == "appliance":
            ctx.inspector = ctx.appliance("--inspect appliance")
            return
        try:
            native = NativeImage(ctx.input)
            native.layout()  # the partitions and the roles: cheap, and where most images are refused
        except NativeRefused as exc:
            if choice == "native":
                raise NativeUnavailable(
                    f"{ctx.image}: the native reader does not read it: {exc}", hint="use --inspect auto"
                ) from None
            ctx.inspector = ctx.appliance(f"the native reader does not read the image: {exc}")
            return
        log.info("inspection: native (the host reads %s's ext filesystems)", ctx.image.name)
        ctx.inspector = native


def launch(ctx: Build) -> Guest:
    """Launch the appliance on the input, with a sparse writable work drive (for the copy method)."""
    with ctx.stage("appliance", timed=False):
        # libguestfs cannot add a drive after launch: it costs nothing unless written.
        ctx.drive = ctx.txn.work / "appliance-rootfs.img"
        with open(ctx.drive, "wb") as f:
            f.truncate(work_drive_size(ctx.input.virtual_size, ctx.options.rootfs))
        guest = open_guest(
            ctx.input, accel=ctx.options.accel, work_drives=[ctx.drive], memsize=APPLIANCE_MEMORY_MIB,
            progress=ctx.progress, tmpdir=ctx.txn.work,
        )  # fmt: skip
        return ctx.resources.enter_context(guest)
