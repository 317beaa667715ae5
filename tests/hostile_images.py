"""A corpus of hostile guests, made by this script (no binaries checked in), each aimed at canaries on the host.

Every case is a small ext4 ``rootfs.img`` (a classic layout, ``/`` the deployment) whose dracut is
the busybox stand-in of :mod:`tests.dracut.fake_guest`, with an attack in its tree, its filesystem
or its dracut script.  :func:`run_case` builds the image and runs the dracut stage on it as the
pipeline does -- ``debugfs rdump`` of the tree, then the guest's dracut -- and reports how it
ended; the integration tests (``tests/integration/test_hostile.py``) require a built initramfs or
a one-line error, in bounded time, with every canary unchanged, run as root and as an
unprivileged user.

The canaries are files and a directory owned by the sandbox's host user (nobody when root runs
liveimg, the caller otherwise) and writable by it: only the sandbox keeps them intact, not file
permissions.

Other helpers add cases with :func:`register` (for instance injection strings in kernel
names, os-release and BLS entries: a case's ``edit`` writes them into the tree, its ``check``
looks at what came out).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveimg import run as runner
from liveimg import sandbox
from liveimg.dracut import stage
from liveimg.dracut import tree as tree_module
from liveimg.dracut.plan import DracutOptions
from liveimg.dracut.stage import build_initramfs
from liveimg.errors import LiveImgError
from tests.dracut.fake_guest import dracut_guest

KVER = "6.1.0-50-amd64"
CANARY = b"canary: a hostile guest must not change this\n"
#: Sleeps nobody else runs (a unique suffix per run of a case): processes left behind are found by them.
MARK = "2718.28"


@dataclass
class Canaries:
    """``dir`` holds ``file``; both writable by the sandbox's host user, so only isolation protects them."""

    dir: Path

    @property
    def file(self) -> Path:
        return self.dir / "canary"

    @classmethod
    def make(cls) -> Canaries:
        # Below /tmp, not beside the work: a guest tree whose /var led to /var/tmp/... would loop.
        canaries = cls(Path(tempfile.mkdtemp(prefix="liveimg-canaries-", dir="/tmp")))
        canaries.file.write_bytes(CANARY)
        canaries.dir.chmod(0o777)
        canaries.file.chmod(0o666)
        owner = sandbox.sandbox_ids()
        if owner is not None:
            os.chown(canaries.dir, *owner)
            os.chown(canaries.file, *owner)
        return canaries

    def snapshot(self) -> dict[str, tuple[int, bytes]]:
        return {p.name: (p.lstat().st_mode, p.read_bytes() if p.is_file() else b"") for p in self.dir.iterdir()}


