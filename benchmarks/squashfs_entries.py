"""Memory per entry: liveimg's squashfs writer against mksquashfs on trees of many small files.

The trees are built once and cached under ``/var/tmp/liveimg-bench/entries-<N>/``: N regular
files of 0 to 4 KiB (seeded, so every run packs the same bytes) in directories of 200 files,
50 directories to a parent, so N = 500 000 makes 2 500 + 50 directories.  Each size is packed
by liveimg's writer (``benchmarks.pack_one``, the directory scan and writer of ``liveimg squashfs
pack``) and by mksquashfs, both under ``nice`` and ``/usr/bin/time`` (peak RSS is its ``%M``, the
child's own high-water mark), at the same codec, block size and threads.  Bytes per entry is the
RSS slope between the smallest and the largest size: what each further entry costs, whatever
the interpreter and the codec take once.

    python -m benchmarks.squashfs_entries                       # 100 000 and 500 000 files
    python -m benchmarks.squashfs_entries --sizes 20000,100000 --tools liveimg

The result goes to ``benchmarks/results/squashfs-entries-<time>.json`` (and ``squashfs-entries.json``),
stamped with the commit, the machine and the command (:func:`benchmarks.harness.provenance`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.squashfs import _timed

CACHE = Path(os.environ.get("LIVEIMG_BENCH_DIR", "/var/tmp/liveimg-bench"))
FILES_PER_DIR = 200
DIRS_PER_PARENT = 50
CODEC: dict[str, object] = {"comp": "lz4", "block_size": 131072, "mkfs_time": 0}


def build_tree(files: int, cache: Path = CACHE) -> tuple[Path, int]:
    """The cached tree of ``files`` small files (built on first use); its path and its entry count."""
    root = cache / f"entries-{files}"
    tree = root / "tree"
    marker = root / "entries.json"
    if marker.exists():
        return tree, int(json.loads(marker.read_text())["entries"])
    shutil.rmtree(root, ignore_errors=True)
    tree.mkdir(parents=True)
    rng = random.Random(files)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz0123456789", k=rng.randint(2, 9))) for _ in range(4096)]
    dirs = 1  # the root
    for i in range(files):
        if i % FILES_PER_DIR == 0:
            parent = tree / f"p{i // (FILES_PER_DIR * DIRS_PER_PARENT):03d}"
            if not parent.exists():
                parent.mkdir()
                dirs += 1
            directory = parent / f"d{i // FILES_PER_DIR % DIRS_PER_PARENT:02d}"
            directory.mkdir()
            dirs += 1
        size = rng.randint(0, 4096)
        data = b" ".join(rng.choices(words, k=size // 4 + 1))[:size]
        (directory / f"file-{i:07d}.txt").write_bytes(data)
    entries = files + dirs
    marker.write_text(json.dumps({"files": files, "directories": dirs, "entries": entries}))
    return tree, entries


def pack(tool: str, tree: Path, dest: Path, threads: int) -> dict[str, float]:
    """One measured pack (wall, CPU, peak RSS) of ``tree`` into ``dest``, removed afterwards."""
    dest.unlink(missing_ok=True)
    if tool == "mksquashfs":
        argv = ["mksquashfs", str(tree), str(dest), "-noappend", "-no-progress", "-quiet", "-comp",
                str(CODEC["comp"]), "-b", str(CODEC["block_size"]), "-processors", str(threads),
                "-mkfs-time", "0"]  # fmt: skip
        measured: dict[str, Any] = _timed(argv, dest)
    else:
        stats = dest.with_suffix(".stats")
        options = {**CODEC, "processors": threads}
        argv = [sys.executable, "-m", "benchmarks.pack_one", "--options", json.dumps(options), "--stats", str(stats),
                str(tree), str(dest)]  # fmt: skip
        measured = _timed(argv, dest)
        measured["stats"] = json.loads(stats.read_text())
        stats.unlink()
    measured["size"] = dest.stat().st_size
    dest.unlink()
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,500000", help="numbers of files, comma separated")
    parser.add_argument("--tools", default="liveimg,mksquashfs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    head = harness.provenance("squashfs-entries", argv)
    head["command"] = "python -m benchmarks.squashfs_entries " + " ".join(sys.argv[1:] if argv is None else argv)
    cases: list[dict[str, Any]] = []
    out = CACHE / "entries-out"
    out.mkdir(parents=True, exist_ok=True)
    for files in sizes:
        tree, entries = build_tree(files)
        for tool in args.tools.split(","):
            before = harness.loadavg()
            measured = pack(tool, tree, out / f"{tool}-{files}.sqfs", args.threads)
            case = {"tool": tool, "files": files, "entries": entries, "threads": args.threads, **measured,
                    "loadavg_before": before, "loadavg_after": harness.loadavg()}  # fmt: skip
            cases.append(case)
            print(json.dumps(case), flush=True)
    shutil.rmtree(out, ignore_errors=True)
    slopes = {}
    for tool in args.tools.split(","):
        mine = [c for c in cases if c["tool"] == tool]
        if len(mine) >= 2:
            low, high = mine[0], mine[-1]
            slope = (high["rss_mib"] - low["rss_mib"]) * 2**20 / (high["entries"] - low["entries"])
            slopes[tool] = round(slope, 1)
    result = {**head, "codec": CODEC, "cases": cases, "bytes_per_entry": slopes}
    path = harness.save("squashfs-entries", result)
    print(f"bytes per entry (RSS slope): {slopes}; {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
