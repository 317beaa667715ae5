"""Stage 4: the live initramfs, built by the image's own dracut, and tools to read and extend one.

* :func:`build_initramfs` -- the stage: dracut with lorax's arguments in a rootless sandbox (or the
  libguestfs appliance), compressed on the host; returns an :class:`Initrd`;
* :class:`Initramfs` -- read any initramfs (early cpio + compressed archives + appended ones);
* :func:`append_cpio` -- bake kernel arguments and files into an initramfs without dracut;
* :func:`write_newc` -- the reproducible newc cpio writer behind it;
* :func:`plan_dracut` -- check a guest (a :class:`liveimg.fsview.GuestTree`) before building.
"""

from __future__ import annotations

from liveimg.dracut.compress import Compression, compress_initramfs
from liveimg.dracut.cpio import write_newc
from liveimg.dracut.customize import AppendCompression, Appended, EmbeddedFile, append_cpio, hook_dir
from liveimg.dracut.initramfs import Initramfs, Member, Segment
from liveimg.dracut.plan import DracutOptions, Plan, Where, plan_dracut
from liveimg.dracut.stage import Initrd, build_initramfs

__all__ = [
    "AppendCompression",
    "Appended",
    "Compression",
    "DracutOptions",
    "EmbeddedFile",
    "Initramfs",
    "Initrd",
    "Member",
    "Plan",
    "Segment",
    "Where",
    "append_cpio",
    "build_initramfs",
    "compress_initramfs",
    "hook_dir",
    "plan_dracut",
    "write_newc",
]
