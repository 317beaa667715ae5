"""End to end: ``liveimg build`` against lorax's way on the same sample, side by side in one run.

Each round runs both sides on the atomic sample (raw), one after the other (the order
alternates between rounds), each as a measured run (:func:`benchmarks.harness.run_measured`:
wall time, CPU, the peak RSS of its whole process tree):

* liveimg: ``python -m liveimg --progress json --debug build IMAGE -o OUT`` with its
  defaults (xz + BCJ squashfs, xz initramfs: lorax's codecs), run by a throw-away
  unprivileged user (:func:`tests.support.unprivileged_user`: a uid with no name, no
  capability and none to gain, in /dev/kvm's group when it has one, as the README advises
  for speed) from a hard link to the image; the outputs must be the user's and no process
  of it may be left;
* lorax: ``benchmarks/lorax_way.py IMAGE -o OUT``, as root, with loop devices, mounts,
  ``cp -a``, ``fsck.ext4 -E discard``, ``mksquashfs -comp xz -Xbcj x86`` and dracut in a
  chroot with lorax's arguments.

Before the rounds, the user runs ``liveimg doctor`` and ``liveimg inspect IMAGE``
(unmeasured): its first libguestfs launch builds its appliance cache and its accelerator
probe is cached, as they are for root, whose caches are warm from earlier runs.

Both are mapped onto the same stage names (:data:`STAGES`): ``guest`` (finding the
partitions: liveimg's appliance launch and inspection; lorax's mount-and-probe loop),
``rootfs``, ``squashfs``, ``dracut`` (with the initramfs compression), ``other`` (the rest of
the wall time: setup, kernel copy, PXE files, hashing) and ``total`` (the wall time).

The TCG handicap: here liveimg's appliance runs under TCG (KVM guests hang on this machine).
The stages that touch it are ``guest`` (launch, inspection) and part of ``rootfs`` (reading
the boot partition's files).  They are re-timed natively (:func:`host_equivalents`: the same
liveimg inspection logic over read-only loop mounts, and liveimg's partition method with the
boot files read from a mount) and combined with libguestfs's own figure for a KVM appliance
launch to estimate what liveimg would take with KVM.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import harness

if TYPE_CHECKING:
    from tests.support import UnprivilegedUser

STAGES = ("guest", "rootfs", "squashfs", "dracut", "other", "total")

#: liveimg's progress stages -> common stage names.
LIVEIMG_STAGES = {
    "appliance": "guest",
    "guest": "guest",
    "rootfs": "rootfs",
    "squashfs": "squashfs",
    "dracut": "dracut",
    "compress initramfs": "dracut",
    "pxe": "other",
}
#: lorax_way.py's steps -> common stage names.
LORAX_STEPS = {
    "find partitions": "guest",
    "estimate size": "rootfs",
    "mkfs + cp -a": "rootfs",
    "fsck -E discard": "rootfs",
    "mksquashfs": "squashfs",
    "dracut": "dracut",
}
#: guestfs-performance(1): "You should expect to be getting times under 6 seconds" for
#: ``guestfish -a /dev/null run`` (an appliance launch) on an unloaded machine with KVM.
KVM_LAUNCH_SECONDS = 6.0

WORK = Path(os.environ.get("LIVEIMG_BENCH_DIR", "/var/tmp/liveimg-bench")) / "e2e"


def sample_image(variant: str = "atomic") -> Path:
    """The cached sample disk (built on first use by scripts/make-sample-image)."""
    script = harness.REPO / "scripts" / "make-sample-image"
    out = subprocess.run(
        [sys.executable, script, "--variant", variant, "--format", "raw"], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def sample_meta(image: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(image.with_name(image.name + ".json").read_text())
    return meta


# --- liveimg ------------------------------------------------------------------------------------


def parse_progress(lines: list[harness.Line]) -> list[dict[str, Any]]:
    """liveimg's ``--progress json`` begin/end events -> one record per stage run, in order."""
    open_stages: dict[str, float] = {}
    runs: list[dict[str, Any]] = []
    for line in lines:
        if not line.text.startswith("{"):
            continue
        try:
            event = json.loads(line.text)
        except ValueError:
            continue
        if not isinstance(event, dict) or "event" not in event:
            continue
        if event["event"] == "begin":
            open_stages[event["stage"]] = line.t
        elif event["event"] == "end":
            begin = open_stages.pop(event["stage"], line.t - float(event["seconds"]))
            runs.append(
                {
                    "stage": event["stage"],
                    "begin": round(begin, 2),
                    "end": line.t,
                    "seconds": round(float(event["seconds"]), 2),
                    "failed": event.get("message") == "failed",
                }
            )
    return runs


