"""GPT and MBR partition tables of a raw disk image, parsed in pure Python, every field checked.

The bytes come from the guest: this parser reads a bounded number of sectors (the MBR, the GPT
header, at most :data:`MAX_GPT_ARRAY` bytes of entries), checks the CRCs, the usable range and
that partitions lie inside the disk and do not overlap, and gives up (:class:`TableRefused`)
on anything it does not read exactly as libblkid and the kernel would: extended (logical) MBR
partitions, a hybrid or damaged GPT, more than :data:`MAX_PARTITIONS` entries.  The caller then
lets the libguestfs appliance read the disk.  A partition past the disk's end is
:class:`~liveimg.errors.InvalidImage` (what the appliance path says too).

Sectors are 512 bytes, as a raw file attached to a virtual disk has them; the fields are named
as ``blkid -p -o export`` names them (``PART_ENTRY_TYPE``, ``PART_ENTRY_UUID``,
``PART_ENTRY_NAME``), so that both readers describe a partition the same way.
"""

from __future__ import annotations

import itertools
import os
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from liveimg.errors import InvalidImage

SECTOR = 512
#: Most partitions accepted (a GPT's usual array holds 128 entries).
MAX_PARTITIONS = 128
#: Most bytes of GPT entries read.
MAX_GPT_ARRAY = 128 * 1024
_EXTENDED = (0x05, 0x0F, 0x85)
_PROTECTIVE = 0xEE
_GPT_SIGNATURE = b"EFI PART"


class TableRefused(Exception):  # a verdict, not a failure: the caller falls back
    """This parser does not read the table exactly as the appliance would (the reason is its text)."""


@dataclass(frozen=True)
class TableEntry:
    """One partition: its number (as the kernel numbers it), exact byte range, and blkid's fields."""

    number: int
    offset: int
    length: int
    parttype: str  # GPT type GUID (lower case) or MBR type ("0x83")
    partuuid: str | None
    partlabel: str | None


