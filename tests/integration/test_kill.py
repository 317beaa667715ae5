"""Real builds killed at random points in every stage: OUTDIR byte-identical, nothing left, no process left.

Twelve builds of the classic sample over an existing OUTDIR (``--force``) are stopped with
SIGINT, SIGTERM or SIGKILL at a seeded random point of a chosen stage -- the appliance's
start, the guest's inspection, rootfs, squashfs (with the image's own dracut running beside it
in the sandbox), dracut (finishing, and the compression), and pxe/manifest/commit -- found
through ``--progress json``.
After each: the exit status is 130, 143 or -9 and stderr the one line that says so; OUTDIR
is byte for byte the old one (or, if the signal came after the swap, the complete new
build); nothing is left beside it (after a SIGKILL: once the next build has run, which
says on one line that it removed the dead build's staging); and no process of the build
runs any more -- every descendant it had when the signal was sent (its tools, the dracut
sandbox, the appliance's QEMU and libguestfs's recovery process), and anything that names
the test's directory.

The classic sample with an lz4 squashfs and a zstd -1 initramfs is the fastest real build
that goes through every stage.  ``LIVEIMG_KILL_SEED`` picks another plan.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from liveimg.errors import Cancelled
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from liveimg.progress import Event, Progress
from tests.integration.running_build import RunningBuild, Seen, descendants, still_running, tree_digest
from tests.samples import sample_image
from tests.support import need, need_root

SEED = int(os.environ.get("LIVEIMG_KILL_SEED", "16"))
#: The windows the kills aim at, in order, each from the progress event that opens it to the one
#: that opens the next: "squashfs" is the pack stage, with the image's dracut running beside it
#: in the background; "dracut" is what follows the pack until "pxe" begins (dracut finishing, the
#: compression, the kernel's copy); "pxe" runs until the end (the manifest, the swap).
WINDOWS = {
    "appliance": ("begin", "appliance"),
    "guest": ("begin", "guest"),
    "rootfs": ("begin", "rootfs"),
    "squashfs": ("begin", "squashfs"),
    "dracut": ("end", "squashfs"),
    "pxe": ("begin", "pxe"),
}
STAGES = tuple(WINDOWS)
#: Builds killed in each window.
KILLS = {"appliance": 4, "guest": 1, "rootfs": 2, "squashfs": 2, "dracut": 2, "pxe": 1}
#: Seconds: the pxe stage's window, from its begin to the swap (hashing the artifacts for the
#: manifest takes most of it), is not measured; the other stages' windows are, by the first build.
PXE_WINDOW = 0.3
#: ``--inspect appliance``: the appliance (its launch, its QEMU) is what some kills must hit;
#: ``--no-cache``: dracut runs in every build (no initramfs from the build before).
OPTIONS = (
    "--compression",
    "lz4",
    "--initramfs-compression",
    "zstd",
    "--initramfs-level",
    "1",
    "--inspect",
    "appliance",
    "--no-cache",
)
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


def window_of(seen: Seen, current: str | None) -> str | None:
    """The window open after ``seen``, when ``current`` was open before it (windows only move on)."""
    marker = (seen.event.get("event"), seen.event.get("stage"))
    for window, opens in WINDOWS.items():
        if opens == marker and (current is None or STAGES.index(window) > STAGES.index(current)):
            return window
    return current


def plan(rng: random.Random) -> list[tuple[str, signal.Signals]]:
    """Which stage and which signal, build after build.

    The three signals take turns through the stages (a stage killed twice or more sees two of
    them); the first build is the one killed in pxe (it measures the other stages on its way),
    the order of the others is shuffled, and the last is not killed by SIGKILL (whose leftovers
    the next build must remove).
    """
    turns = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    start = rng.randrange(len(turns))
    kills = [stage for stage in STAGES for _ in range(KILLS[stage])]
    pairs = [(stage, turns[(start + i) % len(turns)]) for i, stage in enumerate(kills)]
    first = pairs.pop(kills.index("pxe"))
    rng.shuffle(pairs)
    if pairs[-1][1] is signal.SIGKILL:
        other = next(i for i, (_, sig) in enumerate(pairs) if sig is not signal.SIGKILL)
        pairs[other], pairs[-1] = pairs[-1], pairs[other]
    return [first, *pairs]


def measure(build: RunningBuild, windows: dict[str, float]) -> None:
    """Each window's length, from the event that opens it to the one that opens the next."""
    opened: dict[str, float] = {}
    current: str | None = None
    for seen in build.seen:
        current = window_of(seen, current)
        if current is not None:
            opened.setdefault(current, seen.at)
    for window, following in itertools.pairwise(STAGES):
        if window in opened and following in opened:
            windows[window] = opened[following] - opened[window]


def kill_in(
    build: RunningBuild, window: str, sig: signal.Signals, delay: float
) -> tuple[str | None, set[tuple[int, int]]]:
    """Send ``sig`` ``delay`` s into ``window`` (at its end if it is shorter).

    Returns the window it hit (None if the build had ended) and the build's processes then.
    """
    current: str | None = None
    while current != window and not build.ended:
        seen = build.next_event(600)
        if seen is not None:
            current = window_of(seen, current)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and not build.ended:
        seen = build.next_event(deadline - time.monotonic())
        if seen is not None and window_of(seen, current) != current:
            current = window_of(seen, current)
            break  # the window closed first: kill at its end
    processes = descendants(build.proc.pid)
    if build.proc.poll() is not None:
        return None, processes
    build.proc.send_signal(sig)
    return current, processes


