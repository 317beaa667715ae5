"""Benchmark inputs, built once and cached under /var/tmp/liveimg-bench/.

``tree/``: a copy of real host content (binaries, libraries, Python modules, docs: over
1 GiB); ``rootfs.img``: the same content as a sparse ext4 image made with ``mkfs.ext4 -d``,
its free blocks discarded (``e2fsck -fy -E discard`` punches holes into an image file),
which is what liveimg's rootfs stage hands to the squashfs stage.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from liveimg import run as runner

CACHE = Path(os.environ.get("LIVEIMG_BENCH_DIR", "/var/tmp/liveimg-bench"))
SOURCES = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu", "/usr/lib/python3.11", "/usr/share/doc",
           "/usr/share/perl", "/usr/libexec")  # fmt: skip
MIN_BYTES = 1 << 30


def _du(path: Path) -> int:
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(top, name))
            if not os.path.islink(os.path.join(top, name)):
                total += st.st_size
    return total


def prepare(cache: Path = CACHE) -> dict[str, object]:
    """Build (or reuse) the inputs; returns a description with their sizes."""
    marker = cache / "inputs.json"
    if marker.exists():
        info: dict[str, object] = json.loads(marker.read_text())
        return info
    cache.mkdir(parents=True, exist_ok=True)
    tree = cache / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir()
    for src in SOURCES:
        if os.path.isdir(src):
            dest = tree / src.strip("/").replace("/", "_")
            runner.run(["cp", "-a", "--no-preserve=xattr", src, dest], timeout=3600)
    data = _du(tree)
    if data < MIN_BYTES:
        raise SystemExit(f"benchmark tree has only {data} bytes, need {MIN_BYTES}")
    image = cache / "rootfs.img"
    image.unlink(missing_ok=True)
    size_mb = int(data * 1.4 / (1 << 20)) + 256
    runner.run(["mkfs.ext4", "-q", "-F", "-L", "LiveOS", "-d", tree, image, f"{size_mb}M"], timeout=3600)
    runner.run(["e2fsck", "-fy", "-E", "discard", image], timeout=3600, ok_codes=(0, 1))
    st = image.stat()
    info = {
        "tree_bytes": data,
        "image_apparent_bytes": st.st_size,
        "image_allocated_bytes": st.st_blocks * 512,
        "sources": list(SOURCES),
    }
    marker.write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    print(json.dumps(prepare(), indent=2))
