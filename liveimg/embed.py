"""``--embed-rootfs``: the live file delivered as a second initrd, so that TFTP or iPXE alone boots it.

:func:`write_embedded` writes ``live-rootfs.cpio``: an uncompressed newc archive (the kernel
unpacks it without a second decompression buffer) of one entry, the live file at
``/<its name>`` (``/live-rootfs.squashfs.img``), streamed from the file by
:func:`liveimg.dracut.cpio.write_newc`.  The boot loader loads it after the initramfs; the
kernel unpacks both into its root filesystem, and ``root=live:/live-rootfs.squashfs.img``
names a file there.  The image's dracut takes that form as it is (dmsquash-live's
``parse-dmsquash-live.sh``: ``live:/*.img`` that exists is a root; ``dmsquash-live-root``
then loop-mounts the file): no network, no download, so liveimg's livenetroot never runs.

The kernel finds an uncompressed archive only at an offset that is a multiple of 4 in the
initrds as loaded (``init/initramfs.c``): the archive is 4-byte aligned throughout, and the
initramfs before it ends 4-byte aligned (liveimg's appended archive pads it so), whatever
alignment the boot loader adds.

The limits (:func:`size_warnings`), each said at build time when the archive passes it:

* TFTP: RFC 1350's 16-bit block number and 512-byte blocks carry at most 65535 × 512 bytes
  (32 MiB) unless client and server negotiate a larger ``blksize`` (RFC 2348; 65535 × 1428 bytes
  with Ethernet-sized blocks) or let the block number roll over;
* the x86 boot protocol (``Documentation/arch/x86/boot.rst``): the initrds must lie below the
  kernel's ``initrd_addr_max``, which x86 kernels set to 0x7fffffff (2 GiB); pxelinux and a BIOS
  GRUB load them there, in one piece;
* a newc entry's size field is 32 bits: a live file of 4 GiB or more cannot be embedded at all
  (an :class:`~liveimg.errors.InvalidOptions` from the cpio writer);
* RAM: the kernel keeps the loaded initrds until it has unpacked them into its root
  filesystem, so the machine holds the live file twice, and the initramfs loaded and unpacked,
  while it boots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from liveimg.dracut import cpio
from liveimg.staging import AtomicOutput

log = logging.getLogger(__name__)

#: The second initrd in OUTDIR.
CPIO_NAME = "live-rootfs.cpio"
MIB = 1 << 20
#: RFC 1350: 16-bit block numbers of 512 bytes, without rollover or a negotiated blksize.
TFTP_PLAIN_LIMIT = 65535 * 512
#: The same with RFC 2348's blksize at 1428 bytes (an Ethernet frame's payload less the headers).
TFTP_ETHERNET_LIMIT = 65535 * 1428
#: x86 kernels' ``initrd_addr_max`` (boot.rst; ``arch/x86/boot/header.S``): the initrds end below it.
INITRD_ADDR_MAX = 0x7FFFFFFF


@dataclass(frozen=True)
class Embedded:
    """The second initrd: its file name in OUTDIR, the live file's path inside it, its size."""

    file: str
    path: str  # absolute, as root=live: names it
    size: int

    @property
    def root_arg(self) -> str:
        return f"root=live:{self.path}"


def embedded_path(live_name: str) -> str:
    """Where the live file ``live_name`` is inside the second initrd (and so in the booted initramfs)."""
    return "/" + cpio.normalize_path(live_name)


def write_embedded(live: Path, dest: Path) -> Embedded:
    """Write ``dest``, the newc archive holding ``live`` at :func:`embedded_path`, streamed (never in memory)."""
    path = embedded_path(live.name)
    with AtomicOutput(dest) as tmp, open(tmp, "wb") as out:
        size = cpio.write_newc([cpio.file(path, live, 0o444)], out, parents=False)
    return Embedded(file=dest.name, path=path, size=size)


def size_warnings(embedded_size: int, initramfs_size: int, initramfs_unpacked: int = 0) -> list[str]:
    """The limits the second initrd passes (see the module), one sentence each; ``initramfs_unpacked``
    (bytes, the initramfs's files) counts in the RAM the kernel holds while it unpacks."""
    warnings = []
    mib = embedded_size / MIB
    if embedded_size > TFTP_PLAIN_LIMIT:
        blksize = -(-embedded_size // 65535)
        warnings.append(
            f"{CPIO_NAME} is {mib:.0f} MiB: TFTP carries at most 32 MiB (65535 blocks of 512 bytes); this needs "
            f"a client and server that negotiate a blksize of at least {blksize} bytes (at 1428: "
            f"{TFTP_ETHERNET_LIMIT / MIB:.0f} MiB) or roll the block number over"
        )
    total = embedded_size + initramfs_size
    if total > INITRD_ADDR_MAX + 1:
        warnings.append(
            f"the two initrds are {total / MIB:.0f} MiB together: x86 kernels take their initrds below "
            f"initrd_addr_max (2 GiB), where pxelinux and a BIOS GRUB put them; a larger live file does not boot "
            "that way"
        )
    # While the kernel unpacks, the loaded initrds and the files unpacked from them are in RAM together.
    need = (2 * embedded_size + initramfs_size + initramfs_unpacked) / MIB
    warnings.append(
        f"while the kernel unpacks the initrds it holds them and their files together: at least {need:.0f} MiB "
        f"of RAM (the live file twice, the initramfs loaded and unpacked), besides the kernel's own and what "
        "the live system uses"
    )
    return warnings


__all__ = [
    "CPIO_NAME",
    "INITRD_ADDR_MAX",
    "TFTP_ETHERNET_LIMIT",
    "TFTP_PLAIN_LIMIT",
    "Embedded",
    "embedded_path",
    "size_warnings",
    "write_embedded",
]
