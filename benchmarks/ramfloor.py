"""The least RAM with which the atomic sample boots to its checks, for each way of booting it.

    python -m benchmarks.ramfloor [--outdir OUTDIR] [--ways http-overlay,...] [--jobs 2] [--nice 10]

One build of the atomic sample with liveimg's defaults (lorax's codecs; ``--build-arg`` adds
options, ``--outdir`` reuses a build), then, for each way of :data:`WAYS`, a bisection on QEMU's
``-m`` (:data:`STEP` MiB resolution) with ``liveimg boot-test --via kernel``: a boot passes when
it reaches the live system's checks.  Each way starts from the build's computed floor
(``manifest.json``'s ``initramfs.ram_floor``, in MiB of MemTotal) plus the difference between
``-m`` and MemTotal seen in the guest, and steps by :data:`BRACKET` MiB until it has one failing
and one passing size, so a good floor costs few boots.  The initramfs's own RAM check is turned
off for these boots (``liveimg.ramcheck=0``); its notice line gives the guest's MemTotal at each
size.  Ways run ``--jobs`` at a time (one QEMU guest each).  The result, with each boot,
goes to ``results/ramfloor-<timestamp>.json`` and ``results/ramfloor.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness

#: The resolution of the bisection, in MiB of ``-m``.
STEP = 16
#: How far each bracketing step moves, in MiB.
BRACKET = 64
#: The notice line liveimg's livenetroot writes before the download (loglevel=6 shows it).
_RAM_LINE = re.compile(r"liveimg: RAM: this machine has (\d+) MiB \(MemTotal\), this image needs (\d+) MiB")


@dataclass(frozen=True)
class Way:
    """One way of booting: its kernel arguments, the build options it needs, and which computed floor
    is its own (a key of ``manifest.json``'s ``initramfs.ram_floor``)."""

    name: str
    kernel_args: tuple[str, ...] = ()
    floor_key: str = "need_mib"
    build_args: tuple[str, ...] = ()
    start_mib: int | None = None  # where to start when the computed floor is not this way's (MiB of -m)


#: The ways, one line each: a way added later (an embedded rootfs, NBD) is one more line.
WAYS: tuple[Way, ...] = (
    Way("http-overlay"),
    Way("http-fsimg", ("rd.writable.fsimg=1",)),
    Way("http-live-ram", ("rd.live.ram=1",), floor_key="live_ram_mib"),
    # The live file in RAM twice while the kernel unpacks it: above the HTTP floor, found upwards.
    Way("embedded", build_args=("--embed-rootfs",)),
    # The live file read over NBD: the HTTP floor is no guide; start low (the e2e boots at 512).
    Way("nbd", build_args=("--url", "nbd://192.0.2.1:10809/live"), start_mib=384),
)


def round_up(mib: int, step: int = STEP) -> int:
    return -(-mib // step) * step


def bisect(
    boots: Callable[[int], bool],
    start: int,
    *,
    step: int = STEP,
    bracket: int = BRACKET,
    known: dict[int, bool] | None = None,
) -> tuple[int, int]:
    """The smallest size (a multiple of ``step``) for which ``boots`` is true, and the largest below
    it for which it is false, found from ``start`` by bracketing then bisecting; ``boots`` is
    assumed monotonic (more RAM never hurts); each size is booted once (``known``: sizes booted before)."""
    seen = dict(known or {})

    def once(memory: int) -> bool:
        if memory not in seen:
            seen[memory] = boots(memory)
        return seen[memory]

    start = round_up(start, step)
    if once(start):
        hi, lo = start, start - bracket
        while once(lo):
            hi, lo = lo, lo - bracket
    else:
        # Upwards the distance doubles: a way whose need the computed floor leaves out (a copy of
        # rootfs.img with rd.writable.fsimg) is found in a few boots all the same.
        lo, hi, up = start, start + bracket, bracket
        while not once(hi):
            up *= 2
            lo, hi = hi, hi + up
    while hi - lo > step:
        mid = round_up(lo + (hi - lo) // 2, step)
        if mid >= hi:
            mid = hi - step
        if once(mid):
            hi = mid
        else:
            lo = mid
    return hi, lo


def boot_once(outdir: Path, way: Way, memory: int, work: Path, *, nice: int, timeout: float) -> dict[str, Any]:
    """One ``liveimg boot-test --via kernel`` at ``memory`` MiB; what it said."""
    workdir = work / f"{way.name}-{memory}"
    argv = [sys.executable, "-m", "liveimg", "--progress", "none", "boot-test", str(outdir), "--via", "kernel",
            "--memory", str(memory), "--timeout", str(timeout), "--workdir", str(workdir), "--json",
            "--kernel-arg", "liveimg.ramcheck=0", "--kernel-arg", "loglevel=6"]  # fmt: skip
    for arg in way.kernel_args:
        argv += ["--kernel-arg", arg]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=harness.REPO, capture_output=True, text=True, check=False)
    seconds = round(time.monotonic() - started, 1)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = {"ok": False, "outcome": "error", "reason": done.stderr.strip()[-300:]}
    memtotal = None
    log = Path(str(report.get("console_log", "")))
    if log.is_file():
        match = _RAM_LINE.search(log.read_text(errors="replace"))
        memtotal = int(match.group(1)) if match else None
    return {"memory_mib": memory, "ok": bool(report.get("ok")), "outcome": report.get("outcome"),
            "reason": report.get("reason"), "memtotal_mib": memtotal, "seconds": seconds,
            "last_lines": list(report.get("last_lines", []))[-5:] if not report.get("ok") else []}  # fmt: skip


def measure_way(
    outdir: Path,
    way: Way,
    work: Path,
    *,
    nice: int,
    timeout: float,
    reserve: int,
    say: Callable[[str], None],
    known: dict[int, bool] | None = None,
    start: int | None = None,
) -> dict[str, Any]:
    """The bisection of one way on the build in ``outdir``, from ``start`` MiB (default: its computed
    floor plus ``reserve``; a build older than the floor has none)."""
    manifest = json.loads((outdir / "manifest.json").read_text())
    floors = manifest["initramfs"].get("ram_floor") or {}
    computed = floors.get(way.floor_key)
    if start is None and way.start_mib is None and computed is None:
        raise SystemExit(f"{outdir} has no computed RAM floor (an older build): give --start")
    boots: list[dict[str, Any]] = []

    def boots_at(memory: int) -> bool:
        result = boot_once(outdir, way, memory, work, nice=nice, timeout=timeout)
        boots.append(result)
        verdict = "boots" if result["ok"] else "fails"
        say(f"{way.name}: -m {memory}: {verdict} ({result['reason'] or result['outcome']}, "
            f"MemTotal {result['memtotal_mib']} MiB, {result['seconds']} s)")  # fmt: skip
        return bool(result["ok"])

    if start is None:
        start = way.start_mib
    if start is None:
        start = int(computed) + reserve if computed is not None else 0
    floor, below = bisect(boots_at, start, known=known)
    at_floor = [b["memtotal_mib"] for b in boots if b["memory_mib"] == floor and b["memtotal_mib"]]
    return {
        "way": way.name,
        "kernel_args": list(way.kernel_args),
        "computed_floor_mib": computed,
        "computed_floor_measure": "MemTotal",
        "floor_mib": floor,
        "fails_at_mib": below,
        "memtotal_at_floor_mib": at_floor[0] if at_floor else None,
        "boots": sorted(boots, key=lambda b: int(b["memory_mib"])),
        "earlier_boots": {str(m): ok for m, ok in sorted((known or {}).items())},
    }


def build(image: Path, outdir: Path, args: Sequence[str], nice: int) -> float:
    argv = [sys.executable, "-m", "liveimg", "--progress", "none", "build", str(image), "-o", str(outdir), *args]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    started = time.monotonic()
    subprocess.run(argv, cwd=harness.REPO, check=True)
    return round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ramfloor", description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, help="a build of the atomic sample to reuse (default: build one)")
    parser.add_argument("--build-arg", action="append", default=[], help="an option for `liveimg build`")
    parser.add_argument("--ways", default=",".join(w.name for w in WAYS), help="comma-separated names of WAYS")
    parser.add_argument("--jobs", type=int, default=2, help="ways bisected at once, one QEMU guest each (default 2)")
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per boot (default 600)")
    parser.add_argument("--reserve", type=int, default=48,
                        help="MiB between -m and MemTotal, to start from (default 48)")  # fmt: skip
    parser.add_argument("--start", type=int, help="MiB of -m to start from (default: the computed floor + reserve)")
    parser.add_argument("--seed", action="append", default=[], metavar="WAY:MIB:boots|fails",
                        help="a boot of an earlier run of the same build, not repeated")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/liveimg-bench/ramfloor"))
    parser.add_argument("--name", default="ramfloor", help="the result file's name (default ramfloor)")
    args = parser.parse_args(argv)
    chosen = [w for w in WAYS if w.name in args.ways.split(",")]
    if not chosen:
        parser.error(f"no such way: {args.ways} (have {', '.join(w.name for w in WAYS)})")
    record: dict[str, Any] = harness.provenance(args.name)
    record["command"] = shlex.join(["python", "-m", "benchmarks.ramfloor", *(sys.argv[1:] if argv is None else argv)])
    record["niceness"] = args.nice
    seeds: dict[str, dict[int, bool]] = {}
    for seed in args.seed:
        name, memory, verdict = seed.split(":")
        seeds.setdefault(name, {})[int(memory)] = verdict == "boots"
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(text, flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    builds: dict[tuple[str, ...], Path] = {}
    for way in chosen:
        key = (*args.build_arg, *way.build_args)
        if key in builds:
            continue
        if args.outdir is not None and not way.build_args:
            builds[key] = args.outdir
            continue
        sys.path.insert(0, str(harness.REPO))
        from tests.samples import sample_image

        out = args.work / f"out-{len(builds)}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        seconds = build(sample_image("atomic"), out, key, args.nice)
        say(f"built {out} ({shlex.join(key) or 'defaults'}) in {seconds} s")
        builds[key] = out
    record["builds"] = {}
    for key, out in builds.items():
        manifest = json.loads((out / "manifest.json").read_text())
        live = manifest["rootfs"]["file"]
        record["builds"][shlex.join(key) or "defaults"] = {
            "outdir": str(out),
            "live_file_mib": round(manifest["artifacts"][live]["size"] / harness.MiB, 1),
            "initramfs_mib": round(manifest["artifacts"][manifest["initramfs"]["file"]]["size"] / harness.MiB, 1),
            "initramfs": {k: manifest["initramfs"].get(k) for k in ("compression", "all_drivers", "ram_floor")},
        }
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = []
        for way in chosen:
            out = builds[(*args.build_arg, *way.build_args)]
            futures.append(pool.submit(measure_way, out, way, args.work, nice=args.nice, timeout=args.timeout,
                                       reserve=args.reserve, say=say, known=seeds.get(way.name),
                                       start=args.start))  # fmt: skip
        record["ways"] = [f.result() for f in futures]
    record["loadavg_after"] = harness.loadavg()
    for way in record["ways"]:
        say(f"{way['way']}: floor {way['floor_mib']} MiB of -m (fails at {way['fails_at_mib']}; MemTotal there "
            f"{way['memtotal_at_floor_mib']} MiB); computed {way['computed_floor_mib']} MiB of MemTotal")  # fmt: skip
    say(f"wrote {harness.save(args.name, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
