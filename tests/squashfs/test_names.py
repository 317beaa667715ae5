"""Names and symlink targets readers would reject are refused where they enter the writer.

The kernel, unsquashfs and dissect.squashfs reject (or misread) entry names that are empty,
``.``, ``..``, contain ``/`` or a NUL byte, or are over 255 bytes, and symlink targets over a
page: the writer refuses them with one line naming the path, before anything is written.  A
name cannot contain ``/``: every entry point takes a path and splits it there, so the check
sees the empty names a doubled, leading or trailing ``/`` makes.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import InvalidImage
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.tar import add_tar_stream
from liveimg.squashfs.writer import SquashfsWriter
from tests import support

FAST = SquashfsOptions(comp="lz4", block_size=4096, mkfs_time=0)

BAD_PATHS = [
    ("a\0b", r"^'a\\x00b': name contains a NUL byte$"),
    ("etc/pass\0wd", r"^'etc/pass\\x00wd': name contains a NUL byte$"),
    ("x/./y", r"^x/\./y: '\.' cannot be a name in the image$"),
    ("x/../y", r"^x/\.\./y: '\.\.' cannot be a name in the image$"),
    ("..", r"^\.\.: '\.\.' cannot be a name in the image$"),
    ("x//y", r"^x//y: empty name in the path \(a leading, trailing or doubled '/'\)$"),
    ("/etc", r"^/etc: empty name in the path"),
    ("etc/", r"^etc/: empty name in the path"),
    ("d/" + "n" * 256, r"^d/n+: name is 256 bytes long, squashfs allows at most 255$"),
    ("new\nline", r"^'new\\nline': "),  # not a reader's problem, but a hostile name stays on one line
]


@pytest.mark.parametrize(("path", "message"), BAD_PATHS)
def test_bad_paths_are_refused_by_every_entry_point(tmp_path: Path, path: str, message: str) -> None:
    if "\n" in path:  # a legal name: only the message's form is checked
        with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w, pytest.raises(InvalidImage, match=message):
            w.add_symlink(path, "t" * 5000)
        return
    calls = {
        "directory": lambda w: w.add_directory(path),
        "symlink": lambda w: w.add_symlink(path, "target"),
        "fifo": lambda w: w.add_fifo(path),
        "socket": lambda w: w.add_socket(path),
        "device": lambda w: w.add_device(path, "c", 1, 3),
        "hardlink": lambda w: w.add_hardlink(path, "first"),
        "hardlink target": lambda w: w.add_hardlink("second", path),
    }
    for what, call in calls.items():
        with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
            w.add_fifo("first")
            with pytest.raises(InvalidImage, match=message):
                call(w)
        assert what and [p.name for p in tmp_path.iterdir()] == ["o.sqfs"]
    # A file's name is checked before its data is read, and the failed image is not left behind.
    data = io.BytesIO(b"data")
    with pytest.raises(InvalidImage, match=message), SquashfsWriter(tmp_path / "bad.sqfs", FAST) as w:
        w.add_file(path, data, size=4)
    assert data.tell() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.sqfs"]


def test_bad_symlink_targets_are_refused(tmp_path: Path) -> None:
    with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
        with pytest.raises(InvalidImage, match=r"^l: symlink target is 4096 bytes long, readers take at most 4095$"):
            w.add_symlink("l", "t" * 4096)
        with pytest.raises(InvalidImage, match=r"^l: symlink target contains a NUL byte$"):
            w.add_symlink("l", b"a\0b")
        with pytest.raises(InvalidImage, match=r"^l: empty symlink target$"):
            w.add_symlink("l", "")
        assert w.tree.lookup([b"l"]) is None


def test_longest_name_and_target_are_read_back_by_real_readers(tmp_path: Path) -> None:
    """The limits are the readers': 255 bytes and 4095 bytes are stored and read back."""
    support.need("unsquashfs", "sqfs2tar")
    from dissect.squashfs import SquashFS

    name, target = "n" * 255, "/" + "t" * 4094
    image = tmp_path / "o.sqfs"
    # gzip and 128 KiB blocks: dissect sizes its lz4 output for a metadata block by the block size.
    with SquashfsWriter(image, SquashfsOptions(comp="gzip", mkfs_time=0)) as w:
        w.add_symlink(f"d/{name}", target)
    out = tmp_path / "x"
    runner.run(["unsquashfs", "-no-progress", "-d", out, image])
    assert os.readlink(out / "d" / name) == target
    runner.run(["sqfs2tar", image], stdout=tmp_path / "o.tar")
    with tarfile.open(tmp_path / "o.tar") as t:
        assert t.getmember(f"d/{name}").linkname == target
    with open(image, "rb") as f:
        assert SquashFS(f).get(f"d/{name}").link == target


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = kind, linkname, 1_600_000_000
    if "\0" in name:  # only a pax record can carry it (a ustar name ends at the first NUL)
        info.pax_headers = {"path": name}
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_member("./a/../etc/shadow")], r"^a/\.\./etc/shadow: '\.\.' cannot be a name"),
        ([_member("../escape")], r"^\.\./escape: '\.\.' cannot be a name"),
        ([_member("/etc/passwd")], r"^/etc/passwd: empty name"),
        ([_member("./x\0y")], r"^'x\\x00y': name contains a NUL byte$"),  # a pax path can hold a NUL
        ([_member("./" + "n" * 300)], r"name is 300 bytes long"),
        ([_member("./l", tarfile.SYMTYPE, "t" * 5000)], r"^l: symlink target is 5000 bytes long"),
        ([_member("./f"), _member("./h", tarfile.LNKTYPE, "./f/../f")], r"^f/\.\./f: '\.\.' cannot be a name"),
    ],
)
def test_hostile_tar_names_are_refused(tmp_path: Path, members: list[tarfile.TarInfo], message: str) -> None:
    stream = _tar(*((m, b"data") for m in members))
    with pytest.raises(InvalidImage, match=message), SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
        add_tar_stream(w, stream)
    assert list(tmp_path.iterdir()) == []