@dataclass
class Context:
    """What a case's hooks get: the work directory, the canaries, and (network) a listener's port."""

    work: Path
    canaries: Canaries
    mark: str = field(default_factory=lambda: f"{MARK}{secrets.randbelow(10**6):06d}")
    port: int = 0
    connections: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """One hostile guest.

    ``prelude``/``postlude`` go into the fake dracut (``{canary}``, ``{canary_dir}``, ``{port}``
    and ``{mark}`` are filled in); ``edit`` changes the guest tree before the image is made,
    ``image_edit`` the image file after; ``limits`` replace fields of the stage's sandbox limits
    (kept small so that the corpus runs in seconds); ``expect`` is a regular expression the outcome
    must match: the one-line error, or ``built`` for an initramfs; ``check`` looks at the outcome.
    """

    name: str
    attack: str
    prelude: str = ""
    postlude: str = ""
    edit: Callable[[Path, Context], None] | None = None
    image_edit: Callable[[Path, Context], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    rdump_min: int | None = None
    expect: str = "^built$"
    check: Callable[[Outcome, Context], None] | None = None


@dataclass
class Outcome:
    error: str | None
    error_type: str | None
    seconds: float
    log: str
    seen_conf: bytes = b""


CASES: dict[str, Case] = {}


def register(case: Case) -> Case:
    """Add a case to the corpus (its name must be new)."""
    if case.name in CASES:
        raise ValueError(f"hostile case {case.name} exists already")
    CASES[case.name] = case
    return case


# --- building ----------------------------------------------------------------------------------


def rename_entry(image: Path, name: bytes, new: bytes) -> None:
    """Give the directory entry ``name`` the name ``new`` (same length) in the image's bytes: a
    second entry of that name in its directory, which no tool would write."""
    if len(name) != len(new):
        raise ValueError("names must have the same length")
    data = image.read_bytes()
    # ext4 dirent: inode (4), rec_len (2), name_len (1), file_type (1), name
    found = [m.start() for m in re.finditer(re.escape(name), data) if data[m.start() - 2] == len(name)]
    if len(found) != 1:
        raise ValueError(f"{name!r} is {len(found)} times a directory entry in {image}")
    with open(image, "r+b") as f:
        f.seek(found[0])
        f.write(new)
    # (The images are made without metadata_csum: the directory block's checksum would be wrong.)


def make_image(case: Case, ctx: Context) -> Path:
    """The case's ``rootfs.img``."""
    fill = {"canary": str(ctx.canaries.file), "canary_dir": str(ctx.canaries.dir), "port": str(ctx.port),
            "mark": ctx.mark}  # fmt: skip
    tree = dracut_guest(ctx.work / "tree", prelude=case.prelude.format(**fill), postlude=case.postlude.format(**fill))
    if case.edit is not None:
        case.edit(tree, ctx)
    image = ctx.work / "rootfs.img"
    runner.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^metadata_csum", "-E", "root_owner=0:0", "-d", str(tree),
                str(image), "24M"])  # fmt: skip
    if case.image_edit is not None:
        case.image_edit(image, ctx)
    return image


