"""dracut in the appliance, with a stand-in for the libguestfs handle: what liveimg does with what
the guest's dracut (root in the VM) leaves -- its exit status, its log, its output -- and the time limit.

The real appliance runs in tests/integration/test_dracut.py (LIVEIMG_TEST_APPLIANCE=1).
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from liveimg.dracut import appliance
from liveimg.dracut.appliance import SCRATCH_MOUNT, parse_status, run_dracut_in_appliance
from liveimg.dracut.plan import DracutOptions
from liveimg.errors import InvalidImage, ToolTimeout
from tests.dracut.fake_guest import make_guest

KVER = "6.1.0-50-amd64"


class FakeAppliance:
    """The calls run_dracut_in_appliance makes, on two host directories: the rootfs and the scratch disk."""

    def __init__(self, root: Path, scratch: Path, dracut: Callable[[Path], None]) -> None:
        self.root, self.scratch, self.dracut = root, scratch, dracut
        self.sleeper: subprocess.Popen[bytes] | None = None

    def _host(self, path: str) -> Path:
        if path.startswith(SCRATCH_MOUNT):
            return self.scratch / path[len(SCRATCH_MOUNT) :].lstrip("/")
        return self.root / path.lstrip("/")

    def list_devices(self) -> list[str]:
        return ["/dev/sda", "/dev/sdb"]

    def mount(self, device: str, mountpoint: str) -> None:
        pass

    def mkfs(self, fstype: str, device: str) -> None:
        pass

    def mkdir_p(self, path: str) -> None:
        if not path.startswith(SCRATCH_MOUNT):
            self._host(path).mkdir(parents=True, exist_ok=True)

    def lstatns(self, path: str) -> dict[str, int]:
        try:
            st = os.lstat(self._host(path))
        except OSError as exc:  # as libguestfs says it: the C library's message at the end
            raise RuntimeError(f"lstatns: {path}: {exc.strerror}") from None
        return {"st_mode": st.st_mode, "st_size": st.st_size}

    def readlink(self, path: str) -> str:
        return os.readlink(self._host(path))

    def ls(self, path: str) -> list[str]:
        return sorted(os.listdir(self._host(path)))

    def pread(self, path: str, size: int, offset: int) -> bytes:
        with open(self._host(path), "rb") as f:
            f.seek(offset)
            return f.read(size)

    def upload(self, src: str, dest: str) -> None:
        self._host(dest).write_bytes(Path(src).read_bytes())

    def get_pid(self) -> int:
        self.sleeper = subprocess.Popen(["sleep", "600"])
        return self.sleeper.pid

    def debug(self, cmd: str, args: list[str]) -> str:
        (self.scratch / "out").mkdir(exist_ok=True)
        self.dracut(self.scratch)
        return ""

    def filesize(self, path: str) -> int:
        return self._host(path).stat().st_size

    def read_file(self, path: str) -> bytes:
        return self._host(path).read_bytes()

    def is_file(self, path: str) -> bool:
        return stat.S_ISREG(os.lstat(self._host(path)).st_mode) if os.path.lexists(self._host(path)) else False

    def download(self, path: str, dest: str) -> None:
        Path(dest).write_bytes(self._host(path).read_bytes())

    def download_offset(self, path: str, dest: str, offset: int, size: int) -> None:
        with open(self._host(path), "rb") as f:
            f.seek(offset)
            Path(dest).write_bytes(f.read(size))


def run(tmp_path: Path, dracut: Callable[[Path, FakeAppliance], None], **options: Any) -> FakeAppliance:
    root = make_guest(tmp_path / "root")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    fake = FakeAppliance(root, scratch, lambda s: dracut(s, fake))

    @contextlib.contextmanager
    def opener(rootfs: Path, *, scratch_bytes: int) -> Iterator[Any]:
        yield fake

    try:
        run_dracut_in_appliance(tmp_path / "rootfs.img", "/", kver=KVER, options=DracutOptions(**options),
                                ostree=False, raw_output=tmp_path / "raw.cpio", log_path=tmp_path / "log",
                                opener=opener)  # fmt: skip
    finally:
        if fake.sleeper is not None:
            fake.sleeper.kill()
            fake.sleeper.wait()
    return fake


def good(scratch: Path, fake: FakeAppliance) -> None:
    (scratch / "dracut.log").write_text("dracut: done\n")
    (scratch / "rc").write_text("0\n")
    (scratch / "out/raw.cpio").write_bytes(b"070701")


def test_a_good_run_is_downloaded(tmp_path: Path) -> None:
    run(tmp_path, good)
    assert (tmp_path / "raw.cpio").read_bytes() == b"070701"
    assert (tmp_path / "log").read_text() == "dracut: done\n"


@pytest.mark.parametrize(("text", "status"), [(b"0\n", 0), (b"1\n", 1), (b"255", 255)])
def test_exit_status_read_strictly(text: bytes, status: int) -> None:
    assert parse_status(text) == status


@pytest.mark.parametrize("text", [b"", b"256\n", b"-1\n", b"99999999999999999999999\n", b"0; rm -rf /", b"0\n0\n"])
def test_garbage_exit_status_is_one_line(text: bytes) -> None:
    with pytest.raises(InvalidImage, match="no readable exit status") as info:
        parse_status(text)
    assert "\n" not in str(info.value)


def test_status_written_by_the_guest(tmp_path: Path) -> None:
    def hostile(scratch: Path, fake: FakeAppliance) -> None:
        good(scratch, fake)
        (scratch / "rc").write_text("1" * 10_000)  # too long to be ours: not even read whole

    with pytest.raises(InvalidImage, match="no readable exit status"):
        run(tmp_path, hostile)


def test_only_the_end_of_a_huge_log_is_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(appliance, "LOG_LIMIT", 1000)

    def chatty(scratch: Path, fake: FakeAppliance) -> None:
        good(scratch, fake)
        (scratch / "dracut.log").write_text("x" * 5000 + "the end\n")

    run(tmp_path, chatty)
    log = (tmp_path / "log").read_text()
    assert len(log) == 1000 and log.endswith("the end\n")


def test_a_huge_output_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(appliance, "OUTPUT_LIMIT", 10)

    def huge(scratch: Path, fake: FakeAppliance) -> None:
        good(scratch, fake)
        (scratch / "out/raw.cpio").write_bytes(b"0" * 100)

    with pytest.raises(InvalidImage, match="larger than"):
        run(tmp_path, huge)
    assert not (tmp_path / "raw.cpio").exists()


def test_time_limit_kills_the_appliance(tmp_path: Path) -> None:
    def forever(scratch: Path, fake: FakeAppliance) -> None:
        assert fake.sleeper is not None
        fake.sleeper.wait()  # "the VM": returns only when liveimg kills it
        raise RuntimeError("child process died unexpectedly")

    with pytest.raises(ToolTimeout, match="timed out after 1 s"):
        run(tmp_path, forever, timeout=1)