@dataclass(frozen=True)
class Table:
    kind: str  # "gpt" or "dos", as blkid's PTTYPE
    entries: tuple[TableEntry, ...]


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise TableRefused(f"short read at byte {offset}")
    return data


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def read_table(fd: int, disk_size: int, image: Path) -> Table | None:
    """The partition table of the raw disk open as ``fd`` (``disk_size`` bytes); None if it has none.

    Raises :class:`TableRefused` for a table this parser does not read, :class:`InvalidImage` for
    one whose partitions lie outside the disk.
    """
    if disk_size < 2 * SECTOR:
        return None
    mbr = _pread(fd, SECTOR, 0)
    if mbr[510:512] != b"\x55\xaa":
        return None
    raw = [mbr[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    if any(entry[0] not in (0x00, 0x80) for entry in raw):
        raise TableRefused("the boot sector's signature is there but its partition entries are not an MBR's")
    if mbr[0x36:0x39] == b"FAT" or mbr[0x52:0x57] == b"FAT32" or mbr[3:11] == b"NTFS    ":
        raise TableRefused("the first sector is a FAT or NTFS boot sector")
    used = [(i + 1, e[4], *struct.unpack_from("<II", e, 8)) for i, e in enumerate(raw) if e[4] and e[12:16] != bytes(4)]
    if not used:
        raise TableRefused("an MBR with no partition")
    if any(kind == _PROTECTIVE for _, kind, _, _ in used):
        if len(used) != 1:
            raise TableRefused("a hybrid MBR (a protective entry beside others)")
        return _gpt(fd, disk_size, image)
    if any(kind in _EXTENDED for _, kind, _, _ in used):
        raise TableRefused("extended (logical) MBR partitions")
    disk_id = struct.unpack_from("<I", mbr, 440)[0]
    entries = []
    for number, kind, start, count in used:
        if start == 0:
            raise TableRefused(f"MBR partition {number} starts at sector 0")
        entries.append(
            TableEntry(
                number=number,
                offset=start * SECTOR,
                length=count * SECTOR,
                parttype=f"0x{kind:x}",
                partuuid=f"{disk_id:08x}-{number:02x}" if disk_id else None,
                partlabel=None,
            )
        )
    return Table("dos", _checked(entries, disk_size, image, first=SECTOR))


def _gpt(fd: int, disk_size: int, image: Path) -> Table:
    sectors = disk_size // SECTOR
    header = _pread(fd, SECTOR, SECTOR)
    if header[:8] != _GPT_SIGNATURE:
        raise TableRefused("a protective MBR but no GPT header at sector 1")
    (size,) = struct.unpack_from("<I", header, 12)
    if not 92 <= size <= SECTOR:
        raise TableRefused(f"a GPT header of {size} bytes")
    (crc,) = struct.unpack_from("<I", header, 16)
    if zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:size]) != crc:
        raise TableRefused("the GPT header's CRC does not match")
    my_lba, _alternate, first, last = struct.unpack_from("<QQQQ", header, 24)
    array_lba, count, entry_size, array_crc = struct.unpack_from("<QIII", header, 72)
    if my_lba != 1:
        raise TableRefused(f"the GPT header says it is at sector {my_lba}, not 1")
    if entry_size < 128 or entry_size % 8 or entry_size * count > MAX_GPT_ARRAY or count == 0:
        raise TableRefused(f"a GPT array of {count} entries of {entry_size} bytes")
    array_bytes = entry_size * count
    if array_lba < 2 or array_lba * SECTOR + array_bytes > disk_size:
        raise TableRefused(f"the GPT array at sector {array_lba} is outside the disk")
    if not (array_lba * SECTOR + array_bytes <= first * SECTOR and first <= last < sectors):
        raise TableRefused(f"the GPT's usable sectors {first}-{last} are not inside the disk after its array")
    array = _pread(fd, array_bytes, array_lba * SECTOR)
    if zlib.crc32(array) != array_crc:
        raise TableRefused("the GPT array's CRC does not match")
    entries = []
    for index in range(count):
        raw = array[index * entry_size : index * entry_size + 128]
        if raw[:16] == b"\0" * 16:
            continue
        start, end = struct.unpack_from("<QQ", raw, 32)
        number = index + 1
        if number > MAX_PARTITIONS:
            raise TableRefused(f"GPT partition {number}: more than {MAX_PARTITIONS} partitions")
        if not first <= start <= end:
            raise TableRefused(f"GPT partition {number} (sectors {start}-{end}) is outside the usable sectors")
        if end > last:
            raise InvalidImage(
                f"{image}: partition {number} (bytes {start * SECTOR}+{(end - start + 1) * SECTOR}) extends beyond "
                f"the end of the disk ({disk_size} bytes): a truncated or hostile image"
            )
        name = raw[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        entries.append(
            TableEntry(
                number=number,
                offset=start * SECTOR,
                length=(end - start + 1) * SECTOR,
                parttype=_guid(raw[:16]),
                partuuid=_guid(raw[16:32]),
                partlabel=name or None,
            )
        )
    return Table("gpt", _checked(entries, disk_size, image, first=first * SECTOR))


def _checked(entries: list[TableEntry], disk_size: int, image: Path, *, first: int) -> tuple[TableEntry, ...]:
    """The entries, once each is inside the disk and none overlaps another."""
    for entry in entries:
        if entry.length <= 0:
            raise TableRefused(f"partition {entry.number} is empty")
        if entry.offset < first:
            raise TableRefused(f"partition {entry.number} overlaps the partition table")
        if entry.offset + entry.length > disk_size:
            raise InvalidImage(
                f"{image}: partition {entry.number} (bytes {entry.offset}+{entry.length}) extends beyond the end "
                f"of the disk ({disk_size} bytes): a truncated or hostile image"
            )
    ordered = sorted(entries, key=lambda e: e.offset)
    for a, b in itertools.pairwise(ordered):
        if a.offset + a.length > b.offset:
            raise TableRefused(f"partitions {a.number} and {b.number} overlap")
    return tuple(sorted(entries, key=lambda e: e.number))