@contextlib.contextmanager
def listener(ctx: Context) -> Iterator[None]:
    """A TCP server on the host's loopback that records who connects (nobody should)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    ctx.port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            ctx.connections.append(str(peer))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()


def leftovers(mark: str) -> list[str]:
    """Processes a case left behind (its sleeps carry its ``mark``)."""
    found = subprocess.run(["pgrep", "-a", "-f", f"^sleep {mark}"], capture_output=True, text=True, check=False)
    return found.stdout.splitlines()


def run_case(name: str, work: Path) -> dict[str, Any]:
    """Build case ``name`` in the new directory ``work`` and run the dracut stage on it; a summary."""
    case = CASES[name]
    work.mkdir(parents=True)
    ctx = Context(work, Canaries.make())
    try:
        return _run_case(case, ctx)
    finally:
        shutil.rmtree(ctx.canaries.dir, ignore_errors=True)


def _run_case(case: Case, ctx: Context) -> dict[str, Any]:
    work, name = ctx.work, case.name
    saved = (stage.DRACUT_LIMITS, tree_module.RDUMP_MIN)
    with listener(ctx):
        image = make_image(case, ctx)
        before = ctx.canaries.snapshot()
        stage.DRACUT_LIMITS = sandboxed_limits(case)
        if case.rdump_min is not None:
            tree_module.RDUMP_MIN = case.rdump_min
        out = work / "out"
        out.mkdir()
        started = time.monotonic()
        error = error_type = None
        try:
            build_initramfs(rootfs=image, deployment="/", kver=KVER, output=out / "initrd.img",
                            options=DracutOptions(**conf_options(case, work)))  # fmt: skip
        except LiveImgError as exc:
            error, error_type = str(exc), type(exc).__name__
        finally:
            stage.DRACUT_LIMITS, tree_module.RDUMP_MIN = saved
        seconds = time.monotonic() - started
    log_path = out / "initrd.img.dracut.log"
    outcome = Outcome(error, error_type, seconds, log_path.read_text(errors="replace") if log_path.exists() else "")
    if error is None:
        from liveimg.dracut.initramfs import Initramfs

        with Initramfs(out / "initrd.img") as ird:
            outcome.seen_conf = ird.read("etc/seen.conf")
    time.sleep(0.2)  # let a killed sandbox's processes go
    problems = []
    if ctx.canaries.snapshot() != before:
        problems.append(f"canaries changed: {ctx.canaries.snapshot()} (were {before})")
    if ctx.connections:
        problems.append(f"the guest reached the host's network: {ctx.connections}")
    if left := leftovers(ctx.mark):
        problems.append(f"processes left behind: {left}")
    if not re.search(case.expect, error or "built"):
        problems.append(
            f"expected {case.expect!r}, got {error_type}: {error}" if error else f"expected {case.expect!r}"
        )
    if error is not None and "\n" in error:
        problems.append(f"the error is not one line: {error!r}")
    if case.check is not None:
        try:
            case.check(outcome, ctx)
        except AssertionError as exc:
            problems.append(f"check: {exc}")
    return {"name": name, "error": error, "error_type": error_type, "seconds": round(seconds, 2),
            "problems": problems}  # fmt: skip


def sandboxed_limits(case: Case) -> sandbox.Limits:
    import dataclasses

    base = dataclasses.replace(stage.DRACUT_LIMITS, tasks=64, disk=256 * sandbox.MiB, file_size=64 * sandbox.MiB)
    return dataclasses.replace(base, **case.limits)


# --- the corpus ----------------------------------------------------------------------------------


def _plant_dup_entries(image: Path, ctx: Context) -> None:
    # A symlink "hostile-link" to the canary file, then a regular file "hostile-file"; renamed, the
    # file is a second "hostile-link": rdump makes the link, then opens the name to write the file,
    # O_CREAT|O_TRUNC and following the link (as root on the host: the canary's new content).
    payload = ctx.work / "payload"
    payload.write_bytes(b"pwned\n")
    commands = f"symlink /hostile-link {ctx.canaries.file}\nwrite {payload} /hostile-file\n"
    runner.run(["debugfs", "-w", "-f", "-", str(image)], input=commands.encode())
    rename_entry(image, b"hostile-file", b"hostile-link")


register(Case(
    "rdump-duplicate-entries",
    "a symlink to a host file, then a file of the same name: rdump writes the file through the link",
    image_edit=_plant_dup_entries,
    expect=r"debugfs could not copy / out of .*hostile-link",
))  # fmt: skip


def _hard_links(tree: Path, ctx: Context) -> None:
    big = tree / "usr/share/big"
    big.parent.mkdir(parents=True, exist_ok=True)
    big.write_bytes(os.urandom(1 << 20))
    for i in range(400):
        os.link(big, tree / f"usr/share/link{i}")


register(Case(
    "rdump-hard-link-flood",
    "one file with hundreds of names (a clean filesystem): rdump writes it once per name, to fill the disk",
    edit=_hard_links,
    rdump_min=64 * sandbox.MiB,
    expect=r"copying / out of it was stopped: debugfs was stopped: it wrote more than",
))  # fmt: skip


def _conf_link(tree: Path, ctx: Context) -> None:
    confd = tree / "etc/dracut.conf.d"
    confd.mkdir(parents=True)
    (confd / "99-liveimg-extra.conf").symlink_to(ctx.canaries.file)
    (ctx.work / "extra.conf").write_text('add_dracutmodules+=" nfs "\n')


def _conf_check(outcome: Outcome, ctx: Context) -> None:
    assert outcome.seen_conf == b'add_dracutmodules+=" nfs "\n', outcome.seen_conf


register(Case(
    "dracut-conf-symlink",
    "the file liveimg writes --dracut-conf to is a link to a host file",
    edit=_conf_link,
    options={"dracut_conf": None},  # set in run_case's caller: see conf_options
    check=_conf_check,
))  # fmt: skip


def _mount_links(tree: Path, ctx: Context) -> None:
    # (Not /tmp: the canaries live below /tmp, and a tree whose /tmp led there would loop.)
    for name in ("run", "proc", "sys", "dev"):
        (tree / name).symlink_to(f"{ctx.canaries.dir}/{name}")
    (tree / "var").symlink_to("../../../../../../../../.." + str(ctx.canaries.dir))


register(Case(
    "mount-point-symlinks",
    "/run, /proc, /sys, /dev and /var are links to a host directory (absolute, and escaping with ..)",
    edit=_mount_links,
    # /var/tmp then lies below /tmp in the tree, where liveimg's tmpfs hides it: dracut may fail
    expect=r"^built$|^dracut failed with exit status",
))  # fmt: skip

register(Case(
    "output-symlink",
    "dracut leaves its output as a link to a host file, for liveimg to append device nodes to",
    postlude='rm -f "$out"; ln -s {canary} "$out"',
    expect=r"dracut's output initramfs\.cpio is not a plain file",
))  # fmt: skip

register(Case(
    "output-huge",
    "dracut writes an output larger than any initramfs",
    postlude='head -c 100000000 /dev/zero >> "$out"',
    # SIGXFSZ kills a writer at the limit; busybox's head instead stops with an I/O error
    expect=r"wrote a file larger than 64 MiB|dracut failed with exit status 1: head: standard output",
))  # fmt: skip


# Writes that would succeed if isolation failed, yet harm nothing: each system file gets its own
# value back (never /proc/sysrq-trigger, where any write acts), and new files get a name of ours,
# which the test looks for on the host afterwards.
_SYS_WRITES = """
for f in /proc/sys/vm/stat_interval /proc/sys/kernel/core_pattern /sys/class/net/lo/mtu \\
         /sys/module/firmware_class/parameters/path; do
    v=$(cat $f 2>/dev/null) || {{ echo "HOSTILE cannot read $f"; continue; }}
    if printf '%s\\n' "$v" > $f 2>/dev/null; then echo "HOSTILE wrote $f"; else echo "HOSTILE refused $f"; fi
