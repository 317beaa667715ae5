"""`liveimg write` on a real block device: a loop device on a sparse file in tmp_path.

As root: `losetup --find --show` makes the device, and a ``finally`` detaches it.  No disk of
this machine is ever named.  A loop device is not removable, so the command refuses it
without ``--yes-this-disk``; with it, the image is written, synced and read back.  A mount
is made only in a private mount namespace (``unshare --mount``), never on the host.

The failing read-back is made honestly, but through the library rather than the command: the
device's bytes are changed under it at the moment the ``verify`` stage begins (a progress
sink that writes to the loop device's backing file, which the loop device reads from).  The
command gives no such moment to a test without a race.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import liveimg
from liveimg.progress import Event, Progress
from liveimg.write import human_size
from tests.support import need, need_root

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
DISK_SIZE = 64 * MIB


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A 64 MiB loop device on a sparse file (zeros): (its node, its backing file)."""
    need_root()
    need("losetup")
    backing = tmp_path / "stick.img"
    with backing.open("wb") as f:
        f.truncate(DISK_SIZE)
    done = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True)
    node = done.stdout.strip()
    assert node.startswith("/dev/loop"), node
    try:
        yield node, backing
    finally:
        subprocess.run(["losetup", "--detach", node], check=True)


def disk_image(tmp_path: Path) -> Path:
    """A real disk image: a GPT with one partition holding an ext4 with a file (sfdisk, mke2fs)."""
    need("sfdisk", "mke2fs")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_bytes(os.urandom(3 * MIB + 17))
    fs = tmp_path / "part.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(fs), "16M"], check=True)
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(18 * MIB)
    subprocess.run(["sfdisk", "-q", str(image)], input="label: gpt\nstart=2048, size=32768\n", text=True, check=True)
    with image.open("r+b") as f, fs.open("rb") as part:
        f.seek(MIB)
        f.write(part.read())
    return image


def odd_image(tmp_path: Path) -> Path:
    """Random bytes of a size that is no multiple of a block: the last block is padded."""
    image = tmp_path / "odd.bin"
    image.write_bytes(os.urandom(5 * MIB + 777))
    return image


def liveimg_write(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "liveimg", "write", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300, check=False
    )


def device_bytes(node: str, size: int) -> bytes:
    with open(node, "rb") as f:
        return f.read(size)


def description(node: str, backing: Path) -> str:
    return f"{node} (loop device on {backing}, 64.0 MiB, loop, not removable)"


def test_a_loop_device_is_refused_without_yes_this_disk(tmp_path: Path, loop: tuple[str, Path]) -> None:
    node, backing = loop
    image = odd_image(tmp_path)
    done = liveimg_write(str(image), node, "--yes")
    assert done.returncode == 1
    assert done.stderr == (
        f"liveimg: error: refusing {description(node, backing)}: it is not a removable disk "
        "(if it really is the disk to overwrite, add --yes-this-disk)\n"
    )
    assert device_bytes(node, DISK_SIZE) == bytes(DISK_SIZE)


