"""Memory in flight is bounded by workers x block size, not by the input; each entry costs little."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from liveimg.squashfs.reader import SquashfsReader


def test_20_gib_sparse_image_packs_in_bounded_memory(tmp_path: Path) -> None:
    img = tmp_path / "rootfs.img"
    with open(img, "wb") as f:
        f.truncate(20 << 30)
        for i in range(40):  # 40 x 2 MiB of data spread over the 20 GiB, the rest holes
            f.seek(i * (512 << 20) + 12345)
            f.write(os.urandom(1 << 20) + b"ext4-ish metadata " * 58254)
    dest = tmp_path / "live.sqfs"
    # VmHWM is the peak RSS of the child's own address space.  (ru_maxrss would not do: it keeps
    # the high-water mark of the pytest process the child was forked from, across exec.)
    code = (
        "import sys; from liveimg.squashfs.writer import pack_file; from liveimg.squashfs.options import "
        "SquashfsOptions; pack_file(sys.argv[1], sys.argv[2], options=SquashfsOptions(comp='lz4', "
        "block_size=1 << 20, processors=2)); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(img), str(dest)], cwd=Path(__file__).parents[2], check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    peak_kib = int(out.split()[-1])
    assert peak_kib < 256 * 1024, f"peak RSS {peak_kib} KiB"
    with SquashfsReader(dest) as r:
        inode = r.lookup("LiveOS/rootfs.img")
        assert inode.file_size == 20 << 30  # type: ignore[attr-defined]
        blocks = list(inode.block_sizes)  # type: ignore[attr-defined]
        assert len(blocks) == 20 << 10
        assert sum(1 for b in blocks if b == 0) > 20_000 - 200


# A child process adds N small files (0-4 KiB, each different, 200 to a directory) to a writer and
# prints its peak RSS (VmHWM, KiB) and the image's inode count.
_MANY_FILES = """
import random, sys
from io import BytesIO
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.writer import SquashfsWriter
files, dest = int(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
text = bytes(rng.choices(b"abcdefghij klmnopqrstuvwxyz\\n", k=1 << 16))
with SquashfsWriter(dest, SquashfsOptions(comp="lz4", processors=2, mkfs_time=0)) as w:
    for i in range(files):
        if i % 10000 == 0:
            w.add_directory(f"p{i // 10000:03d}", mtime=i)
        if i % 200 == 0:
            here = f"p{i // 10000:03d}/d{i // 200 % 50:02d}"
            w.add_directory(here, mode=0o750, uid=1000, gid=1000, mtime=i)
        size = rng.randint(0, 4096)
        at = rng.randrange(len(text) - size)
        data = (i.to_bytes(4, "little") + text[at : at + size])[:size]
        w.add_file(f"{here}/file-{i:07d}.txt", BytesIO(data), size=size, uid=i % 3, mtime=1_700_000_000 + i)
    result = w.finish()
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(hwm, result.inodes)
"""


def test_memory_per_entry(tmp_path: Path) -> None:
    """Each file or directory costs the writer under 300 bytes: the peak RSS's slope between two tree sizes.

    (At that rate 500 000 entries add under 150 MiB to what the interpreter and the workers take.)
    """
    peaks = {}
    for files in (20_000, 120_000):
        out = subprocess.run(
            [sys.executable, "-c", _MANY_FILES, str(files), str(tmp_path / f"{files}.sqfs")],
            cwd=Path(__file__).parents[2], check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        peaks[files] = int(out[0]) * 1024
        dirs = 1 + -(-files // 10000) + -(-files // 200)
        assert int(out[1]) == files + dirs
    with SquashfsReader(tmp_path / "120000.sqfs") as r:
        inode = r.lookup("p011/d49/file-0119999.txt")
        assert inode.file_size == len(r.read_file(inode))  # type: ignore[attr-defined, arg-type]
    per_entry = (peaks[120_000] - peaks[20_000]) / (100_000 + 500)
    assert per_entry < 300, f"{per_entry:.0f} bytes per entry (peak RSS {peaks})"
