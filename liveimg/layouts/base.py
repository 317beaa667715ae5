"""The protocol of a live layout: what the live file holds, how it is packed, what dracut needs to boot it.

A layout is one class (:class:`Layout`), registered by its name in :data:`liveimg.layouts.LAYOUTS`.
The build makes one instance and calls it from its stages, in this order:

* :meth:`Layout.check` -- before anything is touched: options it cannot honour, tools it needs;
* :attr:`Layout.dracut_args` -- added to the image's dracut (also for the dracut preflight);
* :meth:`Layout.preflight` -- once the image is inspected, before the long stages: an image it
  cannot boot is refused, and what packing needs from the image is settled;
* :meth:`Layout.pack` -- the live file, ``OUTDIR/<file_name>``: while the appliance is still up
  if :attr:`Layout.reads_guest`, else once it is shut down (the packer gets its memory);
* :attr:`Layout.hooks` -- scripts appended to the live initramfs;
* :meth:`Layout.manifest` -- how the file was packed, the manifest's section :attr:`Layout.packer`.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from liveimg.context import Build
    from liveimg.options import BuildOptions

#: The ext4 image of the root inside the live file, where dracut's dmsquash-live looks for it.
ROOTFS_IMG = "LiveOS/rootfs.img"


@dataclass(frozen=True)
class Hook:
    """A script for the live initramfs, run by dracut at ``point`` (``pre-mount``, ``pre-pivot``, ...)."""

    point: str
    name: str  # its file name in the hook's directory, e.g. 10-liveimg-overlayfs.sh
    script: str


class Packed(Protocol):
    """What a layout's :meth:`~Layout.pack` returns: its packer's result, at least where and how big."""

    @property
    def path(self) -> os.PathLike[str] | str: ...

    @property
    def size(self) -> int: ...


class Layout(abc.ABC):
    """A live layout (``--rootfs-type``); one instance serves one build (see the module's docstring)."""

    #: ``--rootfs-type``'s value, and the manifest's ``rootfs.type``.
    name: ClassVar[str]
    #: One line for ``--rootfs-type``'s help.
    summary: ClassVar[str]
    #: The live file in OUTDIR, which the kernel command line names (``root=live:<URL>/<file_name>``).
    file_name: ClassVar[str]
    #: The pack stage's name (in errors and timings) and the manifest's section on packing.
    packer: ClassVar[str]
    #: The root's image inside the live file (the manifest's ``rootfs.image``); None: the root's tree itself.
    rootfs_image: ClassVar[str | None] = ROOTFS_IMG
    #: Whether :meth:`pack` reads the appliance rather than ``LiveOS/rootfs.img``.
    reads_guest: ClassVar[bool] = False
    #: Arguments added to the image's dracut, e.g. a driver for the live file's filesystem.
    dracut_args: ClassVar[tuple[str, ...]] = ()
    #: Scripts appended to the live initramfs.
    hooks: ClassVar[tuple[Hook, ...]] = ()

    def check(self, options: BuildOptions) -> None:  # noqa: B027  # a layout may take any options
        """Refuse options this layout cannot honour, before anything is touched."""

    def preflight(self, ctx: Build) -> None:  # noqa: B027  # a layout may need nothing of the image
        """Refuse an image this layout cannot boot, and settle what packing needs of it (``ctx.info``)."""

    @abc.abstractmethod
    def pack(self, ctx: Build) -> Packed:
        """Write the live file, ``ctx.txn.out / file_name`` (nothing there on failure)."""

    @abc.abstractmethod
    def manifest(self, ctx: Build) -> dict[str, Any]:
        """How the live file was packed: the manifest's section :attr:`packer` (JSON values)."""


__all__ = ["ROOTFS_IMG", "Hook", "Layout", "Packed"]