def stage_windows(begins: list[tuple[str, float]], wall: float) -> dict[str, tuple[float, float]]:
    """Each stage's time window: from its first step's start to the start of the next stage's first step."""
    firsts: list[tuple[str, float]] = []
    for name, t in begins:
        if name != "other" and name not in (n for n, _ in firsts):
            firsts.append((name, t))
    firsts.sort(key=lambda nt: nt[1])
    return {name: (t, firsts[i + 1][1] if i + 1 < len(firsts) else wall) for i, (name, t) in enumerate(firsts)}


def stage_intervals(runs: list[dict[str, Any]], mapping: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Each common stage's time window from its own steps' begin and end times (``other`` left out).

    Unlike :func:`stage_windows`, a window ends where its stage ended, so stages that run beside
    each other (liveimg's dracut job beside its squashfs stage) get overlapping windows.
    """
    out: dict[str, tuple[float, float]] = {}
    for r in runs:
        name = mapping.get(r["stage"], "other")
        if name == "other":
            continue
        begin, end = out.get(name, (r["begin"], r["end"]))
        out[name] = (min(begin, r["begin"]), max(end, r["end"]))
    return out


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for begin, end in sorted(spans):
        if out and begin <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((begin, end))
    return out


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(end - begin for begin, end in spans)


def wall_clock_stages(runs: list[dict[str, Any]], mapping: dict[str, str], wall: float) -> dict[str, Any]:
    """Every second of the wall time given to one stage, and what each stage ran beside another.

    ``stages``: while several stages run at once, the second goes to the one that began first
    (liveimg's squashfs stage, not the dracut job it started beside it); seconds in no stage are
    ``other``; the values add up to ``total`` (the wall time).  ``beside``: per stage, the
    seconds during which some other stage ran too (0 for stages that ran alone).
    """
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        name = mapping.get(r["stage"], "other")
        if name != "other":
            spans.setdefault(name, []).append((r["begin"], r["end"]))
    merged = {name: _merged(v) for name, v in spans.items()}
    first = {name: v[0][0] for name, v in merged.items()}
    out = dict.fromkeys(STAGES, 0.0)
    beside = dict.fromkeys(merged, 0.0)
    cuts = sorted({0.0, wall, *(t for v in merged.values() for span in v for t in span)})
    for begin, end in itertools.pairwise(cuts):
        mid = (begin + end) / 2
        running = [name for name, v in merged.items() if any(b <= mid < e for b, e in v)]
        if not running:
            out["other"] += end - begin
            continue
        out[min(running, key=lambda n: first[n])] += end - begin
        if len(running) > 1:
            for name in running:
                beside[name] += end - begin
    out["total"] = wall
    return {"stages": {k: round(v, 2) for k, v in out.items()}, "beside": {k: round(v, 2) for k, v in beside.items()}}


def map_stages(parts: dict[str, float], mapping: dict[str, str], wall: float) -> dict[str, float]:
    """Sum the tool's own steps into :data:`STAGES`; ``other`` is the wall time not in any step."""
    out = dict.fromkeys(STAGES, 0.0)
    for name, seconds in parts.items():
        out[mapping.get(name, "other")] += seconds
    out["other"] += max(0.0, wall - sum(parts.values()))
    out["total"] = wall
    return {k: round(v, 2) for k, v in out.items()}


def _command_seconds(lines: list[harness.Line], begin: float, end: float) -> float:
    """Seconds of the host programs liveimg ran (run.py's debug log) that ended in [begin, end]."""
    total = 0.0
    for line in lines:
        if begin <= line.t <= end and " exited " in line.text and " after " in line.text:
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.text.rsplit(" after ", 1)[1].split()[0])
    return total


def kvm_groups(device: str = "/dev/kvm") -> tuple[int, ...]:
    """The group that may use ``device`` (read and write), if any: what a user is given for KVM."""
    try:
        st = os.stat(device)
    except FileNotFoundError:
        return ()
    rw = stat.S_IRGRP | stat.S_IWGRP
    return (st.st_gid,) if st.st_gid != 0 and st.st_mode & rw == rw else ()


def describe_user(user: UnprivilegedUser, doctor: dict[str, Any]) -> dict[str, Any]:
    """What the result records about the user that ran liveimg."""
    import grp

    names = []
    for gid in user.groups:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return {
        "uid": user.uid,
        "groups": names,
        "capabilities": "none (setpriv --inh-caps=-all --bounding-set=-all --no-new-privs)",
        "accelerator": {"accel": doctor["accel"]["choice"], "reason": doctor["accel"]["reason"]},
    }


def prepare_user(user: UnprivilegedUser, image: Path) -> dict[str, Any]:
    """Warm the user's caches as root's are (appliance, accelerator choice); return ``liveimg doctor``'s report."""
    doctor = user.liveimg("doctor", "--json", timeout=600)
    if doctor.returncode != 0:
        raise SystemExit(f"liveimg doctor failed for uid {user.uid}:\n{doctor.stdout}{doctor.stderr[-2000:]}")
    warm = user.liveimg("inspect", image, timeout=1800)
    if warm.returncode != 0:
        raise SystemExit(f"liveimg inspect failed for uid {user.uid}:\n{warm.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(doctor.stdout)
    return report


def run_liveimg(
    image: Path, out: Path, work: Path, *, extra: list[str], nice: int, log: Path, user: UnprivilegedUser
) -> dict[str, Any]:
    """``liveimg build`` of ``image`` into ``out`` as ``user``, measured (``out`` and ``work`` in the user's HOME)."""

    argv = [
        sys.executable,
        "-m",
        "liveimg",
        "--progress",
        "json",
        "--debug",
        "build",
        str(image),
        "-o",
        str(out),
        "--workdir",
        str(work),
        *extra,
    ]
    measured = harness.run_measured(
        user.command(argv), env=user.env(), cwd=user.home, nice=nice, log_path=log, keep_series=True
    )
    check_user_build(user, measured, out, log)
    runs = parse_progress(measured.stdout)
    steps: dict[str, float] = {}
    for r in runs:
        steps[r["stage"]] = round(steps.get(r["stage"], 0.0) + r["seconds"], 2)
    manifest = json.loads((out / "manifest.json").read_text())
    # The manifest's stage timings cover each stage whole (the dracut stage's clean-up and the
    # kernel copy included); the appliance launch is only in the progress events.
    parts = {"appliance": steps.get("appliance", 0.0), **manifest.get("stages", {})}
    # The dracut job runs beside the squashfs stage: each stage's RSS window is its own span.
    windows = stage_intervals(runs, LIVEIMG_STAGES)
    clock = wall_clock_stages(runs, LIVEIMG_STAGES, measured.wall)
    rootfs_run = next((r for r in runs if r["stage"] == "rootfs"), None)
    host_in_rootfs = _command_seconds(measured.stderr, rootfs_run["begin"], rootfs_run["end"]) if rootfs_run else 0.0
    return {
        **measured.summary(),
        "stages": map_stages(parts, LIVEIMG_STAGES, measured.wall),
        "wall_clock_stages": clock["stages"],
        "beside": clock["beside"],
        # No appliance launch: liveimg read the image natively, no QEMU ran for it.
        "appliance_used": steps.get("appliance", 0.0) > 0,
        "steps": steps,
        "timeline": runs,
        "rss_by_stage": {k: measured.rss.peak_between(*w) for k, w in windows.items()},
        "rootfs_host_commands_seconds": round(host_in_rootfs, 2),
        "manifest_stages": manifest.get("stages"),
        "artifacts": {name: a["size"] for name, a in manifest["artifacts"].items()},
        "rootfs": manifest.get("rootfs"),
        "squashfs_options": manifest.get("squashfs"),
        "initramfs": {k: manifest["initramfs"].get(k) for k in ("compression", "built_in", "left_out")},
    }


def check_user_build(user: UnprivilegedUser, measured: harness.Measured, out: Path, log: Path) -> None:
    """Stop the benchmark unless ``user``'s build succeeded, wrote only ``user``'s files into
    ``out`` and left no process behind."""
    from tests.support import owners

    if measured.returncode != 0:
        tail = "\n".join(line.text for line in measured.stderr[-20:])
        raise SystemExit(f"liveimg build failed ({measured.returncode}); see {log}\n{tail}")
    if owners(out) != {user.uid}:
        raise SystemExit(f"liveimg build as uid {user.uid} wrote files of uids {sorted(owners(out))} into {out}")
    if left := user.wait_for_no_processes():
        raise SystemExit(f"liveimg build as uid {user.uid} left processes behind: {left}")


# --- lorax --------------------------------------------------------------------------------------


def last_json_object(text: str) -> dict[str, Any]:
    """The last top-level JSON object printed (lorax_way.py prints its result last, after the tools' output)."""
    decoder = json.JSONDecoder()
    starts = [i for i in range(len(text)) if text[i] == "{" and (i == 0 or text[i - 1] == "\n")]
    for i in reversed(starts):
        try:
            value, _ = decoder.raw_decode(text, i)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object in the output")


def run_lorax(image: Path, out: Path, *, extra: list[str], nice: int, log: Path) -> dict[str, Any]:
    argv = [sys.executable, str(harness.HERE / "lorax_way.py"), str(image), "-o", str(out), *extra]
    measured = harness.run_measured(argv, cwd=harness.REPO, nice=nice, log_path=log, keep_series=True)
    if measured.returncode != 0:
        tail = "\n".join(line.text for line in measured.stderr[-20:])
        raise SystemExit(f"lorax_way.py failed ({measured.returncode}); see {log}\n{tail}")
    result = last_json_object("\n".join(line.text for line in measured.stdout))
    steps: dict[str, float] = result["steps"]
    # Stage windows from lorax_way's "lorax-way: <step> ..." lines on stderr.
    marks = [
        (LORAX_STEPS.get(line.text.removeprefix("lorax-way: ").removesuffix(" ..."), "other"), line.t)
        for line in measured.stderr
        if line.text.startswith("lorax-way: ") and line.text.endswith(" ...")
    ]
    windows = stage_windows(marks, measured.wall)
    return {
        **measured.summary(),
        "stages": map_stages(steps, LORAX_STEPS, measured.wall),
        "steps": steps,
        "rss_by_stage": {k: measured.rss.peak_between(*w) for k, w in windows.items()},
        "artifacts": result.get("artifacts", {}),
        "rootfs_size": result.get("rootfs_size"),
        "left_out": result.get("left_out"),
        "reported_peak_rss_mib": result.get("peak_rss_mib"),
    }


# --- the TCG handicap ---------------------------------------------------------------------------


@contextlib.contextmanager
def _ro_partition(image: Path, offset: int, size: int, where: Path) -> Iterator[Path]:
    dev = subprocess.run(
        ["losetup", "--find", "--show", "-r", "-o", str(offset), "--sizelimit", str(size), str(image)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "ro", dev, str(where)], check=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=False)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def host_equivalents(image: Path, meta: dict[str, Any], work: Path) -> dict[str, Any]:
    """The appliance-bound steps of liveimg's guest and rootfs stages, timed natively on the host.

    guest: the partition table (``sfdisk --json``), then each partition mounted read-only
    through a loop device and probed with liveimg's own logic (``liveimg.imageinfo.probe_tree``,
    ``describe_root`` over a ``HostFS`` view), as the appliance does through libguestfs.
    rootfs: liveimg's partition method (``liveimg.rootfs.from_partition``) with the boot
    partition's files read from its mount instead of through the appliance.
    """
    from liveimg.fsview import GuestTree, HostFS, MergedFS
    from liveimg.imageinfo import describe_root, probe_tree
    from liveimg.rootfs import RootfsOptions, from_partition
    from liveimg.tree import HostTree

    parts = {p["name"]: p for p in meta["partitions"]}
    root, boot = parts["root"], parts.get("boot")
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True)
        mounts: dict[str, Path] = {}
        for p in meta["partitions"]:
            if p["name"] == "biosboot":
                continue
            mnt = stack.enter_context(_ro_partition(image, p["offset"], p["size"], work / f"mnt-{p['name']}"))
            probe_tree(GuestTree(HostFS(mnt)))
            mounts[p["name"]] = mnt
        fs = {"/": HostFS(mounts["root"])} | ({"/boot": HostFS(mounts["boot"])} if boot else {})
        desc = describe_root(GuestTree(MergedFS(fs)), image=str(image), boot_separate=boot is not None)
        out["guest_seconds"] = round(time.monotonic() - started, 2)
        out["kernel"] = desc.kernel.version
        started = time.monotonic()
        dest = work / "rootfs.img"
        result = from_partition(
            image=image,
            image_format="raw",
            offset=root["offset"],
            length=root["size"],
            boot=HostTree(mounts["boot"]) if boot else None,
            boot_limit=boot["size"] if boot else None,
            dest=dest,
            options=RootfsOptions(),
            workdir=work,
            what="root",
        )
        out["rootfs_seconds"] = round(time.monotonic() - started, 2)
        out["rootfs_size"] = result.size
        dest.unlink()
    out["kvm_launch_seconds"] = KVM_LAUNCH_SECONDS
    out["kvm_launch_source"] = "guestfs-performance(1): an appliance launch under 6 s on an unloaded KVM host"
    return out


def tcg_handicap(liveimg_run: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    """Per stage: the measured time, the part spent in the TCG appliance, and an estimate with KVM.

    When liveimg read the image without its appliance, nothing ran under TCG: ``appliance_used``
    is False and there is no estimate (the build is what it would be with KVM).
    """
    steps = liveimg_run["steps"]
    if not liveimg_run.get("appliance_used", steps.get("appliance", 0.0) > 0):
        return {"appliance_used": False, "host_equivalents": host}
    stages = liveimg_run["stages"]
    launch = steps.get("appliance", 0.0)
    inspect = steps.get("guest", 0.0)
    guest_kvm = min(stages["guest"], host["kvm_launch_seconds"] + host["guest_seconds"])
    rootfs_kvm = min(stages["rootfs"], host["rootfs_seconds"])
    est = dict(stages)
    est["guest"] = round(guest_kvm, 2)
    est["rootfs"] = round(rootfs_kvm, 2)
    est["total"] = round(stages["total"] - (stages["guest"] - guest_kvm) - (stages["rootfs"] - rootfs_kvm), 2)
    return {
        "appliance_used": True,
        "appliance_launch": launch,
        "inspection": inspect,
        "rootfs_in_appliance": round(max(0.0, stages["rootfs"] - host["rootfs_seconds"]), 2),
        "under_tcg": {"guest": stages["guest"], "rootfs": round(stages["rootfs"] - rootfs_kvm, 2)},
        "kvm_estimate": est,
        "host_equivalents": host,
    }


# --- the benchmark ------------------------------------------------------------------------------


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["wall"])
    return ordered[(len(ordered) - 1) // 2]


def clock_of(result: dict[str, Any]) -> dict[str, Any] | None:
    """A liveimg round's :func:`wall_clock_stages`: recorded, or made from its timeline (results
    written before it was recorded); None for a round without a timeline (lorax's way)."""
    if "wall_clock_stages" in result:
        return {"stages": result["wall_clock_stages"], "beside": result.get("beside", {})}
    if "timeline" in result:
        return wall_clock_stages(result["timeline"], LIVEIMG_STAGES, result["wall"])
    return None


def _clock_summary(side: list[dict[str, Any]]) -> dict[str, Any]:
    clocks = [c for c in map(clock_of, side) if c is not None]
    if not clocks or len(clocks) != len(side):
        return {}
    return {
        "wall_clock_stages": {s: harness.stats([c["stages"][s] for c in clocks]) for s in STAGES},
        "beside": {
            s: harness.stats([c["beside"].get(s, 0.0) for c in clocks])
            for s in sorted({s for c in clocks for s in c["beside"]})
        },
    }


def summarize(side: list[dict[str, Any]]) -> dict[str, Any]:
    """min and median over the rounds, per stage, and the peaks."""
    return {
        "stages": {s: harness.stats([r["stages"][s] for r in side]) for s in STAGES},
        **_clock_summary(side),
        "rss": {
            "tree_peak_mib": max(r["rss"]["tree_peak_mib"] for r in side),
            "groups": {
                g: max(r["rss"]["groups"].get(g, 0.0) for r in side)
                for g in sorted({g for r in side for g in r["rss"]["groups"]})
            },
            "single_peak_mib": max(r["rss"]["single_peak_mib"] for r in side),
            "rusage_maxrss_mib": max(r["rusage"]["maxrss_mib"] for r in side),
        },
        "cpu": harness.stats([r["rusage"]["cpu"] for r in side]),
    }


def run(*, rounds: int, quick: bool, nice: int, keep: bool = False) -> dict[str, Any]:
    from tests.support import unprivileged_user

    image = sample_image("atomic")
    meta = sample_meta(image)
    # Every round a cold build, as lorax's way always is: no blocks or initramfs from an earlier round.
    liveimg_extra = ["--no-cache"]
    if quick:
        liveimg_extra += ["--compression", "lz4", "--initramfs-compression", "zstd"]
    lorax_extra = ["--compression", "lz4", "--dracut-compress", "lz4"] if quick else []
    report: dict[str, Any] = {
        "image": {
            "path": str(image),
            "apparent_bytes": image.stat().st_size,
            "allocated_bytes": image.stat().st_blocks * 512,
            "variant": "atomic",
            "kernel": meta.get("kernel_version"),
        },
        "liveimg_options": ["build", *liveimg_extra],
        "lorax_options": lorax_extra,
        "nice": nice,
        "quick": quick,
        "liveimg": [],
        "lorax": [],
    }
    with harness.scratch_dir(WORK, keep=keep) as work, unprivileged_user(groups=kvm_groups()) as user:
        shared = user.share(image)
        print(f"e2e: liveimg runs as uid {user.uid}; warming its caches (liveimg doctor, inspect)", flush=True)
        user_report = describe_user(user, prepare_user(user, shared))
        report["liveimg_user"] = user_report
        report["accelerator"] = user_report["accelerator"]
        # Both sides read the same image: warm the page cache first so that neither pays for it alone.
        with open(image, "rb") as f:
            while f.read(1 << 24):
                pass
        for i in range(rounds):
            order = ("liveimg", "lorax") if i % 2 == 0 else ("lorax", "liveimg")
            for side in order:
                load = harness.loadavg()
                print(f"e2e round {i + 1}/{rounds}: {side} (load {load[0]})", flush=True)
                out = work / f"{side}-out-{i}"
                log = work / f"{side}-{i}.log"
                if side == "liveimg":
                    out = user.home / f"liveimg-out-{i}"
                    scratch = user.home / f"liveimg-work-{i}"
                    result = run_liveimg(shared, out, scratch, extra=liveimg_extra, nice=nice, log=log, user=user)
                    shutil.rmtree(scratch, ignore_errors=True)
                else:
                    result = run_lorax(image, out, extra=lorax_extra, nice=nice, log=log)
                result["loadavg_before"], result["loadavg_after"] = load, harness.loadavg()
                result["round"] = i
                report[side].append(result)
                print(f"  {side}: {json.dumps(result['stages'])}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
        print("e2e: the appliance-bound steps, natively on the host", flush=True)
        host = host_equivalents(image, meta, work / "host")
    report["summary"] = {side: summarize(report[side]) for side in ("liveimg", "lorax")}
    report["tcg"] = tcg_handicap(median_run(report["liveimg"]), host)
    return report
