"""Run the image's dracut inside the libguestfs appliance: for images you do not trust.

The guest's dracut then runs in a virtual machine (under TCG here: slow, but isolated), not
on the host.  The appliance gets two drives:

* ``rootfs.img`` read-only -- libguestfs puts a throw-away overlay on it, so the deployment
  can be mounted read-write for dracut while the file itself is never written;
* a blank scratch disk (libguestfs deletes it on close) for dracut's ``/var/tmp``, its
  uncompressed output and its log, so that the rootfs's free space does not matter.

Inside the appliance (``debug sh``, which runs in the appliance itself, not in the guest) the
deployment gets ``/proc``, ``/dev``, ``/sys``, a tmpfs ``/run`` and ``/tmp``, the scratch
``/var/tmp`` and, on ostree, the physical ``/boot`` bound at ``/boot`` -- as lorax does, but in
a VM -- and dracut runs chrooted into it with the same plan as in the sandbox
(:func:`liveimg.dracut.stage.plan_dracut`).  The output and log are downloaded; compression
happens on the host as for the sandbox.

The handle comes from an :class:`ApplianceOpener`; :func:`open_appliance`, the default, opens
it with :func:`liveimg.guest.open_guest` (the accelerator liveimg chose, TCG here).

The guest's dracut is root in the appliance and may do anything there, so nothing it leaves is
trusted: dracut gets ``DracutOptions.timeout`` seconds, after which liveimg kills the
appliance's QEMU (no command inside could stop it); the exit status it wrote is read strictly
(:func:`parse_status`); the log is downloaded up to :data:`LOG_LIMIT` (its tail), the output
only as a regular file up to :data:`OUTPUT_LIMIT`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from liveimg.dracut.plan import OUT_DIR, DracutOptions, Plan, plan_dracut
from liveimg.dracut.sandbox import GUEST_PATH, log_tail
from liveimg.dracut.tree import chroot_path
from liveimg.errors import HostError, InvalidImage, InvalidOptions, ToolError, ToolTimeout
from liveimg.fsview import GuestTree
from liveimg.guest import GuestfsFS, open_guest

log = logging.getLogger(__name__)

SCRATCH_BYTES = 8 << 30  # sparse: only what dracut writes takes space
SCRATCH_MOUNT = "/.liveimg-scratch"
APPLIANCE_MEMORY_MB = 2048
#: Most of dracut's log downloaded (its end); a real one is a few MiB even with --debug.
LOG_LIMIT = 64 << 20
#: Largest initramfs downloaded (a newc archive cannot hold a larger file anyway).
OUTPUT_LIMIT = 4 << 30


class ApplianceOpener(Protocol):
    """Gives a launched guestfs handle whose first drive is ``rootfs`` (read-only, writes
    going to a discarded overlay) and whose second is a blank scratch disk of ``scratch_bytes``."""

    def __call__(self, rootfs: Path, *, scratch_bytes: int) -> contextlib.AbstractContextManager[Any]: ...


@contextlib.contextmanager
def open_appliance(rootfs: Path, *, scratch_bytes: int = SCRATCH_BYTES) -> Iterator[Any]:
    """The default :class:`ApplianceOpener`: :func:`liveimg.guest.open_guest` on ``rootfs``
    (read-only, with libguestfs's throw-away overlay) and a sparse scratch file beside it as
    its work drive, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=".liveimg-scratch-", dir=rootfs.parent) as tmp:
        scratch = Path(tmp) / "scratch.img"
        with open(scratch, "wb") as f:
            f.truncate(scratch_bytes)
        started = time.monotonic()
        with open_guest(rootfs, work_drives=[scratch], memsize=APPLIANCE_MEMORY_MB) as guest:
            log.info("libguestfs appliance up in %.1f s", time.monotonic() - started)
            yield guest.g


