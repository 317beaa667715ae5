"""Tar streams into the writer, and the flat rootfs type's tar-out: every failure fails the build.

The streams are GNU tar's own (what the appliance's tar-out runs), cut and damaged the ways a
failing producer leaves them.  ``tar_into`` is fed by a stand-in for libguestfs's handle whose
``tar_out`` writes such a stream to the file it is given and then fails, or not; the real
appliance failing on a damaged guest filesystem is in tests/integration/test_squashfs_tar_out.py.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from liveimg import run as runner
from liveimg.errors import HostError, InvalidImage
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.tar import DamagedStream, add_tar_stream
from liveimg.squashfs.writer import SquashfsWriter
from liveimg.tarout import tar_into
from tests import support
from tests.squashfs.helpers import listing

FAST = SquashfsOptions(comp="lz4", block_size=4096, mkfs_time=0)


@pytest.fixture
def gnu_tar(tmp_path: Path) -> bytes:
    """A tree as the appliance streams it: GNU tar of ``.`` with numeric owners and xattrs."""
    support.need("tar")
    src = tmp_path / "tree"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hostname").write_text("live\n")
    (src / "etc" / "big").write_bytes(os.urandom(50_000))
    (src / "link").symlink_to("etc/hostname")
    (src / "z_last").write_text("the last member\n")
    out = tmp_path / "tree.tar"
    runner.run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "-C", src, "-cf", "-", "."], stdout=out)
    return out.read_bytes()


def _offsets(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name: m for m in t.getmembers()}


def _nothing_written(directory: Path) -> bool:
    return sorted(p.name for p in directory.iterdir()) == ["tree", "tree.tar"]


def _pack(tmp_path: Path, data: bytes) -> int:
    with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
        return add_tar_stream(w, io.BytesIO(data))


def test_whole_stream(tmp_path: Path, gnu_tar: bytes) -> None:
    support.need("unsquashfs")
    assert _pack(tmp_path, gnu_tar) == 6
    assert sorted(listing(tmp_path / "o.sqfs")) == ["", "etc", "etc/big", "etc/hostname", "link", "z_last"]


def test_stream_cut_at_a_member_boundary(tmp_path: Path, gnu_tar: bytes) -> None:
    """tarfile takes this for the end of the archive: z_last would be missing without a word."""
    end = _offsets(gnu_tar)["./z_last"].offset
    with pytest.raises(DamagedStream, match=rf"stops at byte {end} without its end-of-archive marker \(cut short\)"):
        _pack(tmp_path, gnu_tar[:end])
    assert _nothing_written(tmp_path)


def test_stream_cut_inside_a_header(tmp_path: Path, gnu_tar: bytes) -> None:
    end = _offsets(gnu_tar)["./z_last"].offset
    with pytest.raises(DamagedStream, match=rf"stops inside a header at byte {end} \(cut short\)"):
        _pack(tmp_path, gnu_tar[: end + 100])


def test_damaged_header(tmp_path: Path, gnu_tar: bytes) -> None:
    """A header with a bad checksum: tarfile ends the archive there too."""
    at = _offsets(gnu_tar)["./z_last"].offset
    damaged = bytearray(gnu_tar)
    damaged[at + 148] ^= 0x01  # the checksum field
    with pytest.raises(DamagedStream, match=rf"damaged header at byte {at}$"):
        _pack(tmp_path, bytes(damaged))


def test_member_data_cut_short(tmp_path: Path, gnu_tar: bytes) -> None:
    big = _offsets(gnu_tar)["./etc/big"]
    with pytest.raises(DamagedStream, match="damaged after 2 members: unexpected end of data"):
        _pack(tmp_path, gnu_tar[: big.offset_data + 20_000])


def test_data_after_the_end(tmp_path: Path, gnu_tar: bytes) -> None:
    with pytest.raises(DamagedStream, match="goes on after its end-of-archive marker"):
        _pack(tmp_path, gnu_tar + b"more")


# --- the flat type's tar-out (liveimg.tarout.tar_into) -----------------------------------


class FakeGuestfs:
    """libguestfs's handle as far as ``tar_into`` uses it: ``tar_out`` writes ``data`` to the
    file it is given, the appliance prints ``said`` (to the appliance event callbacks), then it
    raises ``error`` (after writing, or before opening with ``early``)."""

    def __init__(
        self, data: bytes, error: BaseException | None = None, *, early: bool = False, said: bytes = b""
    ) -> None:
        self.data, self.error, self.early, self.said = data, error, early, said
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.callbacks: dict[int, tuple[Any, int]] = {}

    def set_event_callback(self, callback: Any, events: int) -> int:
        self.callbacks[len(self.callbacks) + 1] = (callback, events)
        return len(self.callbacks)

    def delete_event_callback(self, handle: int) -> None:
        del self.callbacks[handle]

    def tar_out(self, directory: str, filename: str, **options: Any) -> None:
        self.calls.append((directory, options))
        if self.error is not None and self.early:
            raise self.error
        with open(filename, "wb") as f:
            f.write(self.data)
        for handle, (callback, events) in list(self.callbacks.items()):
            if events & 0x10 and self.said:  # GUESTFS_EVENT_APPLIANCE
                callback(0x10, handle, self.said.decode(), [])  # the bindings give str
        if self.error is not None:
            raise self.error


def _tar_into_image(tmp_path: Path, g: FakeGuestfs) -> int:
    with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
        return tar_into(g, "/sysroot", w, prefix="", skip=frozenset())


def test_tar_out_whole(tmp_path: Path, gnu_tar: bytes) -> None:
    g = FakeGuestfs(gnu_tar)
    assert _tar_into_image(tmp_path, g) == 6
    assert g.calls == [("/sysroot", {"numericowner": True, "xattrs": True, "selinux": True, "acls": True})]
    assert g.callbacks == {}


def test_tar_out_fails_after_a_whole_stream(tmp_path: Path, gnu_tar: bytes) -> None:
    """GNU tar goes on past a file it cannot read (zeros in its place, or no member) and exits 2.

    libguestfs says only that the transfer was cancelled: tar's lines on the appliance's console
    name the files.
    """
    said = (
        b"tar: ./etc/shadow: Cannot open: Input/output error\r\n"
        b"tar: ./a\\nb: Cannot stat: Structure needs cleaning\r\n"
        b"tar: Exiting with failure status due to previous errors\r\n"
    )
    g = FakeGuestfs(gnu_tar, RuntimeError("file receive cancelled by daemon"), said=said)
    with pytest.raises(InvalidImage) as caught:
        _tar_into_image(tmp_path, g)
    assert str(caught.value) == (
        "reading /sysroot of the image in the appliance failed: tar: ./etc/shadow: Cannot open: Input/output "
        "error; tar: ./a\\nb: Cannot stat: Structure needs cleaning (file receive cancelled by daemon)"
    )
    assert _nothing_written(tmp_path)
    assert g.callbacks == {}


def test_tar_out_cut_short_without_an_error(tmp_path: Path, gnu_tar: bytes) -> None:
    end = _offsets(gnu_tar)["./z_last"].offset
    with pytest.raises(InvalidImage, match=r"^reading /sysroot of the image in the appliance: the tar stream stops"):
        _tar_into_image(tmp_path, FakeGuestfs(gnu_tar[:end]))
    assert _nothing_written(tmp_path)


def test_tar_out_cut_short_by_its_failure(tmp_path: Path, gnu_tar: bytes) -> None:
    """The appliance's error is the cause, and what is said."""
    with pytest.raises(InvalidImage, match=r"^reading /sysroot of the image in the appliance failed: appliance died$"):
        _tar_into_image(tmp_path, FakeGuestfs(gnu_tar[:3000], RuntimeError("appliance died")))


