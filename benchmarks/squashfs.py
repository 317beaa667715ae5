"""Side-by-side benchmark: liveimg's squashfs writer against mksquashfs.

Inputs (see :mod:`benchmarks.inputs`): a sparse ext4 ``rootfs.img`` packed as
``LiveOS/rootfs.img`` (the pipeline's hot path) and the same content as a directory tree.
Each case runs both tools at the same compressor, block size (128 KiB) and thread count,
under ``nice -n 10`` and ``/usr/bin/time`` (wall, user+sys CPU, peak RSS).  liveimg also
reports the CPU seconds spent inside the codec, from which the "codec limit" (codec CPU
seconds / threads) follows.  Results go to ``benchmarks/results/squashfs-*.json``;
``--table`` renders them as the Markdown table in benchmarks/README.md.

    python -m benchmarks.squashfs                      # everything (about an hour on 2 cores)
    python -m benchmarks.squashfs --codecs lz4 --threads 2 --inputs image
    python -m benchmarks.squashfs --codecs xz-bcj,xz-bcj-exhaustive --inputs image   # the BCJ heuristic's cost
    python -m benchmarks.squashfs --table benchmarks/results/squashfs-XXXX.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, inputs
from liveimg import run as runner

HERE = Path(__file__).parent
RESULTS = HERE / "results"
CODECS: dict[str, dict[str, object]] = {
    "xz-bcj": {"comp": "xz", "Xbcj": ["x86"]},
    # liveimg tries every block with and without the filter, as mksquashfs always does: equal work.
    "xz-bcj-exhaustive": {"comp": "xz", "Xbcj": ["x86"], "bcj_mode": "exhaustive"},
    "zstd": {"comp": "zstd"},
    "gzip": {"comp": "gzip"},
    "lz4": {"comp": "lz4"},
}
ARCNAME = "LiveOS/rootfs.img"
#: Codecs whose mksquashfs run is another codec's (mksquashfs has no BCJ heuristic): measured once.
MKSQUASHFS_SAME = {"xz-bcj-exhaustive": "xz-bcj"}


def _mksquashfs_args(codec: dict[str, object]) -> list[str]:
    args = ["-comp", str(codec["comp"])]
    if codec.get("Xbcj"):
        args += ["-Xbcj", ",".join(codec["Xbcj"])]  # type: ignore[arg-type]
    return args


def _timed(argv: list[str], tag: Path) -> dict[str, float]:
    timefile = tag.with_suffix(".time")
    cmd = ["nice", "-n", "10", "/usr/bin/time", "-f", "%e %U %S %M", "-o", str(timefile), *argv]
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall, user, system, rss = timefile.read_text().split()[-4:]
    timefile.unlink()
    return {"wall": float(wall), "cpu": float(user) + float(system), "rss_mib": int(rss) / 1024}


def _staged_image(cache: Path) -> Path:
    """mksquashfs packs directories: the image hard-linked under LiveOS/ (what the wrapper does)."""
    staged = cache / "staged"
    target = staged / ARCNAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(cache / "rootfs.img", target)
    return staged


def run_case(cache: Path, which: str, codec_name: str, *, threads: int, tool: str, out: Path) -> dict[str, object]:
    codec = CODECS[codec_name]
    dest = out / f"{which}-{codec_name}-{threads}-{tool}.sqfs"
    dest.unlink(missing_ok=True)
    if tool == "mksquashfs":
        source = _staged_image(cache) if which == "image" else cache / "tree"
        argv = ["mksquashfs", str(source), str(dest), "-noappend", "-no-progress", "-quiet", "-b", "131072",
                "-processors", str(threads), "-mkfs-time", "0", *_mksquashfs_args(codec)]  # fmt: skip
        measured = _timed(argv, dest)
        extra: dict[str, object] = {}
    else:
        stats = dest.with_suffix(".stats")
        options = {**codec, "block_size": 131072, "processors": threads, "mkfs_time": 0}
        argv = [sys.executable, "-m", "benchmarks.pack_one", "--options", json.dumps(options), "--stats", str(stats)]
        if which == "image":
            argv += ["--file-as", ARCNAME, str(cache / "rootfs.img"), str(dest)]
        else:
            argv += [str(cache / "tree"), str(dest)]
        measured = _timed(argv, dest)
        extra = json.loads(stats.read_text())
        stats.unlink()
    size = dest.stat().st_size
    dest.unlink()
    return {"input": which, "codec": codec_name, "threads": threads, "tool": tool, "size": size, **measured,
            **extra}  # fmt: skip


def _git_commit() -> str:
    try:
        return runner.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"]).stdout.strip()
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--inputs", default="image,tree")
    parser.add_argument("--tree-threads", default="2", help="thread counts for the tree input (default 2)")
    parser.add_argument("--tools", default="mksquashfs,liveimg", help="tools in the order they run")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/squashfs-<time>.json)")
    parser.add_argument("--table", type=Path, help="only print the Markdown table of a results file")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    info = inputs.prepare()
    cache = inputs.CACHE
    scratch = cache / "out"
    scratch.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"squashfs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
    report.setdefault("machine", {"cpus": os.cpu_count(), "platform": platform.platform(),
                                  "python": platform.python_version()})  # fmt: skip
    report_command = "python -m benchmarks.squashfs " + " ".join(argv if argv is not None else sys.argv[1:])
    report.setdefault("commit", _git_commit())  # the first run's; each case has its own stamp
    report.setdefault("command", report_command)
    report["inputs"] = info
    report["mksquashfs"] = runner.run(["mksquashfs", "-version"]).stdout.splitlines()[0]
    cases: list[dict[str, object]] = report.setdefault("cases", [])  # type: ignore[assignment]
    done = {(c["input"], c["codec"], c["threads"], c["tool"]) for c in cases}
    loads: list[object] = report.setdefault("loadavg", [])  # type: ignore[assignment]
    for which in args.inputs.split(","):
        thread_counts = args.threads if which == "image" else args.tree_threads
        for codec in args.codecs.split(","):
            for threads in (int(t) for t in thread_counts.split(",")):
                for tool in args.tools.split(","):
                    key = (which, codec, threads, tool)
                    if key in done:
                        continue
                    same = index_of(cases).get((which, MKSQUASHFS_SAME.get(codec, ""), threads, tool))
                    if tool == "mksquashfs" and same is not None:
                        cases.append({**same, "codec": codec, "same_as": same["codec"]})
                        out.write_text(json.dumps(report, indent=1))
                        continue
                    before = os.getloadavg()
                    case = run_case(cache, which, codec, threads=threads, tool=tool, out=scratch)
                    case["commit"] = _git_commit()
                    # Each case says where it was measured: a results file resumed by a later run
                    # (same --out) holds cases of several commits and machines.
                    case["stamp"] = {"commit": harness.git_commit(), "machine": harness.machine(),
                                     "command": report_command, "nice": os.nice(0)}  # fmt: skip
                    case["loadavg_before"] = [round(x, 2) for x in before]
                    case["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                    cases.append(case)
                    loads.append(case["loadavg_after"])
                    out.write_text(json.dumps(report, indent=1))
                    print(json.dumps(case), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print(table(report))
    return 0


def index_of(cases: list[dict[str, Any]]) -> dict[tuple[object, ...], dict[str, Any]]:
    return {(c["input"], c["codec"], c["threads"], c["tool"]): c for c in cases}


def table(report: dict[str, object]) -> str:
    """Markdown: one row per liveimg case, next to the mksquashfs case of the same input, codec and threads.

    "CPU share" is CPU seconds / wall seconds: how much of the machine the run got (2.0 = both
    cores); on a shared machine it explains wall-time differences that the CPU time does not.
    """
    cases: list[dict[str, Any]] = report["cases"]  # type: ignore[assignment]
    index = {(c["input"], c["codec"], c["threads"], c["tool"]): c for c in cases}
    lines = [
        "| input | codec | threads | mksquashfs wall / CPU / RSS / size | liveimg wall / CPU / RSS / size "
        "| wall ratio | CPU ratio | size ratio | CPU share mksq / liveimg | codec limit | wall / codec limit "
        "| CPU / codec CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(c: dict[str, Any]) -> str:
        return f"{c['wall']:.0f} s / {c['cpu']:.0f} s / {c['rss_mib']:.0f} MiB / {c['size'] / 2**20:.1f} MiB"

    for (which, codec, threads, tool), ours in sorted(index.items(), key=lambda kv: str(kv[0])):
        if tool != "liveimg":
            continue
        ref = index.get((which, codec, threads, "mksquashfs"))
        codec_cpu = ours.get("codec_cpu_ms", 0) / 1000
        limit = codec_cpu / threads
        tail = (f"{limit:.0f} s | {ours['wall'] / limit if limit else 0:.2f} | "
                f"{ours['cpu'] / codec_cpu if codec_cpu else 0:.2f} |")  # fmt: skip
        if ref is None:
            lines.append(f"| {which} | {codec} | {threads} | - | {fmt(ours)} | - | - | - | - | {tail}")
            continue
        lines.append(
            f"| {which} | {codec} | {threads} | {fmt(ref)} | {fmt(ours)} | {ours['wall'] / ref['wall']:.2f} "
            f"| {ours['cpu'] / ref['cpu']:.2f} | {ours['size'] / ref['size']:.4f} "
            f"| {ref['cpu'] / ref['wall']:.2f} / {ours['cpu'] / ours['wall']:.2f} | {tail}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