done
for f in /sys/fs/cgroup/{mark} /sys/{mark} /proc/{mark} /dev/{mark} {canary}; do
    if echo 1 > $f 2>/dev/null; then echo "HOSTILE wrote $f"; else echo "HOSTILE refused $f"; fi
done
mount -t tmpfs none /mnt 2>/dev/null && echo "HOSTILE mounted"
mount -o remount,rw /sys 2>/dev/null && echo "HOSTILE remounted"
"""


def _sys_check(outcome: Outcome, ctx: Context) -> None:
    assert "HOSTILE refused /proc/sys/kernel/core_pattern" in outcome.log, outcome.log[-2000:]
    assert not any(os.path.exists(f"/{top}/{ctx.mark}") for top in ("sys/fs/cgroup", "sys", "proc", "dev"))
    assert "HOSTILE wrote" not in outcome.log and "HOSTILE mounted" not in outcome.log
    assert "HOSTILE remounted" not in outcome.log


register(Case(
    "proc-and-sys-writes",
    "dracut writes sysctls, sysfs and cgroup files, and mounts",
    prelude=_SYS_WRITES,
    check=_sys_check,
))  # fmt: skip


def _net_check(outcome: Outcome, ctx: Context) -> None:
    assert "HOSTILE no network" in outcome.log, outcome.log[-2000:]


register(Case(
    "network",
    "dracut connects to a server on the host's loopback",
    prelude="nc -w 2 127.0.0.1 {port} < /dev/null && echo HOSTILE connected || echo HOSTILE no network",
    check=_net_check,
))  # fmt: skip

register(Case(
    "fork-bomb",
    "dracut forks without bound, every process sleeping",
    prelude="bomb() {{ sleep {mark} & bomb & bomb; }}; bomb 2>/dev/null",
    options={"timeout": 30},
    expect=r"dracut failed with exit status|timed out after 30 s",
))  # fmt: skip

register(Case(
    "fill-the-disk",
    "dracut writes files until the disk is full",
    prelude="i=0; while :; do head -c 8000000 /dev/zero > /var/tmp/fill$i || exit 1; i=$((i+1)); done",
    expect=r"was stopped: it wrote more than 256 MiB to the filesystem of",
))  # fmt: skip

register(Case(
    "sleep-forever",
    "dracut never ends",
    prelude="sleep {mark} & sleep {mark}",
    options={"timeout": 3},
    expect=r"dracut timed out after 3 s and was killed",
))  # fmt: skip


def conf_options(case: Case, ctx_work: Path) -> dict[str, Any]:
    """``options`` with the host files a case names made real."""
    options = dict(case.options)
    if "dracut_conf" in options:
        options["dracut_conf"] = ctx_work / "extra.conf"
    return options


# --- the same guest bytes through the rootfs stage (e2fsprogs in the sandbox) ------------------


def run_rootfs_case(work: Path) -> dict[str, Any]:
    """The rootfs stage's partition method on the duplicate-entry filesystem: e2fsck, in the
    sandbox, finds the damage and the stage refuses the image in one line (canaries intact)."""

    work.mkdir(parents=True)
    ctx = Context(work, Canaries.make())
    try:
        return _run_rootfs_case(ctx)
    finally:
        shutil.rmtree(ctx.canaries.dir, ignore_errors=True)


def _run_rootfs_case(ctx: Context) -> dict[str, Any]:
    from liveimg import rootfs

    work = ctx.work
    image = make_image(CASES["rdump-duplicate-entries"], ctx)
    before = ctx.canaries.snapshot()
    problems = []
    try:
        rootfs.from_partition(image=image, image_format="raw", offset=0, length=image.stat().st_size, boot=None,
                              boot_limit=None, dest=work / "rootfs-out.img", options=rootfs.RootfsOptions(),
                              workdir=work, what="the hostile root")  # fmt: skip
        problems.append("the rootfs stage accepted a filesystem with duplicate directory entries")
        error = None
    except LiveImgError as exc:
        error = str(exc)
        if not re.search(r"the hostile root has filesystem errors: .*(duplicate|Duplicate)", error):
            problems.append(f"unexpected error: {type(exc).__name__}: {error}")
    if ctx.canaries.snapshot() != before:
        problems.append("canaries changed")
    return {"error": error, "problems": problems}


def run_native_case(name: str, work: Path) -> dict[str, Any]:
    """The host's own ext reader (:mod:`liveimg.nativeimage`, ``--inspect native``) on case ``name``'s
    image: the inspection, then the whole tree listed and every file read as the rootfs stage reads a
    boot filesystem.  It must end, in bounded time, in an ImageInfo or a one-line refusal (a
    LiveImgError, or the native reader's verdict that sends the image to the appliance), never in
    another exception, with the canaries unchanged."""
    from liveimg.extfs import ExtFS, ExtRefused, ExtTree
    from liveimg.guest import probe_image
    from liveimg.nativeimage import NativeImage, NativeRefused

    work.mkdir(parents=True)
    ctx = Context(work, Canaries.make())
    try:
        image = make_image(CASES[name], ctx)
        before = ctx.canaries.snapshot()
        problems: list[str] = []
        outcomes: list[str] = []
        started = time.monotonic()
        fmt = probe_image(image)
        try:
            info = NativeImage(fmt).inspect()
            outcomes.append(f"inspected: kernel {info.kernel.version}")
        except (LiveImgError, NativeRefused) as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
        assert fmt.file is not None
        try:
            fs = ExtFS(fmt.file.fd, 0, fmt.virtual_size, str(image))
            source = ExtTree(fs)
            entries = source.entries()
            for entry in entries:
                if entry.kind == "file" and entry.hardlink is None:
                    source.fetch(entry, work / "fetched")
            outcomes.append(f"listed {len(entries)} entries")
        except (LiveImgError, ExtRefused) as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        problems += [f"not one line: {o!r}" for o in outcomes if "\n" in o]
        if ctx.canaries.snapshot() != before:
            problems.append("canaries changed")
        return {"name": name, "outcomes": outcomes, "seconds": round(seconds, 2), "problems": problems}
    finally:
        shutil.rmtree(ctx.canaries.dir, ignore_errors=True)
