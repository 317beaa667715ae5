"""The dracut stage and the rootfs stage at two commits, side by side in one run.

    python -m benchmarks.commits --base 2447862 [--head HEAD] [--rounds 3] [--nice 0]

For a change that may cost time everywhere (the sandbox around every tool that reads guest
bytes, for example), this answers "how much slower than before?" at equal work: each commit is
checked out in a temporary git worktree, and :mod:`benchmarks.bench_dracut` -- the rootfs stage's
partition method on the cached atomic sample, the deployment copied out of it, then the image's
dracut in liveimg's sandbox with lorax's ``--xz`` and with ``--no-compress`` -- runs at each,
alternating which goes first every round (A B, B A, ...), so that a drift of the machine's load
falls on both.  Each side runs its own code, its own benchmark script and its own sandbox; the
sample disk is the same file.  The medians, per-round figures and their ratios go to
``results/commits-<timestamp>.json`` (and ``results/commits.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks import harness

#: The figures compared, as (name, how to read it from bench_dracut's JSON).
MEASURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rootfs stage", ("rootfs_seconds",)),
    ("deployment copied out", ("extract_seconds",)),
    ("dracut --xz (lorax's)", ("sandbox_dracut_xz", "seconds")),
    ("dracut --no-compress (liveimg's)", ("sandbox_dracut_no_compress", "seconds")),
)


def _resolve(rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(harness.REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _read(data: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = data
    for key in path:
        value = value[key]
    return float(value)


def run_side(tree: Path, scratch: Path, nice: int) -> dict[str, Any]:
    """bench_dracut as the checkout ``tree`` has it, with that checkout's liveimg."""
    out = scratch / "result.json"
    argv = [sys.executable, "-m", "benchmarks.bench_dracut", "--sample", "atomic", "--codecs", "zstd:3",
            "--work", str(scratch), "--json", str(out)]  # fmt: skip
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_dracut failed in {tree}:\n{done.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commits", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit before the change")
    parser.add_argument("--head", default="HEAD", help="the commit after it (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args(argv)
    commits = {"base": _resolve(args.base), "head": _resolve(args.head)}
    record: dict[str, Any] = harness.provenance("commits")
    record["command"] = shlex.join(["python", "-m", "benchmarks.commits", *(sys.argv[1:] if argv is None else argv)])
    record["commits"] = commits
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="liveimg-commits-", dir="/var/tmp") as tmp:
        trees = {side: Path(tmp) / side for side in commits}
        try:
            for side, commit in commits.items():
                subprocess.run(["git", "-C", str(harness.REPO), "worktree", "add", "--detach", "--quiet",
                                str(trees[side]), commit], check=True)  # fmt: skip
            for index in range(args.rounds):
                order = ("base", "head") if index % 2 == 0 else ("head", "base")
                figures: dict[str, dict[str, float]] = {}
                for side in order:
                    scratch = Path(tmp) / f"scratch-{side}"
                    scratch.mkdir(exist_ok=True)
                    data = run_side(trees[side], scratch, args.nice)
                    figures[side] = {name: _read(data, path) for name, path in MEASURES}
                    print(f"round {index + 1} {side}: " + ", ".join(f"{k} {v:.2f} s" for k, v in figures[side].items()))
                rounds.append(figures)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(harness.REPO), "worktree", "remove", "--force", str(tree)],
                               check=False, capture_output=True)  # fmt: skip
    summary = {}
    for name, _ in MEASURES:
        base = median(r["base"][name] for r in rounds)
        head = median(r["head"][name] for r in rounds)
        summary[name] = {"base": round(base, 3), "head": round(head, 3), "ratio": round(harness.ratio(head, base), 3)}
        print(f"{name:34} base {base:7.2f} s  head {head:7.2f} s  head/base {summary[name]['ratio']}")
    record["rounds"] = rounds
    record["median"] = summary
    record["loadavg_after"] = harness.loadavg()
    print(f"wrote {harness.save('commits', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
