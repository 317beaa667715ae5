"""The GPT and MBR parser (liveimg.parttable) against sfdisk's tables, and hostile fields refused."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import InvalidImage
from liveimg.parttable import SECTOR, Table, TableRefused, read_table
from tests.support import need

MiB = 1 << 20


def disk(tmp_path: Path, script: str, size: int = 16 * MiB) -> Path:
    need("sfdisk")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(size)
    runner.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)], input=script.encode())
    return image


def table(image: Path) -> Table | None:
    fd = os.open(image, os.O_RDONLY)
    try:
        return read_table(fd, image.stat().st_size, image)
    finally:
        os.close(fd)


GPT = 'label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name="bios boot"\nstart=4096, size=8192, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"\n'  # noqa: E501


def test_a_gpt_reads_as_sfdisk_reads_it(tmp_path: Path) -> None:
    image = disk(tmp_path, GPT)
    got = table(image)
    listed = json.loads(runner.run(["sfdisk", "--json", str(image)]).stdout)["partitiontable"]["partitions"]
    assert got is not None and got.kind == "gpt"
    entries = got.entries
    assert [(e.number, e.offset, e.length) for e in entries] == [
        (i + 1, p["start"] * SECTOR, p["size"] * SECTOR) for i, p in enumerate(listed)
    ]
    assert [e.partuuid for e in entries] == [p["uuid"].lower() for p in listed]
    assert [e.parttype for e in entries] == [p["type"].lower() for p in listed]
    assert [e.partlabel for e in entries] == ["bios boot", "root"]


def test_an_mbr_reads_with_blkid_s_types_and_partuuids(tmp_path: Path) -> None:
    image = disk(
        tmp_path, "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=4096, type=83\nstart=8192, size=4096, type=82\n"
    )
    got = table(image)
    assert got is not None and got.kind == "dos"
    assert [(e.number, e.offset, e.parttype, e.partuuid) for e in got.entries] == [
        (1, 2048 * SECTOR, "0x83", "1234abcd-01"),
        (2, 8192 * SECTOR, "0x82", "1234abcd-02"),
    ]


def test_no_signature_is_no_table(tmp_path: Path) -> None:
    image = tmp_path / "zeros"
    image.write_bytes(bytes(4096))
    assert table(image) is None


def _rewrite_gpt(image: Path, edit_entry: int, first: int, last: int) -> None:
    """Give GPT entry ``edit_entry`` (0-based) the sectors first..last, with both CRCs made right again."""
    with open(image, "r+b") as f:
        f.seek(SECTOR)
        header = bytearray(f.read(SECTOR))
        array_lba, count, size = struct.unpack_from("<QII", header, 72)
        f.seek(array_lba * SECTOR)
        array = bytearray(f.read(count * size))
        struct.pack_into("<QQ", array, edit_entry * size + 32, first, last)
        struct.pack_into("<I", header, 88, zlib.crc32(array))
        struct.pack_into("<I", header, 16, 0)
        struct.pack_into("<I", header, 16, zlib.crc32(header[:92]))
        f.seek(array_lba * SECTOR)
        f.write(array)
        f.seek(SECTOR)
        f.write(header)


def test_hostile_gpts_are_refused(tmp_path: Path) -> None:
    image = disk(tmp_path, GPT)
    _rewrite_gpt(image, 1, 4096, 1 << 40)  # past the disk's end
    with pytest.raises(InvalidImage, match=r"partition 2 .* extends beyond the end of the disk"):
        table(image)
    _rewrite_gpt(image, 1, 3000, 8000)  # over partition 1
    with pytest.raises(TableRefused, match="overlap"):
        table(image)
    _rewrite_gpt(image, 1, 9000, 8000)  # ends before it starts
    with pytest.raises(TableRefused, match="outside the usable sectors"):
        table(image)
    with open(image, "r+b") as f:  # one byte of the header changed: its CRC no longer matches
        f.seek(SECTOR + 40)
        f.write(b"\xff")
    with pytest.raises(TableRefused, match="CRC"):
        table(image)


def test_a_huge_gpt_array_is_refused_unread(tmp_path: Path) -> None:
    image = disk(tmp_path, GPT)
    with open(image, "r+b") as f:
        f.seek(SECTOR)
        header = bytearray(f.read(SECTOR))
        struct.pack_into("<I", header, 80, 1 << 30)  # entries
        struct.pack_into("<I", header, 16, 0)
        struct.pack_into("<I", header, 16, zlib.crc32(header[:92]))
        f.seek(SECTOR)
        f.write(header)
    with pytest.raises(TableRefused, match="a GPT array of 1073741824 entries"):
        table(image)


def test_logical_mbr_partitions_and_bad_boot_flags_are_left_to_the_appliance(tmp_path: Path) -> None:
    image = disk(tmp_path, "label: dos\nstart=2048, size=8192, type=5\nstart=4096, size=2048, type=83\n")
    with pytest.raises(TableRefused, match="extended"):
        table(image)
    with open(image, "r+b") as f:
        f.seek(446)
        f.write(b"\x42")
    with pytest.raises(TableRefused, match="not an MBR"):
        table(image)
