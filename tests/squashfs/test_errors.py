"""Bad input: each a clear error naming the path, and nothing left behind."""

from __future__ import annotations

import io
import os
import sys
import textwrap
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import HostError, InvalidImage, InvalidOptions
from liveimg.progress import Event, Progress
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.writer import SquashfsWriter, pack
from tests import support

FAST = SquashfsOptions(comp="lz4", block_size=4096)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_name_over_255_bytes(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="name is 256 bytes long, squashfs allows at most 255"):
        with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
            w.add_file("d/" + "x" * 256, io.BytesIO(b"data"), size=4)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="cannot read /nonexistent/file"):
        with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
            w.add_file("f", Path("/nonexistent/file"))
    assert list(tmp_path.iterdir()) == []


def test_read_error_from_callback(tmp_path: Path) -> None:
    def read_at(offset: int, length: int) -> bytes:
        raise OSError(5, "Input/output error")

    with pytest.raises(HostError, match=r"cannot read LiveOS/rootfs\.img: Input/output error"):
        with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
            w.add_file("LiveOS/rootfs.img", read_at, size=10_000)
    assert list(tmp_path.iterdir()) == []


def test_short_stream(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="f: stream ended after 5 of 100 bytes"):
        with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
            w.add_file("f", io.BytesIO(b"short"), size=100)
    assert list(tmp_path.iterdir()) == []


def test_file_that_grows_while_packed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    victim = src / "growing"
    victim.write_bytes(os.urandom(400_000))
    out = tmp_path / "out"
    out.mkdir()

    def sink(event: Event) -> None:
        if event.event == "progress" and (event.done or 0) > 0 and victim.stat().st_size == 400_000:
            with open(victim, "ab") as f:
                f.write(b"more")

    with pytest.raises(InvalidImage, match=r"growing: file changed while being packed \(size 400000 -> 400004\)"):
        pack(src, out / "o.sqfs", FAST, Progress(sink, rate=1e9))
    assert list(out.iterdir()) == []


def test_unwritable_destination(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(HostError, match=r"cannot write .*file/o.sqfs: directory .*file does not exist"):
        pack(src, blocker / "o.sqfs", FAST)
    with pytest.raises(InvalidOptions, match="is not a directory"):
        pack(blocker, tmp_path / "o.sqfs", FAST)
    assert _leftovers(tmp_path) == []


def test_writer_misuse(tmp_path: Path) -> None:
    with SquashfsWriter(tmp_path / "o.sqfs", FAST) as w:
        w.add_file("a", io.BytesIO(b"x"), size=1)
        with pytest.raises(InvalidOptions, match="a: added twice"):
            w.add_symlink("a", "b")
        with pytest.raises(InvalidOptions, match="'a' is not a directory"):
            w.add_fifo("a/b")
        with pytest.raises(InvalidImage, match=r"^\.\./escape: '\.\.' cannot be a name in the image$"):
            w.add_fifo("../escape")
        with pytest.raises(InvalidOptions, match="hard link target missing was not added"):
            w.add_hardlink("h", "missing")
        with pytest.raises(InvalidOptions, match="size is required"):
            w.add_file("s", io.BytesIO(b"x"))
    with pytest.raises(InvalidOptions, match="already finished"):
        w.add_fifo("late")


def test_full_disk(tmp_path: Path) -> None:
    """A real ENOSPC: a 1 MiB tmpfs in a private mount namespace (not the host's)."""
    support.need("unshare")
    support.need_root()
    src = tmp_path / "src"
    src.mkdir()
    (src / "random").write_bytes(os.urandom(3 << 20))
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from liveimg.errors import HostError
        from liveimg.squashfs.options import SquashfsOptions
        from liveimg.squashfs.writer import pack
        try:
            pack({str(src)!r}, "/mnt/o.sqfs", SquashfsOptions(comp="lz4"))
        except HostError as exc:
            print("ERROR", exc)
        print("LEFT", sorted(os.listdir("/mnt")))
        """
    )
    shell = f'mount -t tmpfs -o size=1m tmpfs /mnt && exec {sys.executable} -c "$0"'
    result = runner.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, script])
    assert "ERROR no space left on the device while writing /mnt/o.sqfs" in result.stdout
    assert "LEFT []" in result.stdout