def _mkdirs(g: Any, fs: GuestfsFS, deployment: str, path: str) -> str:
    """Create directory ``path`` of the deployment (links followed inside it); its appliance path."""
    real = chroot_path(fs, deployment, path)
    g.mkdir_p(real)
    return str(real)


@dataclass(frozen=True)
class ApplianceRun:
    plan: Plan
    seconds: float  # dracut alone
    launch_seconds: float


@contextlib.contextmanager
def _killed_after(g: Any, seconds: float) -> Iterator[threading.Event]:
    """Kill the appliance's QEMU if the block takes more than ``seconds``; the event says it did."""
    expired = threading.Event()
    try:
        pid = int(g.get_pid())
    except (RuntimeError, AttributeError, TypeError, ValueError):
        pid = 0  # a test double without a VM: nothing to kill

    def kill() -> None:
        expired.set()
        if pid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


def parse_status(text: bytes) -> int:
    """The exit status the appliance script wrote (``0``-``255`` and a newline), read strictly:
    anything else means the guest, root in the appliance, wrote it."""
    match = re.fullmatch(rb"([0-9]{1,3})\n?", text)
    if match is None or int(match.group(1)) > 255:
        raise InvalidImage(f"dracut in the appliance left no readable exit status ({text[:40]!r}): a hostile image?")
    return int(match.group(1))


def _read_small(g: Any, path: str, limit: int = 64) -> bytes:
    try:
        if int(g.filesize(path)) > limit:
            return b"?"
        return bytes(g.read_file(path))
    except RuntimeError:
        return b""


def _download(g: Any, path: str, dest: Path, limit: int, *, tail: bool) -> bool:
    """Download ``path`` from the appliance; a file over ``limit`` bytes is cut to its last
    ``limit`` bytes with ``tail``, else not downloaded.  Whether it was over the limit."""
    size = int(g.filesize(path))
    if size <= limit:
        g.download(path, os.fspath(dest))
        return False
    if tail:
        g.download_offset(path, os.fspath(dest), size - limit, limit)
    return True


def _script(*, ostree: bool, argv: tuple[str, ...], mounts: dict[str, str]) -> str:
    q = shlex.quote
    d = "/sysroot" + mounts["root"]
    s = "/sysroot" + SCRATCH_MOUNT
    env = f"PATH={GUEST_PATH} LC_ALL=C HOME=/root TMPDIR=/var/tmp TERM=dumb"
    lines = [
        "set -eu",
        f"mkdir -p {s}/out {s}/vartmp && chmod 1777 {s}/vartmp",
        f"mount -t proc -o nosuid,nodev,noexec proc {q(d + mounts['proc'])}",
        f"mount --rbind /dev {q(d + mounts['dev'])}",
        f"mount --rbind /sys {q(d + mounts['sys'])}",
        f"mount -t tmpfs -o mode=0755 tmpfs {q(d + mounts['run'])}",
        f"mkdir -p {q(d + mounts['run'])}/liveimg",
        f"mount --bind {s}/out {q(d + mounts['run'])}/liveimg",
        f"mount --bind {s}/vartmp {q(d + mounts['var/tmp'])}",
        f"mount -t tmpfs -o mode=1777 tmpfs {q(d + mounts['tmp'])}",
    ]
    if ostree:
        lines += [f"mount --bind /sysroot/boot {q(d + mounts['boot'])}"]
    command = " ".join(q(a) for a in argv)
    lines += [
        f"rc=0; chroot {q(d)} /usr/bin/env -i {env} {command} >{s}/dracut.log 2>&1 || rc=$?",
        f"echo $rc >{s}/rc",
    ]
    return "\n".join(lines) + "\n"


