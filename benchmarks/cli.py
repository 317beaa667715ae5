"""``python -m benchmarks`` (``make bench``): run the benchmarks, save their results, render the README.

    python -m benchmarks                     # all: e2e, squashfs, dracut, scaling, rebuild, then the report
    python -m benchmarks e2e --rounds 3      # one benchmark (then the report)
    python -m benchmarks rebuild             # the update sample built with an empty cache and a warm one
    python -m benchmarks all --quick         # a short smoke run of everything (fast codecs, one round)
    python -m benchmarks report              # only re-render benchmarks/README.md and the plot

Each benchmark writes ``benchmarks/results/<name>-<timestamp>.json`` and ``<name>.json`` (the
latest; ``<name>-quick.json`` for ``--quick``), with the machine, the commit, the command, the
load before and after, and the accelerator.  Needs root (lorax's way uses loop devices and
mounts; the sample images are built as root).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks import e2e, harness, rebuild, report, scaling, stages

WORK = Path(os.environ.get("LIVEIMG_BENCH_DIR", "/var/tmp/liveimg-bench"))
ORDER = ("e2e", "squashfs", "dracut", "scaling", "rebuild")
README = harness.HERE / "README.md"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "which", nargs="*", default=["all"], choices=["all", "report", *ORDER], help="benchmarks to run (default: all)"
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run: fast codecs, one round, small sizes")
    p.add_argument(
        "--rounds",
        type=int,
        help="e2e and rebuild rounds, each side once per round (default 2, rebuild 3; 1 with --quick)",
    )
    p.add_argument(
        "--nice",
        default="auto",
        help="niceness of the measured programs: a number, or auto (10 when the load is above 1.5)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        metavar="LOAD",
        help="before each benchmark, wait until the 1-minute load is at most LOAD",
    )
    p.add_argument("--max-wait", type=float, default=2400, help="seconds to wait for --wait-quiet (default 2400)")
    p.add_argument("--sizes", type=_floats, help="scaling: GiB of data (default 0.5,1,2,4; 0.5,1 with --quick)")
    p.add_argument("--threads", type=_ints, default=[1, 2], help="scaling: squashfs threads (default 1,2)")
    p.add_argument("--codecs", default="xz-bcj,zstd", help="scaling: squashfs codecs (default xz-bcj,zstd)")
    p.add_argument(
        "--one-thread-max-gib", type=float, help="scaling: measure 1 thread only up to this size (default: every size)"
    )
    p.add_argument("--lorax-rootfs", action="store_true", help="scaling: also time lorax's rootfs way (cp -a)")
    p.add_argument("--clean-inputs", action="store_true", help="scaling: delete its cached inputs afterwards")
    p.add_argument("--rerun-squashfs", action="store_true", help="rerun benchmarks/squashfs.py even if fresh")
    p.add_argument("--squashfs-args", help="arguments for benchmarks/squashfs.py when it is rerun (one string)")
    p.add_argument("--keep", action="store_true", help="e2e, rebuild: keep the scratch directory (logs)")
    return p


def _niceness(value: str) -> int:
    return harness.auto_nice() if value == "auto" else int(value)


def run_one(name: str, args: argparse.Namespace, argv: list[str]) -> Path:
    if args.wait_quiet is not None:
        harness.wait_for_quiet(args.wait_quiet, args.max_wait)
    nice = _niceness(args.nice)
    head = harness.provenance(name if name != "squashfs" else "squashfs-core", argv)
    head["quick"] = args.quick
    head["nice"] = nice
    head["load"] = {"before": harness.loadavg()}
    body: dict[str, Any]
    if name == "e2e":
        rounds = args.rounds or (1 if args.quick else 2)
        body = e2e.run(rounds=rounds, quick=args.quick, nice=nice, keep=args.keep)
    elif name == "rebuild":
        rounds = args.rounds or (1 if args.quick else 3)
        body = rebuild.run(rounds=rounds, quick=args.quick, nice=nice, keep=args.keep)
    elif name == "squashfs":
        extra = args.squashfs_args.split() if args.squashfs_args else None
        body = stages.squashfs(quick=args.quick, work=WORK / "squashfs-quick", force=args.rerun_squashfs, extra=extra)
        body["nice"] = 10  # benchmarks/squashfs.py runs every case under nice -n 10
    elif name == "dracut":
        body = stages.dracut(quick=args.quick, nice=nice, work=WORK / "dracut")
        body["accelerator"] = harness.accelerator()
    elif name == "scaling":
        sizes = args.sizes or ([0.5, 1.0] if args.quick else list(scaling.SIZES_GIB))
        codecs = ["zstd"] if args.quick and args.codecs == "xz-bcj,zstd" else args.codecs.split(",")
        body = scaling.run(
            sizes=sizes,
            codecs=codecs,
            threads=args.threads,
            nice=nice,
            lorax_rootfs=args.lorax_rootfs,
            one_thread_max_gib=args.one_thread_max_gib,
            clean=args.clean_inputs,
        )
    else:
        raise ValueError(name)
    result = {**head, **body}
    result["load"] = {**head["load"], "after": harness.loadavg()}
    result["machine"]["loadavg_after"] = result["load"]["after"]
    saved = harness.save(head["benchmark"] + ("-quick" if args.quick else ""), result)
    print(f"{name}: results in {saved}", flush=True)
    return saved


def render() -> None:
    found = report.latest()
    picture = report.plot(found, harness.RESULTS / report.PLOT)
    report.update_readme(README, report.render(found, report.PLOT if picture else None))
    print(f"report: {README}" + (f", {picture}" if picture else ""), flush=True)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(args_list)
    which = list(ORDER) if "all" in args.which else [w for w in ORDER if w in args.which]
    if which and os.geteuid() != 0:
        print("benchmarks: run as root (lorax's way needs loop devices and mounts)", file=sys.stderr)
        return 2
    failed = []
    for name in which:
        try:
            run_one(name, args, args_list)
        except (SystemExit, Exception) as exc:  # one broken benchmark must not lose the others' results
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                raise
            print(f"{name}: FAILED: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
        render()
    if not which:
        render()
    if failed:
        print(f"benchmarks: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