@pytest.mark.timeout(60)  # the reader must not wait for a writer that never comes
def test_tar_out_fails_before_writing(tmp_path: Path) -> None:
    g = FakeGuestfs(b"", RuntimeError("tar_out: /sysroot: No such file or directory"), early=True)
    with pytest.raises(InvalidImage, match=r"failed: tar_out: /sysroot: No such file or directory$"):
        _tar_into_image(tmp_path, g)


def test_tar_out_host_failure(tmp_path: Path, gnu_tar: bytes) -> None:
    g = FakeGuestfs(gnu_tar, OSError(28, "No space left on device"))
    with pytest.raises(HostError, match=r"^streaming /sysroot of the image from the appliance failed: No space left"):
        _tar_into_image(tmp_path, g)


@pytest.mark.timeout(60)
def test_refused_member_is_the_error_not_the_broken_pipe(tmp_path: Path) -> None:
    """The reader stops at a name it refuses; the producer, still writing, gets EPIPE: not what is said."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        bad = tarfile.TarInfo("./a/../etc")
        t.addfile(bad, io.BytesIO())
        filler = tarfile.TarInfo("./filler")
        filler.size = 4 << 20  # more than a pipe holds
        t.addfile(filler, io.BytesIO(bytes(filler.size)))
    with pytest.raises(InvalidImage, match=r"^a/\.\./etc: '\.\.' cannot be a name in the image$"):
        _tar_into_image(tmp_path, FakeGuestfs(buf.getvalue()))


@pytest.mark.parametrize(
    ("at", "message"),
    [
        (10240, r"^cannot read etc/big: Input/output error$"),  # inside a member's data: the writer names it
        (-1, r"^reading the tar stream failed after 6 members: Input/output error$"),  # reading the end
    ],
)
def test_stream_read_error(tmp_path: Path, gnu_tar: bytes, at: int, message: str) -> None:
    limit = at if at >= 0 else len(gnu_tar)

    class Failing(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() >= limit:
                raise OSError(5, "Input/output error")
            return super().read(size)

    with pytest.raises(HostError, match=message), SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
        add_tar_stream(w, Failing(gnu_tar))
    assert _nothing_written(tmp_path)
