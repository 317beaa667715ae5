"""How cost grows: the squashfs and rootfs stages against data size and threads.

Inputs (built once, cached in ``/var/tmp/liveimg-bench/scaling/``): ``rootfs-<size>G.img``,
sparse ext4 images holding 0.5, 1, 2 and 4 GiB of real host data, made as
:mod:`benchmarks.inputs` makes its image (``mkfs.ext4 -d``, then ``e2fsck -fy -E discard``,
which punches the free blocks out of the file).  The files are the regular files of ``/usr``
in a fixed pseudo-random order (seed 0), each size taking a prefix of that order: every
input has the same mix of ELF code, text and compressed data, and the smaller ones are
subsets of the larger, so that only the amount changes.  The trees given to ``mkfs.ext4``
are hard links to the host's files (no copy) and are removed once the images exist.

Measured, each as a measured run (wall, CPU, peak RSS of the process tree):

* squashfs: liveimg's native writer packing the image as ``LiveOS/rootfs.img``
  (:mod:`benchmarks.pack_one`, 128 KiB blocks) with xz + BCJ x86 and zstd (level 15, as
  mksquashfs), at 1 and 2 threads;
* rootfs: liveimg's partition method (``liveimg.rootfs.from_partition``: sparse copy,
  e2fsck, resize2fs, tune2fs, discard) on the image as if it were the root partition, and
  lorax's way (``mkfs.ext4`` + loop mounts + ``cp -a`` + ``fsck.ext4 -E discard``, at the
  source's size as with ``--live-rootfs-keep-size``) with ``--lorax-rootfs``.

Then ``time = a + b * GiB`` is fitted per series (:func:`benchmarks.harness.linear_fit`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness

GiB = 1 << 30
SIZES_GIB = (0.5, 1.0, 2.0, 4.0)
SOURCE = Path("/usr")
SEED = 0
CACHE = Path(os.environ.get("LIVEIMG_BENCH_DIR", "/var/tmp/liveimg-bench")) / "scaling"
CODECS: dict[str, dict[str, Any]] = {
    "xz-bcj": {"comp": "xz", "Xbcj": ["x86"]},
    "zstd": {"comp": "zstd"},
}


def candidate_files(source: Path = SOURCE, seed: int = SEED) -> list[tuple[str, int]]:
    """Regular, non-empty files under ``source`` (relative paths, sizes) in a fixed pseudo-random order."""
    found: list[tuple[str, int]] = []
    for top, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if st.st_size > 0 and (st.st_mode & 0o170000) == 0o100000 and os.access(path, os.R_OK):
                found.append((os.path.relpath(path, source), st.st_size))
    random.Random(seed).shuffle(found)
    return found


def prefix_for(files: Sequence[tuple[str, int]], target: int) -> int:
    """How many of ``files`` (in order) it takes to reach ``target`` bytes."""
    total = 0
    for i, (_, size) in enumerate(files):
        if total >= target:
            return i
        total += size
    if total < target:
        raise SystemExit(f"{SOURCE} holds only {total} bytes of regular files, {target} are needed")
    return len(files)


def _link_into(tree: Path, source: Path, rel: str) -> None:
    dest = tree / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source / rel, dest)
    except OSError:  # another filesystem, or a protected link: copy it
        shutil.copy2(source / rel, dest)


def image_path(size_gib: float, cache: Path = CACHE) -> Path:
    return cache / f"rootfs-{size_gib:g}G.img"


def prepare(sizes: Sequence[float] = SIZES_GIB, cache: Path = CACHE) -> dict[str, Any]:
    """Build the missing inputs (smallest first, growing one tree of hard links); describe them all."""
    cache.mkdir(parents=True, exist_ok=True)
    marker = cache / "inputs.json"
    info: dict[str, Any] = json.loads(marker.read_text()) if marker.exists() else {}
    missing = [s for s in sorted(sizes) if f"{s:g}" not in info or not image_path(s, cache).exists()]
    if missing:
        files = candidate_files()
        tree = cache / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        linked = 0
        for size in sorted(sizes):
            count = prefix_for(files, int(size * GiB))
            for rel, _ in files[linked:count]:
                _link_into(tree, SOURCE, rel)
            linked = count
            if size not in missing:
                continue
            data = sum(s for _, s in files[:count])
            image = image_path(size, cache)
            image.unlink(missing_ok=True)
            size_mb = int(data * 1.3 / (1 << 20)) + 256
            print(f"scaling: building {image.name} ({data / GiB:.2f} GiB in {count} files)", flush=True)
            subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "LiveOS", "-d", str(tree), str(image), f"{size_mb}M"],
                check=True,
            )
            rc = subprocess.run(
                ["e2fsck", "-fy", "-E", "discard", str(image)], check=False, capture_output=True
            ).returncode
            if rc not in (0, 1):
                raise SystemExit(f"e2fsck {image} exited {rc}")
            st = image.stat()
            info[f"{size:g}"] = {
                "gib": size,
                "files": count,
                "data_bytes": data,
                "apparent_bytes": st.st_size,
                "allocated_bytes": st.st_blocks * 512,
                "source": str(SOURCE),
                "seed": SEED,
            }
            marker.write_text(json.dumps(info, indent=1))
        shutil.rmtree(tree, ignore_errors=True)
    return {f"{s:g}": info[f"{s:g}"] for s in sizes}


def needed_bytes(sizes: Sequence[float], cache: Path = CACHE) -> int:
    """A generous bound on the scratch space a run needs beyond the cached inputs."""
    biggest = max(sizes) * GiB
    missing = sum(s * GiB * 1.1 for s in sizes if not image_path(s, cache).exists())
    # the largest input's rootfs copy (liveimg and lorax) and its squashfs, at once
    return int(missing + 2.5 * biggest)


# --- one measurement ----------------------------------------------------------------------------


def squashfs_case(image: Path, codec: str, threads: int, out: Path, *, nice: int) -> dict[str, Any]:
    dest = out / f"{image.stem}-{codec}-{threads}.sqfs"
    stats = dest.with_suffix(".stats")
    options = {**CODECS[codec], "block_size": 131072, "processors": threads, "mkfs_time": 0}
    argv = [
        sys.executable,
        "-m",
        "benchmarks.pack_one",
        "--options",
        json.dumps(options),
        "--stats",
        str(stats),
        "--file-as",
        "LiveOS/rootfs.img",
        str(image),
        str(dest),
    ]
    measured = harness.run_measured(argv, cwd=harness.REPO, nice=nice)
    if measured.returncode != 0:
        raise SystemExit(f"pack_one failed: {measured.stderr[-5:]}")
    extra = json.loads(stats.read_text())
    size = dest.stat().st_size
    dest.unlink()
    stats.unlink()
    return {**measured.summary(), "size": size, "codec_cpu_ms": extra.get("codec_cpu_ms")}


def rootfs_case(image: Path, out: Path, *, nice: int, lorax: bool) -> dict[str, Any]:
    dest = out / "rootfs.img"
    which = "lorax" if lorax else "liveimg"
    argv = [sys.executable, "-m", "benchmarks.scaling", f"--rootfs-{which}", str(image), str(dest)]
    measured = harness.run_measured(argv, cwd=harness.REPO, nice=nice)
    if measured.returncode != 0:
        raise SystemExit(f"rootfs ({which}) failed: {[line.text for line in measured.stderr[-5:]]}")
    st = dest.stat()
    dest.unlink()
    return {**measured.summary(), "size": st.st_size, "allocated": st.st_blocks * 512}


def _rootfs_liveimg(image: Path, dest: Path) -> None:
    from liveimg.rootfs import RootfsOptions, from_partition

    from_partition(
        image=image,
        image_format="raw",
        offset=0,
        length=image.stat().st_size,
        boot=None,
        boot_limit=None,
        dest=dest,
        options=RootfsOptions(),
        workdir=dest.parent,
        what=image.name,
    )


def _rootfs_lorax(image: Path, dest: Path) -> None:
    """lorax's mkrootfsimg + the discard step (lorax-reference.md §1.3-1.4), through lorax_way's helpers.

    The size is the source's (lorax's ``--live-rootfs-keep-size``): lorax's automatic estimate
    (file sizes + 1 MiB) leaves no room for the journal and inode tables, so ``cp -a`` runs out
    of space on these inputs, which have no hard links to over-count.
    """
    from benchmarks import lorax_way

    work = dest.parent / "lorax-mnt"
    with lorax_way.loop(image, readonly=True) as src_dev, lorax_way.mounted(src_dev, work / "src", "-o", "ro"):
        size = image.stat().st_size
        with open(dest, "wb") as f:
            f.truncate(size)
        with lorax_way.loop(dest) as dev:
            lorax_way.sh("mkfs.ext4", "-q", "-L", "LiveOS", "-b", "4096", "-m", "0", dev)
            with lorax_way.mounted(dev, work / "dst"):
                lorax_way.sh("cp", "-a", f"{work / 'src'}/.", f"{work / 'dst'}/")
    lorax_way.sh("sync")
    rc = subprocess.run(
        ["fsck.ext4", "-y", "-f", "-E", "discard", str(dest)], check=False, capture_output=True
    ).returncode
    if rc not in (0, 1):
        raise SystemExit(f"fsck.ext4 exited {rc}")
    shutil.rmtree(work, ignore_errors=True)


# --- the benchmark ------------------------------------------------------------------------------


def fits(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``wall = a + b * GiB`` per series (stage, tool, codec, threads), with R² and throughput."""
    series: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for c in cases:
        series.setdefault((c["stage"], c["tool"], c.get("codec", ""), c.get("threads", 0)), []).append(c)
    out = []
    for (stage, tool, codec, threads), items in sorted(series.items()):
        xs = [float(c["data_gib"]) for c in items]
        ys = [float(c["wall"]) for c in items]
        entry: dict[str, Any] = {
            "stage": stage,
            "tool": tool,
            "codec": codec,
            "threads": threads,
            "points": [[x, y] for x, y in sorted(zip(xs, ys, strict=True))],
        }
        if len(set(xs)) >= 2:
            fit = harness.linear_fit(xs, ys)
            entry.update({"a": round(fit.a, 2), "b": round(fit.b, 2), "r2": round(fit.r2, 4), "linear": fit.r2 >= 0.99})
        out.append(entry)
    return out


