"""Rebuild after an update: ``liveimg build`` of the update sample, with an empty cache and a warm one.

The input is the ``atomic-update`` sample (scripts/sample_image.py): the ``atomic`` sample's
commit with an upgraded commit deployed on top as the default, a few MiB of files changed.
Each round measures two cases, in alternating order (:func:`harness.run_measured`: wall time,
CPU seconds of the command and its waited-for children, peak RSS of its process tree):

* ``cold``: ``liveimg build UPDATE -o OUT --cache EMPTY``, a cache directory that does not
  exist yet;
* ``warm``: ``liveimg build UPDATE -o OUT --cache C``, C a copy (``cp -a``, not measured) of
  the cache that ``liveimg build ATOMIC --cache PRIMED`` filled once before the rounds (measured,
  reported as ``prime``, not part of the comparison): every warm build starts from the same cache.

Both run with liveimg's default codecs (lorax's: xz + BCJ squashfs, xz initramfs; with
``--quick``, lz4 squashfs and zstd initramfs: an lz4 initramfs cannot be appended to) and the
same ``SOURCE_DATE_EPOCH``, as a throw-away unprivileged user
(:func:`tests.support.unprivileged_user`, as :mod:`benchmarks.e2e`) reading the samples through
hard links. The cold and warm OUTDIRs of a round must hold the same files with the same bytes
(``manifest.json`` aside: it records timings and the cache's own figures); a difference stops
the benchmark. Each case keeps the manifest's ``cache`` record: what the build found in and
added to the cache (``namespaces``: hits, misses, bytes reused and stored).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import e2e, harness
from liveimg import run as runner

if TYPE_CHECKING:
    from tests.support import UnprivilegedUser

WORK = Path(os.environ.get("LIVEIMG_BENCH_DIR", "/var/tmp/liveimg-bench")) / "rebuild"
CASES = ("cold", "warm")
#: The same clock for every build, so that the cold and warm outputs can be compared byte for byte.
SOURCE_DATE_EPOCH = "1700000000"
#: Written by each build beside its artifacts; its timings and cache figures differ by nature.
MANIFEST = "manifest.json"


def artifact_digests(outdir: Path) -> dict[str, str]:
    """sha256 of every regular file under ``outdir`` but the manifest, by path relative to it."""
    found = {}
    for path in sorted(outdir.rglob("*")):
        rel = path.relative_to(outdir).as_posix()
        if rel == MANIFEST or path.is_symlink() or not path.is_file():
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        found[rel] = digest.hexdigest()
    return found


def differences(cold: dict[str, str], warm: dict[str, str]) -> list[str]:
    """What differs between two :func:`artifact_digests` (empty when the outputs are the same)."""
    out = [f"{rel}: only in the cold build" for rel in sorted(cold.keys() - warm.keys())]
    out += [f"{rel}: only in the warm build" for rel in sorted(warm.keys() - cold.keys())]
    out += [f"{rel}: different bytes" for rel in sorted(cold.keys() & warm.keys()) if cold[rel] != warm[rel]]
    return out


def build(
    user: UnprivilegedUser, image: Path, out: Path, cache: Path, *, extra: list[str], nice: int, log: Path
) -> dict[str, Any]:
    """``liveimg build image -o out --cache cache`` as ``user``, measured; the run's figures and its manifest's."""

    work = user.home / f"work-{out.name}"
    argv = [sys.executable, "-m", "liveimg", "--progress", "json", "build", str(image), "-o", str(out),
            "--workdir", str(work), "--cache", str(cache), *extra]  # fmt: skip
    env = {**user.env(), "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    measured = harness.run_measured(user.command(argv), env=env, cwd=user.home, nice=nice, log_path=log)
    shutil.rmtree(work, ignore_errors=True)
    e2e.check_user_build(user, measured, out, log)
    manifest = json.loads((out / MANIFEST).read_text())
    return {
        **measured.summary(),
        "stages": manifest.get("stages"),
        # What each cache namespace reused and stored (the directory is the throw-away user's).
        "cache": (manifest.get("cache") or {}).get("namespaces"),
        "artifacts": {name: a["size"] for name, a in manifest["artifacts"].items()},
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per case: min, median and max of the wall time and the CPU seconds over the rounds."""
    out: dict[str, Any] = {}
    for case in (*CASES, "prime"):
        side = [r[case] for r in runs if case in r]
        if side:
            out[case] = {
                "wall": harness.stats([r["wall"] for r in side]),
                "cpu": harness.stats([r["rusage"]["cpu"] for r in side]),
                "tree_peak_mib": max(r["rss"]["tree_peak_mib"] for r in side),
            }
    if "cold" in out and "warm" in out:
        out["warm_over_cold"] = {
            key: harness.ratio(out["warm"][key]["median"], out["cold"][key]["median"]) for key in ("wall", "cpu")
        }
    return out


