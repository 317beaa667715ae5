"""The newc writer: exact bytes, reproducibility, and round trips through libarchive and GNU cpio."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import libarchive
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveimg import run as runner
from liveimg.dracut import cpio
from liveimg.dracut.cpio import Kind
from liveimg.errors import InvalidOptions
from tests.support import need


def _entries_of(data: bytes) -> list[tuple[str, int, int, bytes | str | None]]:
    """(path, st_mode, size, data or link target) of every entry, read by libarchive."""
    found = []
    with libarchive.memory_reader(data, format_name="cpio", filter_name="none") as archive:
        for entry in archive:
            payload: bytes | str | None = entry.linkpath if entry.issym else b"".join(entry.get_blocks())
            found.append((entry.pathname, entry.mode, entry.size or 0, payload))
    return found


def test_exact_bytes_of_a_small_archive() -> None:
    data = cpio.newc_bytes([cpio.file("a", b"xyz", 0o600)], mtime=0x5F5E100)
    header = b"070701" + b"".join(b"%08X" % v for v in (1, 0o100600, 0, 0, 1, 0x5F5E100, 3, 0, 0, 0, 0, 2, 0))
    # header (110) + "a\0" = 112, a multiple of 4: no name padding; 3 bytes of data + 1 of padding.
    trailer = b"070701" + b"".join(b"%08X" % v for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0)) + b"TRAILER!!!\0"
    assert data == header + b"a\0" + b"xyz\0" + trailer + b"\0" * (-len(trailer) % 4)
    assert len(data) % 4 == 0


def test_same_entries_in_any_order_give_the_same_bytes() -> None:
    entries = [cpio.file("etc/b", b"2"), cpio.symlink("bin", "usr/bin"), cpio.directory("etc", 0o700)]
    first = cpio.newc_bytes(entries, mtime=7)
    assert cpio.newc_bytes(list(reversed(entries)), mtime=7) == first
    assert cpio.newc_bytes(entries, mtime=8) != first


def test_mtime_comes_from_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    data = cpio.newc_bytes([cpio.file("x", b"")])
    with libarchive.memory_reader(data) as archive:
        assert [e.mtime for e in archive] == [1700000000]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InvalidOptions, match="SOURCE_DATE_EPOCH"):
        cpio.newc_bytes([cpio.file("x", b"")])
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    with libarchive.memory_reader(cpio.newc_bytes([cpio.file("x", b"")])) as archive:
        assert [e.mtime for e in archive] == [0]


def test_parents_are_added_before_their_children() -> None:
    data = cpio.newc_bytes([cpio.file("/etc/cmdline.d/90-x.conf", b"rd.live.image\n")], mtime=0)
    found = _entries_of(data)
    assert [p for p, *_ in found] == ["etc", "etc/cmdline.d", "etc/cmdline.d/90-x.conf"]
    assert [stat.S_IMODE(m) for _, m, *_ in found] == [0o755, 0o755, 0o644]
    assert [p for p, *_ in _entries_of(cpio.newc_bytes([cpio.file("a/b", b"")], parents=False))] == ["a/b"]


def test_inode_numbers_are_renumbered_in_order() -> None:
    data = cpio.newc_bytes([cpio.file("b", b"1"), cpio.file("a", b"22"), cpio.directory("c")], mtime=0)
    inodes, pos = [], 0
    while True:
        head = data[pos : pos + 110]
        name_size, file_size = int(head[94:102], 16), int(head[54:62], 16)
        name = data[pos + 110 : pos + 110 + name_size - 1]
        if name == b"TRAILER!!!":
            break
        inodes.append((name, int(head[6:14], 16), int(head[38:46], 16)))
        pos += 110 + name_size
        pos += -pos % 4 + file_size
        pos += -pos % 4
    assert inodes == [(b"a", 1, 1), (b"b", 2, 1), (b"c", 3, 2)]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([cpio.file("a", b""), cpio.file("/a", b"x")], "given twice"),
        ([cpio.file("a", b"x"), cpio.file("a/b", b"")], "which is a file"),
    ],
)
def test_conflicting_entries_are_refused(entries: list[cpio.Entry], message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        cpio.newc_bytes(entries)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: cpio.file("../etc/passwd", b""), r"contains '\.\.'"),
        (lambda: cpio.file("/", b""), "names the root"),
        (lambda: cpio.file("a\0b", b""), "NUL"),
        (lambda: cpio.file("a", b"", 0o10000), "not a permission mode"),
        (lambda: cpio.file("a", b"", uid=-1), "uid -1"),
        (lambda: cpio.Entry("a", Kind.DIR, 0o755, b"data"), "has no data"),
        (lambda: cpio.Entry("a", Kind.SYMLINK, 0o777, b""), "needs a target"),
        (lambda: cpio.Entry("a", Kind.HARDLINK, 0o644), "hard links"),
        (lambda: cpio.file("x" * 5000, b""), "longer than"),
    ],
)
def test_bad_entries_are_refused(make: object, message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        make()  # type: ignore[operator]


def test_host_file_data_is_streamed(tmp_path: Path) -> None:
    src = tmp_path / "seed"
    src.write_bytes(os.urandom(100_003))
    data = cpio.newc_bytes([cpio.file("var/seed", src, 0o600)], mtime=0)
    assert ("var/seed", stat.S_IFREG | 0o600, 100_003, src.read_bytes()) in _entries_of(data)


def test_device_nodes_and_fifos() -> None:
    data = cpio.newc_bytes(
        [cpio.Entry("dev/console", Kind.CHAR, 0o600, rdev=(5, 1)), cpio.Entry("run/fifo", Kind.FIFO, 0o644)],
        mtime=0,
    )
    with libarchive.memory_reader(data) as archive:
        found = {e.pathname: (e.filetype, e.rdevmajor, e.rdevminor) for e in archive}
    assert found["dev/console"] == (stat.S_IFCHR, 5, 1)
    assert found["run/fifo"][0] == stat.S_IFIFO


# --- round trips -------------------------------------------------------------------------

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-+é", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def archives(draw: st.DrawFn) -> list[cpio.Entry]:
    paths = draw(st.lists(st.lists(_NAME, min_size=1, max_size=3).map("/".join), min_size=1, max_size=12, unique=True))
    # Make a consistent tree: a path whose prefix is another path makes that prefix a directory.
    prefixes = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    entries: list[cpio.Entry] = []
    for path in sorted(set(paths)):
        if path in prefixes:
            entries.append(cpio.directory(path, draw(st.sampled_from([0o755, 0o700, 0o1777]))))
            continue
        kind = draw(st.sampled_from(["file", "file", "symlink"]))
        if kind == "symlink":
            entries.append(cpio.symlink(path, draw(st.text(alphabet="abc/._", min_size=1, max_size=30))))
        else:
            mode = draw(st.sampled_from([0o644, 0o755, 0o600, 0o4755]))
            entries.append(cpio.file(path, draw(st.binary(max_size=700)), mode))
    return entries


def _expected(entries: list[cpio.Entry]) -> dict[str, tuple[int, bytes | str]]:
    result: dict[str, tuple[int, bytes | str]] = {}
    for e in cpio.with_parents(entries):
        payload: bytes | str = e.data.decode() if e.kind is Kind.SYMLINK else e.data  # type: ignore[union-attr]
        result[e.name] = (cpio.MODE_BITS[e.kind] | e.mode, payload)
    return result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=archives(), mtime=st.integers(0, 0xFFFFFFFF))
def test_round_trip_through_libarchive(entries: list[cpio.Entry], mtime: int) -> None:
    data = cpio.newc_bytes(entries, mtime=mtime)
    assert len(data) % 4 == 0
    found = {path: (mode, payload) for path, mode, _size, payload in _entries_of(data)}
    assert found == _expected(entries)
    with libarchive.memory_reader(data) as archive:
        assert {e.mtime for e in archive} == {mtime}
        assert archive.format_name == b"ASCII cpio (SVR4 with no CRC)"  # libarchive's name for newc
    assert cpio.newc_bytes(list(reversed(entries)), mtime=mtime) == data


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(entries=archives())
def test_round_trip_through_gnu_cpio(entries: list[cpio.Entry], tmp_path_factory: pytest.TempPathFactory) -> None:
    need("cpio")
    data = cpio.newc_bytes(entries, mtime=1234567890)
    out = tmp_path_factory.mktemp("x")
    archive = out.parent / f"{out.name}.cpio"
    archive.write_bytes(data)
    with open(archive, "rb") as f:
        listing = runner.run(["cpio", "-t", "--quiet"], input=f.read()).stdout.split("\n")
    assert sorted(filter(None, listing)) == sorted(_expected(entries))
    runner.run(
        ["cpio", "-i", "--quiet", "--no-absolute-filenames", "--preserve-modification-time", "-D", os.fspath(out)],
        input=data,
    )
    for path, (mode, payload) in _expected(entries).items():
        host = out / path
        info = host.lstat()
        assert stat.S_IFMT(info.st_mode) == stat.S_IFMT(mode), path
        if stat.S_ISLNK(mode):
            assert os.readlink(host) == payload
        elif stat.S_ISREG(mode):
            assert host.read_bytes() == payload
            assert stat.S_IMODE(info.st_mode) == stat.S_IMODE(mode)
            assert info.st_mtime == 1234567890


def test_write_newc_reports_what_it_wrote() -> None:
    buf = io.BytesIO()
    size = cpio.write_newc([cpio.file("a", b"12345")], buf, mtime=0)
    assert size == len(buf.getvalue())