def check_new_outdir(out: Path) -> None:
    """A complete build: every artifact the manifest lists, with its checksum."""
    manifest = json.loads((out / "manifest.json").read_text())
    for name, artifact in manifest["artifacts"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == artifact["sha256"], name


def test_builds_killed_in_every_stage_leave_outdir_and_the_machine_as_they_were(tmp_path: Path) -> None:
    need_root()
    need("debugfs", "e2fsck", "resize2fs", "unshare", "zstd")
    image = sample_image("classic")
    parent = tmp_path / "pxe"
    out = parent / "out"
    (out / "pxelinux.cfg").mkdir(parents=True)
    (out / "live-rootfs.squashfs.img").write_bytes(os.urandom(1 << 20))
    (out / "pxelinux.cfg" / "default").write_text("the old build\n")
    (out / "latest").symlink_to("live-rootfs.squashfs.img")
    reference = tree_digest(out)
    # The build's temporary directories, to see what it leaves there: TMPDIR, and libguestfs's sockets
    # (its appliance stays cached where it was: its cache directory would follow TMPDIR).
    cache = os.environ.get("LIBGUESTFS_CACHEDIR") or os.environ.get("TMPDIR") or "/var/tmp"
    env = {"TMPDIR": str(tmp_path / "tmp"), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "LIBGUESTFS_CACHEDIR": cache}
    (tmp_path / "tmp").mkdir()
    (tmp_path / "run").mkdir()
    rng = random.Random(SEED)
    windows: dict[str, float] = {}
    dead: RunningBuild | None = None  # the last build killed by SIGKILL, whose leftovers the next one removes
    report = [f"seed {SEED}"]
    hit: list[str | None] = []
    for number, (stage, sig) in enumerate(plan(rng)):
        build = RunningBuild("build", str(image), "-o", str(out), "--force", *OPTIONS, env=env)
        try:
            delay = rng.uniform(0.05, 0.9) * windows.get(stage, PXE_WINDOW)
            landed, processes = kill_in(build, stage, sig, delay)
            status = build.finish(180)
        finally:
            if build.proc.poll() is None:
                build.kill_all()
        measure(build, windows)
        if number == 0:  # the build killed in pxe ran every stage: dracut ran beside the pack stage
            order = [(seen.event.get("event"), seen.event.get("stage")) for seen in build.seen]
            assert order.index(("begin", "dracut")) < order.index(("end", "squashfs")), order
        hit.append(landed)
        what = f"#{number} {sig.name} {delay:.1f} s into {stage} (hit {landed}): exit {status}"
        report.append(what)
        lines = build.stderr_lines()
        if dead is not None:  # the build before was killed by SIGKILL: this one found its staging
            assert lines[:1] == [
                f"removed {parent / '.out.liveimg'}, left by a liveimg build (pid {dead.proc.pid}) that did not finish"
            ], (what, lines)
            lines = lines[1:]
        if tree_digest(out) != reference:  # the signal came after the swap: the new build is whole
            assert stage == "pxe" and status in (0, EXIT[sig]), (what, lines)
            check_new_outdir(out)
            reference = tree_digest(out)
        else:
            assert status == EXIT[sig], (what, build.stderr())
            expected = [] if sig is signal.SIGKILL else [f"liveimg: interrupted by {sig.name}: {out} left as it was"]
            assert lines == expected, (what, build.stderr())
            assert tree_digest(out) == reference, what
        left = sorted(p.name for p in parent.iterdir())
        if sig is signal.SIGKILL:
            assert set(left) <= {"out", ".out.liveimg", ".out.liveimg.lock"}, (what, left)
            dead = build if ".out.liveimg" in left else None
        else:
            assert left == ["out"], (what, left)
            dead = None
        survivors = still_running(processes, str(tmp_path))
        assert survivors == [], (what, survivors)
        temporary = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "tmp").rglob("*"))
        temporary += sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "run").rglob("*"))
        if sig is signal.SIGKILL:  # libguestfs's socket directory is all it may leave (see liveimg.guest)
            assert all(re.fullmatch(r"run/libguestfs\w{6}(/(guestfsd|console)\.sock)?", t) for t in temporary), (
                what,
                temporary,
            )
        else:
            assert temporary == [], (what, temporary)
    print("\n".join(report))
    assert set(hit) >= set(STAGES), report  # each stage got its signal while it ran
    assert None not in hit, report


def test_a_library_caller_gets_cancelled_and_the_appliance_dies_mid_launch(tmp_path: Path) -> None:
    """build() from the main thread: SIGTERM while libguestfs starts QEMU (a C call Python cannot interrupt)."""
    need_root()
    image = sample_image("classic")
    out = tmp_path / "out"
    (out / "keep").parent.mkdir()
    (out / "keep").write_text("the old build\n")
    reference = tree_digest(out)
    sent: list[float] = []

    def on_event(event: Event) -> None:
        if (event.event, event.stage) == ("begin", "appliance"):  # the launch starts right after this
            timer = threading.Timer(3.0, lambda: (sent.append(time.monotonic()), os.kill(os.getpid(), signal.SIGTERM)))
            timer.start()

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(Cancelled) as excinfo:
        build(
            image,
            out,
            BuildOptions(force=True, accel="tcg", compression="lz4", inspect="appliance"),
            Progress(on_event),
        )
    stopped = time.monotonic()
    assert excinfo.value.signum == signal.SIGTERM
    assert str(excinfo.value) == f"interrupted by SIGTERM: {out} left as it was"
    assert sent and stopped - sent[0] < 8, "the launch was not cut short"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    assert tree_digest(out) == reference
    assert os.listdir(tmp_path) == ["out"]
    assert still_running(descendants(os.getpid()), str(tmp_path)) == []
