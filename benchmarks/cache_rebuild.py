"""The build cache's effect on packing: the atomic sample's rootfs.img packed without a cache, cold and warm.

    sudo nice -n 5 .venv/bin/python -m benchmarks.cache_rebuild [--comp xz] [--keep DIR] [--no-plain]

rootfs.img is made from the sample disk by the rootfs stage's partition method (as the dracut
tests make theirs), then packed with the options a build uses for an x86-64 image (xz with the
x86 BCJ filter, unless ``--comp``) and a fixed image time: without a cache (unless
``--no-plain``), into an empty cache, and from that cache.  The images must be byte-identical.
Prints one JSON object: each pack's wall time, the codec's CPU time, the cache's hits and
misses, whether the images are identical, and the cache's size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from liveimg.cache import Cache
from liveimg.manifest import sha256_file
from liveimg.squashfs.options import SquashfsOptions, bcj_for_arch
from liveimg.squashfs.writer import pack_file


def measure(rootfs: Path, work: Path, options: SquashfsOptions, *, plain: bool = True) -> dict[str, Any]:
    cache = Cache(work / "cache")
    runs: dict[str, Any] = {}
    digests = set()
    ways = (("no cache", None), ("cold", cache), ("warm", cache)) if plain else (("cold", cache), ("warm", cache))
    for name, with_cache in ways:
        dest = work / f"{name.replace(' ', '-')}.sqfs"
        started = time.monotonic()
        result = pack_file(rootfs, dest, options=options, cache=with_cache)
        runs[name] = {
            "seconds": round(time.monotonic() - started, 1),
            "codec_cpu_s": round(result.stats["codec_cpu_ms"] / 1000, 1),
            "hits": result.stats.get("cache_hits"),
            "misses": result.stats.get("cache_misses"),
            "size": result.size,
        }
        digests.add(sha256_file(dest))
        dest.unlink()
    return {"runs": runs, "identical": len(digests) == 1, "cache_bytes": cache.size()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comp", default="xz")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    parser.add_argument("--no-plain", action="store_true", help="leave out the pack without a cache")
    args = parser.parse_args()
    from tests.integration.sample_rootfs import find_sample, rootfs_from_disk

    # A fixed image time: else each image has its own and no two are the same bytes.
    options = SquashfsOptions(comp=args.comp, Xbcj=bcj_for_arch("x86_64") if args.comp == "xz" else (),
                              mkfs_time=1_700_000_000)  # fmt: skip
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="liveimg-cache-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rootfs = work / "rootfs.img"
        if not rootfs.exists():
            rootfs_from_disk(find_sample("atomic").disk, rootfs)
        report = {
            "comp": args.comp,
            "rootfs_bytes": rootfs.stat().st_size,
            **measure(rootfs, work, options, plain=not args.no_plain),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