def _sample(variant: str) -> tuple[Path, dict[str, Any]]:
    image = e2e.sample_image(variant)
    return image, e2e.sample_meta(image)


def _describe(image: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": str(image),
        "variant": meta.get("variant"),
        "apparent_bytes": image.stat().st_size,
        "allocated_bytes": image.stat().st_blocks * 512,
        "kernel": meta.get("kernel_version"),
        "builder_key": meta.get("builder_key"),
    }


def run(*, rounds: int, quick: bool, nice: int, keep: bool = False) -> dict[str, Any]:
    from tests.support import unprivileged_user

    atomic, atomic_meta = _sample("atomic")
    update, update_meta = _sample("atomic-update")
    extra = ["--compression", "lz4", "--initramfs-compression", "zstd"] if quick else []
    changes = update_meta.get("update") or {}
    report: dict[str, Any] = {
        "images": {"atomic": _describe(atomic, atomic_meta), "update": _describe(update, update_meta)},
        "update": {k: v for k, v in changes.items() if k.endswith("_bytes")}
        | {k: len(v) for k, v in changes.items() if isinstance(v, list)},
        "liveimg_options": ["build", *extra, "--cache DIR"],
        "source_date_epoch": SOURCE_DATE_EPOCH,
        "nice": nice,
        "quick": quick,
        "rounds": [],
    }
    with harness.scratch_dir(WORK, keep=keep) as work, unprivileged_user(groups=e2e.kvm_groups()) as user:
        shared_atomic, shared_update = user.share(atomic), user.share(update)
        print(f"rebuild: liveimg runs as uid {user.uid}; warming its caches (liveimg doctor, inspect)", flush=True)
        user_report = e2e.describe_user(user, e2e.prepare_user(user, shared_update))
        report["liveimg_user"] = user_report
        report["accelerator"] = user_report["accelerator"]
        for image in (atomic, update):  # both cases read them: neither pays for the page cache alone
            with open(image, "rb") as f:
                while f.read(1 << 24):
                    pass
        primed = user.home / "cache-primed"
        print("rebuild: prime, the atomic sample built into an empty cache", flush=True)
        prime_out = user.home / "prime"
        report["prime"] = build(user, shared_atomic, prime_out, primed, extra=extra, nice=nice, log=work / "prime.log")
        shutil.rmtree(prime_out)
        for i in range(rounds):
            order = CASES if i % 2 == 0 else tuple(reversed(CASES))
            result: dict[str, Any] = {"round": i, "order": list(order)}
            for case in order:
                load = harness.loadavg()
                print(f"rebuild round {i + 1}/{rounds}: {case} (load {load[0]})", flush=True)
                cache = user.home / f"cache-{case}-{i}"
                if case == "warm":
                    runner.run(["cp", "-a", primed, cache])  # the user's files, kept theirs
                out = user.home / f"{case}-{i}"
                measured = build(user, shared_update, out, cache, extra=extra, nice=nice, log=work / f"{case}-{i}.log")
                measured["loadavg_before"], measured["loadavg_after"] = load, harness.loadavg()
                measured["digests"] = artifact_digests(out)
                result[case] = measured
                shutil.rmtree(cache, ignore_errors=True)
                print(f"  {case}: {measured['wall']:.1f} s, {measured['rusage']['cpu']:.1f} CPU s", flush=True)
            if diff := differences(result["cold"]["digests"], result["warm"]["digests"]):
                raise SystemExit(f"rebuild round {i + 1}: the cold and warm builds differ: {'; '.join(diff)}")
            result["identical"] = True
            for case in CASES:
                shutil.rmtree(user.home / f"{case}-{i}", ignore_errors=True)
            report["rounds"].append(result)
    report["summary"] = summarize([*report["rounds"], {"prime": report["prime"]}])
    return report
