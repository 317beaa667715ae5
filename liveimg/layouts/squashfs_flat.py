"""``squashfs``, the flat layout: the physical root's tree itself in the squashfs, no ext4 image inside.

dracut uses a flat squashfs as the root under an overlay when it has ``/proc`` (dracut before
110) or ``/usr`` or ``/ostree`` (dracut-ng): an ostree physical root gets an empty ``/proc`` so
that both recognise it.  The tree is streamed from the appliance (:mod:`liveimg.tarout`) into
liveimg's own squashfs writer, ``/boot`` merged, so the appliance is still up when it packs.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveimg.errors import InvalidOptions
from liveimg.layouts.base import Hook, Layout
from liveimg.manifest import jsonable
from liveimg.options import squashfs_options
from liveimg.pxe import SQUASHFS_NAME
from liveimg.squashfs import SquashfsOptions, SquashfsResult
from liveimg.squashfs.writer import SquashfsWriter
from liveimg.tarout import tar_into

if TYPE_CHECKING:
    from liveimg.cache import Cache
    from liveimg.context import Build
    from liveimg.guest import Guest
    from liveimg.options import BuildOptions
    from liveimg.progress import Progress

#: dracut up to 059 (and early dracut-ng), with systemd in the initramfs, never creates the upper
#: and work directories of a temporary OverlayFS root (dracutdevs/dracut#1820, dracut-ng#431),
#: so a flat squashfs root fails with "overlayfs: failed to resolve '/run/overlayfs'".
OVERLAYFS_HOOK = """\
# liveimg: the directories a temporary OverlayFS live root needs (see dracut issue 1820)
mkdir -m 0755 -p /run/overlayfs /run/ovlwork
"""


class SquashfsFlat(Layout):
    name = "squashfs"
    summary = "the root's tree itself, mounted under an overlay"
    file_name = SQUASHFS_NAME
    packer = "squashfs"
    rootfs_image = None
    reads_guest = True
    hooks = (Hook("pre-mount", "10-liveimg-overlayfs.sh", OVERLAYFS_HOOK),)
    pack_options: SquashfsOptions  # set by preflight

    def check(self, options: BuildOptions) -> None:
        if options.squashfs_backend != "native":
            raise InvalidOptions(
                "the squashfs rootfs type streams the tree into liveimg's own writer: use --squashfs-backend native"
            )

    def preflight(self, ctx: Build) -> None:
        self.pack_options = squashfs_options(ctx.options, ctx.info.arch)

    def pack(self, ctx: Build) -> SquashfsResult:
        # The tree comes from the appliance; rootfs.img still feeds the dracut stage.
        return pack_guest_tree(ctx.guest, ctx.txn.out / self.file_name, self.pack_options, ctx.progress, ctx.cache)

    def manifest(self, ctx: Build) -> dict[str, Any]:
        return {"backend": ctx.options.squashfs_backend, **jsonable(asdict(self.pack_options))}


def pack_guest_tree(
    guest: Guest, dest: Path, options: SquashfsOptions, progress: Progress, cache: Cache | None = None
) -> SquashfsResult:
    """The physical root (``/boot`` merged) itself in the squashfs ``dest``, streamed from the appliance."""
    boot_mp = guest.boot_mountpoint
    with SquashfsWriter(dest, options, progress, cache=cache) as writer:
        skip = frozenset({"boot"}) if boot_mp is not None else frozenset()
        tar_into(guest.g, guest.root_mountpoint, writer, prefix="", skip=skip)
        if boot_mp is not None:
            tar_into(guest.g, boot_mp, writer, prefix="boot", skip=frozenset())
        if not guest.tree().lexists("/proc"):
            writer.add_directory("proc", mode=0o555)
        return writer.finish()


__all__ = ["OVERLAYFS_HOOK", "SquashfsFlat", "pack_guest_tree"]
