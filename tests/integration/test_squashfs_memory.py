"""Memory in flight is bounded by workers x block size, not by the input."""

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