def speedups(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wall at 1 thread / wall at 2 threads, per codec and size."""
    index = {(c["codec"], c["data_gib"], c["threads"]): c for c in cases if c["stage"] == "squashfs"}
    out = []
    for (codec, gib, threads), one in sorted(index.items()):
        two = index.get((codec, gib, 2))
        if threads == 1 and two is not None:
            out.append(
                {
                    "codec": codec,
                    "data_gib": gib,
                    "t1": one["wall"],
                    "t2": two["wall"],
                    "speedup": round(one["wall"] / two["wall"], 2),
                }
            )
    return out


def run(
    *,
    sizes: Sequence[float],
    codecs: Sequence[str],
    threads: Sequence[int],
    nice: int,
    lorax_rootfs: bool,
    one_thread_max_gib: float | None = None,
    clean: bool = False,
) -> dict[str, Any]:
    CACHE.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(CACHE).free
    need = needed_bytes(sizes)
    if free < need:
        raise SystemExit(f"scaling: {free / GiB:.1f} GiB free in {CACHE}, {need / GiB:.1f} GiB needed")
    inputs = prepare(sizes)
    report: dict[str, Any] = {"inputs": inputs, "nice": nice, "cases": [], "disk_free_before": free}
    out = CACHE / "out"
    with harness.scratch_dir(out):
        for size in sorted(sizes):
            image = image_path(size)
            gib = round(inputs[f"{size:g}"]["data_bytes"] / GiB, 3)
            plan: list[tuple[str, dict[str, Any]]] = [("rootfs", {"tool": "liveimg"})]
            if lorax_rootfs:
                plan.append(("rootfs", {"tool": "lorax"}))
            for codec in codecs:
                for t in threads:
                    if t == 1 and one_thread_max_gib is not None and size > one_thread_max_gib:
                        continue
                    plan.append(("squashfs", {"tool": "liveimg", "codec": codec, "threads": t}))
            for stage, what in plan:
                load = harness.loadavg()
                print(f"scaling: {size:g} GiB {stage} {what} (load {load[0]})", flush=True)
                if stage == "rootfs":
                    case = rootfs_case(image, out, nice=nice, lorax=what["tool"] == "lorax")
                else:
                    case = squashfs_case(image, what["codec"], what["threads"], out, nice=nice)
                case.update(
                    {
                        "stage": stage,
                        **what,
                        "size_gib": size,
                        "data_gib": gib,
                        "loadavg_before": load,
                        "loadavg_after": harness.loadavg(),
                    }
                )
                report["cases"].append(case)
                print(f"  {case['wall']:.1f} s, {case['rusage']['cpu']:.1f} s CPU", flush=True)
    report["fits"] = fits(report["cases"])
    report["speedups"] = speedups(report["cases"])
    if clean:
        shutil.rmtree(CACHE, ignore_errors=True)
        report["inputs_removed"] = True
    return report


def main(argv: list[str] | None = None) -> int:
    """Internal entry points for one measured step (run in a child so that its memory is measured alone)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] in ("--rootfs-liveimg", "--rootfs-lorax"):
        (_rootfs_liveimg if args[0] == "--rootfs-liveimg" else _rootfs_lorax)(Path(args[1]), Path(args[2]))
        return 0
    print("usage: python -m benchmarks scaling (this module's own arguments are internal)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
