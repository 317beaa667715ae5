"""The per-stage benchmarks that already exist, run (or reused) through the one entry point.

* squashfs: :mod:`benchmarks.squashfs` (liveimg's writer against mksquashfs).  Its newest
  results file is reused when it is *fresh*: made at a commit whose squashfs writer and
  benchmark code are those of the current commit (``git diff --quiet <commit> HEAD --
  <paths>``).  Otherwise the benchmark is rerun.
* dracut: :mod:`benchmarks.bench_dracut` (dracut with ``--xz`` inside it, as lorax, against
  ``--no-compress`` and compression on the host), as one measured run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import harness, inputs

#: What a squashfs result depends on.
SQUASHFS_PATHS = ("liveimg/squashfs", "benchmarks/squashfs.py", "benchmarks/pack_one.py", "benchmarks/inputs.py")
SQUASHFS_FULL = ["--inputs", "image", "--codecs", "xz-bcj,xz-bcj-exhaustive,zstd,lz4", "--threads", "1,2"]
SQUASHFS_QUICK = ["--inputs", "image", "--codecs", "lz4", "--threads", "2"]


def squashfs_results(results: Path = harness.RESULTS) -> list[Path]:
    """benchmarks/squashfs.py's own result files (they have ``cases``), newest first."""
    found = []
    for path in results.glob("squashfs-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "cases" in data and "benchmark" not in data:
            found.append((path.stat().st_mtime, path))
    return [p for _, p in sorted(found, reverse=True)]


def _case_commits(report: dict[str, Any]) -> set[str]:
    commits = {str(c["commit"]) for c in report.get("cases", []) if c.get("commit")}
    return commits or {str(report.get("commit", "unknown"))}


def is_fresh(report: dict[str, Any], repo: Path = harness.REPO, paths: tuple[str, ...] = SQUASHFS_PATHS) -> bool:
    """Whether every commit the results were measured at has the current squashfs code."""
    for commit in _case_commits(report):
        rc = subprocess.run(
            ["git", "-C", str(repo), "diff", "--quiet", commit, "HEAD", "--", *paths], check=False, capture_output=True
        ).returncode
        if rc != 0:  # 1: differs; 128: unknown commit
            return False
    return True


def private_inputs(private: Path, shared: Path = inputs.CACHE) -> Path:
    """A cache directory of benchmarks/squashfs.py's own, sharing the (big, read-only) inputs.

    benchmarks/squashfs.py writes its outputs into ``<cache>/out`` and removes it at the end:
    a private cache keeps two runs (another engineer's and this one) from deleting each
    other's outputs.  ``rootfs.img`` is hard-linked and ``tree`` symlinked from the shared
    cache when it has them; otherwise benchmarks/squashfs.py builds them here.
    """
    private.mkdir(parents=True, exist_ok=True)
    marker = shared / "inputs.json"
    if marker.exists() and (shared / "rootfs.img").exists() and not (private / "inputs.json").exists():
        (private / "rootfs.img").unlink(missing_ok=True)
        shutil.rmtree(private / "staged", ignore_errors=True)
        os.link(shared / "rootfs.img", private / "rootfs.img")
        if not (private / "tree").exists():
            (private / "tree").symlink_to(shared / "tree")
        shutil.copyfile(marker, private / "inputs.json")
    return private


def squashfs(*, quick: bool, work: Path, force: bool = False, extra: list[str] | None = None) -> dict[str, Any]:
    """The squashfs core against mksquashfs: reuse fresh results, else run benchmarks/squashfs.py."""
    if not quick and not force:
        for path in squashfs_results():
            report = json.loads(path.read_text())
            if is_fresh(report):
                print(f"squashfs: reusing {path.name} (fresh for {harness.git_commit()['short']})", flush=True)
                return {"source": str(path.relative_to(harness.REPO)), "rerun": False, "report": report}
            print(f"squashfs: {path.name} is stale (squashfs code changed since {_case_commits(report)})", flush=True)
            break
    if quick:
        work.mkdir(parents=True, exist_ok=True)
        out = work / "squashfs-quick.json"
        out.unlink(missing_ok=True)
    else:
        out = harness.RESULTS / f"squashfs-{harness.timestamp()}.json"
    argv = [
        sys.executable,
        "-m",
        "benchmarks.squashfs",
        *(extra or (SQUASHFS_QUICK if quick else SQUASHFS_FULL)),
        "--out",
        str(out),
    ]
    print("squashfs: " + " ".join(argv[1:]), flush=True)
    env = {**os.environ, "LIVEIMG_BENCH_DIR": str(private_inputs(work.parent / "squashfs-inputs"))}
    subprocess.run(argv, check=True, cwd=harness.REPO, env=env)
    report = json.loads(out.read_text())
    source = str(out.relative_to(harness.REPO)) if out.is_relative_to(harness.REPO) else str(out)
    return {"source": source, "rerun": True, "report": report}


def squashfs_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """liveimg and mksquashfs side by side per (input, codec, threads), with ratios."""
    index = {(c["input"], c["codec"], c["threads"], c["tool"]): c for c in report["cases"]}
    rows = []
    for (which, codec, threads, tool), ours in sorted(index.items(), key=lambda kv: str(kv[0])):
        ref = index.get((which, codec, threads, "mksquashfs"))
        if tool != "liveimg" or ref is None:
            continue
        rows.append(
            {
                "input": which,
                "codec": codec,
                "threads": threads,
                "mksquashfs": {k: ref[k] for k in ("wall", "cpu", "rss_mib", "size")},
                "liveimg": {k: ours[k] for k in ("wall", "cpu", "rss_mib", "size")},
                "wall_ratio": round(ours["wall"] / ref["wall"], 3),
                "cpu_ratio": round(ours["cpu"] / ref["cpu"], 3) if ref["cpu"] else None,
                "size_ratio": round(ours["size"] / ref["size"], 4),
                "load": [ref.get("loadavg_before"), ours.get("loadavg_after")],
            }
        )
    return rows


def dracut(*, quick: bool, nice: int, work: Path) -> dict[str, Any]:
    """benchmarks/bench_dracut.py as one measured run; its JSON plus the with/without-host-compression table."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "dracut.json"
    out.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "benchmarks.bench_dracut",
        "--sample",
        "atomic",
        "--work",
        str(work),
        "--json",
        str(out),
    ] + (["--codecs", "zstd"] if quick else [])
    print("dracut: " + " ".join(argv[1:]), flush=True)
    measured = harness.run_measured(
        argv, cwd=harness.REPO, nice=nice, log_path=work / "dracut.log", env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    if measured.returncode != 0:
        raise SystemExit(f"bench_dracut failed ({measured.returncode}); see {work / 'dracut.log'}")
    raw = json.loads(out.read_text())
    return {"measured": measured.summary(), "raw": raw, "rows": dracut_rows(raw)}


def dracut_rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Each way of making the initramfs: dracut's own time, compression time, total and size."""
    rows = []
    inside = raw.get("sandbox_dracut_xz")
    if inside:
        rows.append(
            {
                "way": "dracut --xz (lorax: compressed inside dracut)",
                "dracut": inside["seconds"],
                "compress": 0.0,
                "total": inside["seconds"],
                "bytes": inside["bytes"],
            }
        )
    plain = raw.get("sandbox_dracut_no_compress")
    if plain:
        rows.append(
            {
                "way": "dracut --no-compress (uncompressed)",
                "dracut": plain["seconds"],
                "compress": 0.0,
                "total": plain["seconds"],
                "bytes": plain["bytes"],
            }
        )
        for name, c in raw.get("host_compression", {}).items():
            rows.append(
                {
                    "way": f"dracut --no-compress + host {name}",
                    "dracut": plain["seconds"],
                    "compress": c["seconds"],
                    "total": plain["seconds"] + c["seconds"],
                    "bytes": c["bytes"],
                    "command": c.get("command"),
                }
            )
    nodebug = raw.get("sandbox_dracut_no_compress_no_debug")
    if nodebug:
        rows.append(
            {
                "way": "dracut --no-compress without --debug",
                "dracut": nodebug["seconds"],
                "compress": 0.0,
                "total": nodebug["seconds"],
                "bytes": nodebug["bytes"],
            }
        )
    return rows
