"""The live layouts, by name: what the live file holds and how it is packed and booted (``--rootfs-type``).

Each layout is one class following :class:`Layout`'s protocol, in a module of its own here; it
is known by its entry in :data:`LAYOUTS`.  A new layout is one new module and one entry.
"""

from __future__ import annotations

from liveimg.errors import InvalidOptions
from liveimg.layouts.base import ROOTFS_IMG, Hook, Layout, Packed
from liveimg.layouts.erofs_ext4 import ErofsExt4
from liveimg.layouts.squashfs_ext4 import SquashfsExt4
from liveimg.layouts.squashfs_flat import SquashfsFlat

#: Every layout by its name, the default first: ``--rootfs-type``'s choices, in this order.
LAYOUTS: dict[str, type[Layout]] = {layout.name: layout for layout in (SquashfsExt4, SquashfsFlat, ErofsExt4)}


def get_layout(name: str) -> Layout:
    """A new instance of the layout ``name`` (one serves one build); :class:`InvalidOptions` if there is none."""
    try:
        return LAYOUTS[name]()
    except KeyError:
        raise InvalidOptions(f"unknown rootfs type {name!r}", hint=f"choose one of {', '.join(LAYOUTS)}") from None


__all__ = [
    "LAYOUTS",
    "ROOTFS_IMG",
    "ErofsExt4",
    "Hook",
    "Layout",
    "Packed",
    "SquashfsExt4",
    "SquashfsFlat",
    "get_layout",
]
