"""liveimg.staging.AtomicOutput: the destination is the old file or the whole new one, nothing is left behind."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from liveimg import staging
from liveimg.errors import HostError
from liveimg.staging import AtomicOutput, temp_beside

ROOT = Path(__file__).resolve().parents[1]


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_the_new_file_replaces_the_old_one_whole(tmp_path: Path) -> None:
    dest = tmp_path / "out.img"
    dest.write_bytes(b"old")
    with AtomicOutput(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.img.") and tmp.name.endswith(".tmp")
        assert tmp.stat().st_size == 0
        tmp.write_bytes(b"new")
        assert dest.read_bytes() == b"old"  # not yet
    assert dest.read_bytes() == b"new"
    assert _names(tmp_path) == ["out.img"]


def test_the_new_file_has_the_mode_a_plain_open_gives(tmp_path: Path) -> None:
    umask = os.umask(0o027)
    try:
        with AtomicOutput(tmp_path / "f") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o7777 == 0o640


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyboardInterrupt(), OSError(errno.EIO, "I/O error")])
def test_a_failing_block_leaves_the_old_file_and_nothing_else(tmp_path: Path, error: BaseException) -> None:
    dest = tmp_path / "out.img"
    dest.write_bytes(b"old")
    with pytest.raises(type(error)) as caught, AtomicOutput(dest) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert caught.value is error  # what the block raises passes through as it is
    assert dest.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.img"]


def test_a_failing_block_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError), AtomicOutput(tmp_path / "new") as tmp:
        tmp.write_bytes(b"half")
        raise ValueError
    assert _names(tmp_path) == []


def test_each_write_has_its_own_temporary_file(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    first, second = AtomicOutput(dest), AtomicOutput(dest)
    a, b = first.create(), second.create()
    assert a != b
    a.write_text("first")
    b.write_text("second")
    first.commit()
    assert dest.read_text() == "first"
    second.commit()
    assert dest.read_text() == "second"
    assert _names(tmp_path) == ["out"]


def test_a_name_placed_where_the_temporary_file_goes_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_EXCL: a symlink (or file) planted under the next name is skipped, not written through."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    tokens = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(staging.secrets, "token_hex", lambda _n: next(tokens))
    (tmp_path / ".out.aaaaaaaa.tmp").symlink_to(victim)
    with AtomicOutput(tmp_path / "out") as tmp:
        assert tmp.name == ".out.bbbbbbbb.tmp"
        tmp.write_text("new")
    assert victim.read_text() == "keep"
    assert (tmp_path / "out").read_text() == "new"


def test_not_overwriting_refuses_an_existing_destination(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with AtomicOutput(dest, overwrite=False) as tmp:
        tmp.write_text("first")
    assert dest.read_text() == "first"
    with pytest.raises(HostError, match=rf"^{dest} already exists: it was left as it is$"):
        with AtomicOutput(dest, overwrite=False) as tmp:
            tmp.write_text("second")
    assert dest.read_text() == "first"
    assert _names(tmp_path) == ["out"]


def test_not_overwriting_without_renameat2_links_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(src: Path, dst: Path, flags: int) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(staging, "renameat2", unsupported)
    dest = tmp_path / "out"
    with AtomicOutput(dest, overwrite=False) as tmp:
        tmp.write_text("first")
    assert dest.read_text() == "first" and dest.stat().st_nlink == 1
    with pytest.raises(HostError, match="already exists"), AtomicOutput(dest, overwrite=False) as tmp:
        tmp.write_text("second")
    assert dest.read_text() == "first"
    assert _names(tmp_path) == ["out"]


@pytest.mark.parametrize("durable", [True, False])
def test_fsync_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool) -> None:
    """Durable: the data before the rename, the directory after it; a work file: neither."""
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        synced.append((target.name, (tmp_path / "out").exists()))
        real_fsync(fd)

    monkeypatch.setattr(staging.os, "fsync", fsync)
    with AtomicOutput(tmp_path / "out", durable=durable) as tmp:
        tmp.write_text("x")
    if durable:
        assert synced == [(tmp.name, False), (tmp_path.name, True)]
    else:
        assert synced == []


def test_a_failed_rename_is_a_host_error_naming_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "inside").write_text("x")
    with pytest.raises(HostError, match=rf"^cannot write {dest}: "), AtomicOutput(dest) as tmp:
        tmp.write_text("new")
    assert _names(tmp_path) == ["out"]


def test_a_missing_directory_is_said(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"directory .*/nope does not exist"):
        temp_beside(tmp_path / "nope" / "out")


_WRITER = """
import signal, sys, time
from pathlib import Path
from liveimg import cancel
from liveimg.staging import AtomicOutput

with cancel.handling() if sys.argv[2] == "cancel" else open("/dev/null"):
    with AtomicOutput(Path(sys.argv[1])) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half of it")
        print(tmp, flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize(("how", "signum"), [("default", signal.SIGINT), ("cancel", signal.SIGTERM)])
def test_a_signal_mid_write_leaves_the_old_file_and_nothing_else(
    tmp_path: Path, how: str, signum: signal.Signals
) -> None:
    """Ctrl-C (KeyboardInterrupt), or liveimg's own cancel (SIGTERM raising its Interrupt), while writing."""
    dest = tmp_path / "out.img"
    dest.write_bytes(b"old")
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(dest), how],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.read_bytes() == b"half of it"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0, err
    assert "KeyboardInterrupt" in err or "Interrupt" in err
    assert not tmp.exists()
    assert dest.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.img"]