@pytest.mark.parametrize("make", [disk_image, odd_image], ids=["gpt-ext4-disk", "odd-size"])
def test_written_and_read_back(tmp_path: Path, loop: tuple[str, Path], make: object) -> None:
    node, backing = loop
    assert callable(make)
    image: Path = make(tmp_path)
    size = image.stat().st_size
    done = liveimg_write(str(image), node, "--yes", "--yes-this-disk", "--progress", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"liveimg: writing {image} ({human_size(size)}) to {description(node, backing)}\n"
    events = [json.loads(line) for line in done.stdout.splitlines()]
    ends = {e["stage"]: e for e in events if e["event"] == "end"}
    assert ends["write"]["done"] == ends["verify"]["done"] == size
    assert ends["write"]["message"] == ends["verify"]["message"] == ""
    assert events[-1] == {"event": "result", "device": node, "image": str(image), "bytes": size, "verified": True}
    written = device_bytes(node, DISK_SIZE)
    assert written[:size] == image.read_bytes()
    assert written[size:] == bytes(DISK_SIZE - size)  # the padding of the last block, and what was there
    if make is disk_image:  # the partition table reads back from the device as written
        table = subprocess.run(["sfdisk", "--dump", node], capture_output=True, text=True, check=True).stdout
        assert f"{node}p1 : start=        2048, size=       32768" in table


def test_the_line_a_user_sees(tmp_path: Path, loop: tuple[str, Path]) -> None:
    """Piped, the command says each stage once and ends with one line on stdout."""
    node, backing = loop
    image = odd_image(tmp_path)
    done = liveimg_write(str(image), node, "--yes", "--yes-this-disk")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {image} to {node}: {image.stat().st_size} bytes, read back and verified\n"
    lines = done.stderr.splitlines()
    assert lines[0] == f"liveimg: writing {image} (5.0 MiB) to {description(node, backing)}"
    assert [line.split(" in ")[0] for line in lines[1:]] == [f"write: syncing {node}", "write: done", "verify: done"]


def test_a_device_changed_under_the_read_back_is_reported(tmp_path: Path, loop: tuple[str, Path]) -> None:
    node, backing = loop
    image = odd_image(tmp_path)
    at = 3 * MIB + 5

    def corrupt(event: Event) -> None:
        if event.event == "begin" and event.stage == "verify":
            with backing.open("r+b") as f:
                f.seek(at)
                old = f.read(1)
                f.seek(at)
                f.write(bytes([old[0] ^ 0xFF]))
                f.flush()
                os.fsync(f.fileno())

    options = liveimg.WriteOptions(allow_fixed=True)
    # Another reader keeps the device open, as a desktop's disk monitor may: the kernel then
    # keeps the device's page cache when liveimg closes it, so a read-back served from that
    # cache would see what was written, not what the device holds.
    reader = os.open(node, os.O_RDONLY)
    try:
        with pytest.raises(liveimg.WriteVerifyFailed) as excinfo:
            liveimg.write_image(image, node, options, Progress(corrupt))
    finally:
        os.close(reader)
    assert str(excinfo.value) == (
        f"read-back check failed: {description(node, backing)} differs from {image} at byte {at} "
        "(the stick may be failing or smaller than it claims; write again or use another)"
    )


def test_a_mounted_device_is_refused(tmp_path: Path, loop: tuple[str, Path]) -> None:
    """Mounted in a private mount namespace, where liveimg runs too: its mountinfo shows it."""
    need("unshare", "mkfs.ext4", "mount")
    node, backing = loop
    subprocess.run(["mkfs.ext4", "-q", node], check=True)
    image = odd_image(tmp_path)
    where = tmp_path / "mnt"
    where.mkdir()
    script = 'mount "$1" "$2" && exec "$3" -m liveimg write "$4" "$1" --yes --yes-this-disk'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", node, str(where)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*argv, sys.executable, str(image)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1
    assert done.stderr == (
        f"liveimg: error: refusing {description(node, backing)}: {node} is mounted on {where} "
        "(unmount it first, or pick another device)\n"
    )


def test_a_device_held_by_another_program_is_refused_by_the_kernel(tmp_path: Path, loop: tuple[str, Path]) -> None:
    """Nothing in mountinfo or swaps names it; the exclusive open is what refuses it."""
    node, backing = loop
    image = odd_image(tmp_path)
    holder = os.open(node, os.O_RDONLY | os.O_EXCL)
    try:
        done = liveimg_write(str(image), node, "--yes", "--yes-this-disk")
    finally:
        os.close(holder)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"liveimg: error: refusing {description(node, backing)}: the kernel says it is in use "
        "(a mounted filesystem, swap, LVM, RAID or another program holds it)"
    )
    assert device_bytes(node, DISK_SIZE) == bytes(DISK_SIZE)


def test_a_device_in_use_as_swap_is_refused(tmp_path: Path, loop: tuple[str, Path]) -> None:
    """Real swap, for a second: the loop device is swapped on, and off again in a finally."""
    need("mkswap", "swapon", "swapoff")
    node, backing = loop
    subprocess.run(["mkswap", "-q", node], check=True)
    image = odd_image(tmp_path)
    subprocess.run(["swapon", "--priority", "0", node], check=True)
    try:
        done = liveimg_write(str(image), node, "--yes", "--yes-this-disk")
    finally:
        subprocess.run(["swapoff", node], check=True)
    assert done.returncode == 1
    assert done.stderr == (
        f"liveimg: error: refusing {description(node, backing)}: {node} is active swap "
        "(swapoff it first, or pick another device)\n"
    )
