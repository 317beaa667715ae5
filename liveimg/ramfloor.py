"""How much RAM a live network boot needs: the floor a build computes, says and puts in its initramfs.

liveimg's livenetroot (:mod:`liveimg.liveverify`) downloads the live file into the initramfs's
tmpfs, where it stays for the life of the system (the root is mounted from it); the unpacked
initramfs is in RAM until the switch to the real root; and the kernel, systemd and the live
system's services run beside them.  So a build needs

    the live file + the unpacked initramfs + :data:`BASE_MIB`

of the memory Linux manages: ``/proc/meminfo``'s ``MemTotal``, which leaves out what the firmware
and the kernel's own image keep, so a machine's installed RAM (QEMU's ``-m``) must be larger than
the floor by that much.  ``rd.live.ram=1`` copies the live file once more, to ``/run/initramfs``:
its boot needs the live file's size again, and, since systemd mounts ``/run`` with a size of a
fifth of the RAM (:data:`RUN_SHARE`; dracut's copy is cut short silently, then the mount fails),
a ``MemTotal`` of five times the live file and what else ``/run`` holds (:data:`RUN_OTHER_MIB`).

The floors go into the initramfs as :data:`RAM_FILE` (``NEED_MIB LIVE_RAM_MIB``), where
livenetroot compares the one of its command line with ``MemTotal`` before it downloads anything;
``liveimg.ramcheck=0`` on the kernel command line skips that comparison (the RAM-floor benchmark
boots below the floor with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liveimg.dracut import cpio
from liveimg.dracut.initramfs import Source, opened
from liveimg.errors import InvalidOptions

MiB = 1 << 20
#: What a tmpfs gives a file: whole pages.
PAGE = 4096
#: The rest of a live network boot, in MiB of ``MemTotal``: the kernel's own allocations, systemd
#: and udev in the initramfs and then in the live system, curl, the overlay's first writes.
#: Calibrated on the atomic sample by the RAM-floor benchmark (``benchmarks/ramfloor.py``); the
#: measurements are in ``benchmarks/README.md``, "RAM floor".
BASE_MIB = 64
#: systemd's ``/run`` in the initramfs is a tmpfs of this fraction of the RAM (1/5: ``size=20%``).
RUN_SHARE = 5
#: What ``/run`` holds besides the copy of ``rd.live.ram`` (udev's database, logs, dracut's state), in
#: MiB; calibrated with :data:`BASE_MIB` (``benchmarks/README.md``, "RAM floor").
RUN_OTHER_MIB = 4
#: Where the initramfs finds the floors: ``NEED_MIB LIVE_RAM_MIB``, one line.
RAM_FILE = "/etc/liveimg/ram"
#: The kernel argument that turns the initramfs's comparison off (``liveimg.ramcheck=0``).
RAMCHECK_ARG = "liveimg.ramcheck"


def _ceil_mib(size: int) -> int:
    return -(-size // MiB)


@dataclass(frozen=True)
class RamFloor:
    """A build's RAM floor, and what it was computed from (sizes in bytes)."""

    live_bytes: int
    initramfs_bytes: int  # the unpacked initramfs, in whole pages per file
    base_mib: int = BASE_MIB

    def __post_init__(self) -> None:
        for name in ("live_bytes", "initramfs_bytes", "base_mib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidOptions(f"RAM floor: {name} {value!r} must be a number of bytes (0 or more)")

    @property
    def live_mib(self) -> int:
        return _ceil_mib(self.live_bytes)

    @property
    def initramfs_mib(self) -> int:
        return _ceil_mib(self.initramfs_bytes)

    @property
    def need_mib(self) -> int:
        """MiB of ``MemTotal`` a network boot needs (overlay or ``rd.writable.fsimg``)."""
        return _ceil_mib(self.live_bytes + self.initramfs_bytes) + self.base_mib

    @property
    def live_ram_mib(self) -> int:
        """The same with ``rd.live.ram=1``: the live file copied once more, into a ``/run`` of
        :data:`RUN_SHARE`-th of the RAM."""
        return max(self.need_mib + self.live_mib, RUN_SHARE * (self.live_mib + RUN_OTHER_MIB))

    def line(self) -> str:
        """:data:`RAM_FILE`'s content."""
        return f"{self.need_mib} {self.live_ram_mib}\n"

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``initramfs.ram_floor``: the floors and how they were computed."""
        return {
            "need_mib": self.need_mib,
            "live_ram_mib": self.live_ram_mib,
            "measure": "MemTotal",
            "computed": "live file + unpacked initramfs + base; rd.live.ram=1: the same + live file, "
            f"at least {RUN_SHARE} x (live file + {RUN_OTHER_MIB} MiB) for systemd's /run",
            "live_mib": self.live_mib,
            "initramfs_unpacked_mib": self.initramfs_mib,
            "base_mib": self.base_mib,
        }


def unpacked_bytes(initramfs: Source) -> int:
    """What ``initramfs`` (a path, or one already open) takes in RAM once the kernel has unpacked
    it: its files' final versions, each in whole pages (the tmpfs's unit); directories, links and
    second names are left out."""
    total = 0
    with opened(initramfs) as ird:
        for member in ird.files().values():
            if member.kind is cpio.Kind.FILE:  # a hard link is a second name of the same pages
                total += -(-member.size // PAGE) * PAGE
    return total


__all__ = ["BASE_MIB", "RAMCHECK_ARG", "RAM_FILE", "RUN_OTHER_MIB", "RUN_SHARE", "RamFloor", "unpacked_bytes"]
