"""The appliance stage: the input probed and opened once, its sha256 begun, the libguestfs appliance launched."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg.guest import open_guest, probe_image
from liveimg.manifest import InputDigest
from liveimg.rootfs import work_drive_size

if TYPE_CHECKING:
    from liveimg.context import Build

#: The appliance's RAM during a build, MiB.  It inspects, streams files (the copy method's
#: cp -a, the flat type's tar-out) and reads /boot: none of it needs more.  Its page cache
#: fills whatever it is given, and QEMU's RSS with it: the xfs-on-LVM sample's copy method
#: peaked at 1392 MiB of QEMU with libguestfs's default 1280 MiB, at 386 MiB with 256, in the
#: same time (``$LIBGUESTFS_MEMSIZE`` still wins).
APPLIANCE_MEMORY_MIB = 256


def run(ctx: Build) -> None:
    with ctx.stage("appliance", timed=False):
        ctx.input = probe_image(ctx.image)  # opened once: hashed, sized and read by libguestfs as it is now
        ctx.input_digest = InputDigest(ctx.input)
        # A sparse, writable drive for the appliance, in case the root must be copied file by file
        # (libguestfs cannot add a drive after launch): it costs nothing unless written.
        ctx.drive = ctx.txn.work / "appliance-rootfs.img"
        with open(ctx.drive, "wb") as f:
            f.truncate(work_drive_size(ctx.input.virtual_size, ctx.options.rootfs))
        guest = open_guest(
            ctx.input, accel=ctx.options.accel, work_drives=[ctx.drive], memsize=APPLIANCE_MEMORY_MIB,
            progress=ctx.progress, tmpdir=ctx.txn.work,
        )  # fmt: skip
        ctx.guest = ctx.resources.enter_context(guest)
