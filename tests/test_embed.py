"""--embed-rootfs's archive (read back by libarchive and GNU cpio) and the size limits it warns about."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import libarchive  # type: ignore[import-untyped]
import pytest

from liveimg.dracut import cpio
from liveimg.embed import (
    CPIO_NAME,
    INITRD_ADDR_MAX,
    TFTP_PLAIN_LIMIT,
    embedded_path,
    size_warnings,
    write_embedded,
)
from liveimg.errors import InvalidOptions
from tests.support import need

pytestmark = pytest.mark.unit

MIB = 1 << 20


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1 << 20, (1 << 20) + 7])
def test_the_archive_holds_the_live_file_at_its_path_4_byte_aligned(tmp_path: Path, size: int) -> None:
    live = tmp_path / "live-rootfs.squashfs.img"
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    live.write_bytes(data[:size])
    embedded = write_embedded(live, tmp_path / CPIO_NAME)
    raw = (tmp_path / CPIO_NAME).read_bytes()
    assert embedded.size == len(raw) and len(raw) % 4 == 0
    assert embedded.path == "/live-rootfs.squashfs.img" and embedded.root_arg == "root=live:/live-rootfs.squashfs.img"
    # newc: the header, the name (NUL, padded to 4), then the data at a 4-byte aligned offset.
    assert raw.startswith(cpio.NEWC_MAGIC)
    name = b"live-rootfs.squashfs.img\0"
    start = cpio.HEADER_SIZE + len(name) + (-(cpio.HEADER_SIZE + len(name)) % 4)
    assert start % 4 == 0 and raw[start : start + size] == live.read_bytes()
    assert int(raw[54:62], 16) == size and int(raw[14:22], 16) == 0o100444  # c_filesize, c_mode
    with libarchive.memory_reader(raw) as archive:
        entries = [(e.pathname, e.size, e.isreg, b"".join(e.get_blocks())) for e in archive]
    assert entries == [("live-rootfs.squashfs.img", size, True, live.read_bytes())]


def test_gnu_cpio_reads_it_back(tmp_path: Path) -> None:
    need("cpio")
    live = tmp_path / "live-rootfs.erofs.img"
    live.write_bytes(b"E" * 4099)
    write_embedded(live, tmp_path / CPIO_NAME)
    unpacked = tmp_path / "root"
    unpacked.mkdir()
    with open(tmp_path / CPIO_NAME, "rb") as archive:
        subprocess.run(["cpio", "-id", "--quiet"], stdin=archive, cwd=unpacked, check=True)
    assert [p.name for p in unpacked.iterdir()] == ["live-rootfs.erofs.img"]
    assert (unpacked / "live-rootfs.erofs.img").read_bytes() == live.read_bytes()


def test_the_archive_is_streamed_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = tmp_path / "live-rootfs.squashfs.img"
    live.write_bytes(b"s" * (3 * MIB + 5))
    reads: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, f: object) -> None:
            self.f = f

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()  # type: ignore[attr-defined]

        def read(self, n: int = -1) -> bytes:
            reads.append(n)
            return self.f.read(n)  # type: ignore[attr-defined,no-any-return]

    def spy(path: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        f = real_open(path, mode, *args, **kwargs)  # type: ignore[call-overload]
        return Counting(f) if Path(str(path)) == live and "r" in mode else f

    monkeypatch.setattr("builtins.open", spy)
    write_embedded(live, tmp_path / CPIO_NAME)
    assert reads and all(0 < n <= MIB for n in reads)


def test_a_live_file_of_4_gib_cannot_be_embedded(tmp_path: Path) -> None:
    live = tmp_path / "live-rootfs.squashfs.img"
    with open(live, "wb") as f:
        f.truncate(1 << 32)  # sparse
    with pytest.raises(InvalidOptions, match="too large for a cpio entry"):
        write_embedded(live, tmp_path / CPIO_NAME)
    assert not (tmp_path / CPIO_NAME).exists()


def test_the_path_is_the_live_files_name_at_the_root() -> None:
    assert embedded_path("live-rootfs.squashfs.img") == "/live-rootfs.squashfs.img"
    with pytest.raises(InvalidOptions):
        embedded_path("../x.img")


def test_the_size_warnings_name_each_limit_passed() -> None:
    small = size_warnings(16 * MIB, 40 * MIB, 100 * MIB)
    assert (
        len(small) == 1
        and "at least 172 MiB of RAM (the live file twice, the initramfs loaded and unpacked)" in small[0]
    )
    assert size_warnings(TFTP_PLAIN_LIMIT, 0)[0].startswith("while the kernel unpacks")  # at the limit: fine
    tftp = size_warnings(TFTP_PLAIN_LIMIT + 1, 40 * MIB)
    assert len(tftp) == 2 and "TFTP carries at most 32 MiB (65535 blocks of 512 bytes)" in tftp[0]
    assert "a blksize of at least 513 bytes (at 1428: 89 MiB)" in tftp[0]
    assert "a blksize of at least 7340 bytes" in size_warnings(481026308, 0)[0]  # the atomic sample's, lz4
    assert len(size_warnings(INITRD_ADDR_MAX + 1 - 40 * MIB, 40 * MIB)) == 2  # the two end at 2 GiB: fine
    big = size_warnings(INITRD_ADDR_MAX + 2 - 40 * MIB, 40 * MIB)
    assert len(big) == 3 and "below initrd_addr_max (2 GiB)" in big[1]