def run_dracut_in_appliance(
    rootfs: Path,
    deployment: str,
    *,
    kver: str,
    options: DracutOptions,
    ostree: bool,
    raw_output: Path,
    log_path: Path,
    opener: ApplianceOpener | None = None,
    command: Sequence[str] | None = None,
) -> ApplianceRun:
    """Plan and run dracut in the appliance; the uncompressed initramfs lands in ``raw_output``.

    ``command`` runs that dracut command line instead of the planned one (after the same
    checks), for benchmarks that compare with lorax's exact invocation.
    """
    if ".." in deployment.split("/"):
        raise InvalidOptions(f"deployment path {deployment!r} contains '..'")
    open_it = opener or open_appliance
    started = time.monotonic()
    with open_it(rootfs, scratch_bytes=SCRATCH_BYTES) as g:
        launch_seconds = time.monotonic() - started
        devices = g.list_devices()
        if len(devices) < 2:
            raise HostError(f"the appliance has {len(devices)} drives; it needs the rootfs and a scratch disk")
        try:
            g.mount(devices[0], "/")
        except RuntimeError as exc:
            raise InvalidImage(f"cannot mount {rootfs} in the appliance: {exc}") from exc
        g.mkdir_p(SCRATCH_MOUNT)
        g.mkfs("ext4", devices[1])
        g.mount(devices[1], SCRATCH_MOUNT)
        fs = GuestfsFS(g, "/", f"{rootfs.name} in the appliance")
        root = "/" + deployment.strip("/")
        top = GuestTree(fs)
        if not top.is_dir(root) or top.resolve(root) != root:
            raise InvalidImage(f"{deployment} is not a directory in {rootfs}: is it the deployment of this image?")
        tree = GuestTree(fs, root)
        plan = plan_dracut(tree, kver=kver, ostree=ostree, options=options, output=f"{OUT_DIR}/{raw_output.name}")
        mounts = {"root": "" if root == "/" else root}
        for name in ("proc", "dev", "sys", "run", "var/tmp", "tmp", *(("boot",) if ostree else ())):
            # Appliance paths, relative to the mounted rootfs ("/sysroot" is added in the script).
            real = _mkdirs(g, fs, root, "/" + name)
            mounts[name] = real[len(mounts["root"]) :] if mounts["root"] else real
        if ostree:
            for needed in ("/var/roothome", "/sysroot/tmp"):
                _mkdirs(g, fs, root, needed)
        if options.dracut_conf is not None and plan.conf_name:
            confdir = _mkdirs(g, fs, root, "/etc/dracut.conf.d")
            g.upload(os.fspath(options.dracut_conf), f"{confdir}/{plan.conf_name}")
        argv = tuple(command) if command is not None else plan.argv
        log.info("appliance: running %s", " ".join(argv))
        dracut_started = time.monotonic()
        with _killed_after(g, options.timeout) as expired:
            try:
                g.debug("sh", [_script(ostree=ostree, argv=argv, mounts=mounts)])
            except RuntimeError as exc:
                if expired.is_set():
                    raise ToolTimeout(argv, options.timeout, "the appliance was killed") from None
                raise HostError(f"cannot run dracut in the appliance: {exc}") from exc
        seconds = time.monotonic() - dracut_started
        _download(g, f"{SCRATCH_MOUNT}/dracut.log", log_path, LOG_LIMIT, tail=True)
        rc = parse_status(_read_small(g, f"{SCRATCH_MOUNT}/rc"))
        if rc != 0:
            tail = log_tail(log_path, 20)
            raise ToolError(
                argv,
                rc,
                tail,
                message=f"dracut failed in the appliance with exit status {rc}: "
                f"{tail.splitlines()[-1] if tail else 'no output'} (log: {log_path})",
            )
        produced = f"{SCRATCH_MOUNT}/out/{raw_output.name}"
        if not g.is_file(produced):  # a link is not a file here
            raise HostError(f"dracut succeeded in the appliance but wrote no {raw_output.name} (log: {log_path})")
        if _download(g, produced, raw_output, OUTPUT_LIMIT, tail=False):
            raise InvalidImage(f"dracut's initramfs in the appliance is larger than {OUTPUT_LIMIT >> 30} GiB: refused")
    return ApplianceRun(plan=plan, seconds=seconds, launch_seconds=launch_seconds)
