"""The dracut stage: a live initramfs built by the image's own dracut.

For the chosen kernel, the image's dracut runs inside the deployment -- with the physical
``/boot`` visible at ``/boot``, as lorax arranges -- with lorax's arguments::

    dracut --nomdadmconf --nolvmconf --add "<modules>" --no-hostonly --debug --no-early-microcode

where ``<modules>`` is lorax's list (``livenet dmsquash-live dmsquash-live-ntfs convertfs
pollcdrom qemu qemu-net``), plus ``ostree`` on ostree images, minus the optional modules the
guest cannot install (each reported with the reason, see :mod:`.modules`).  Differences from
lorax, on purpose:

* dracut writes an uncompressed image (``--no-compress`` replaces lorax's ``--xz``) and the
  host compresses it with all its cores (:mod:`.compress`): xz inside the guest -- under TCG in
  the appliance -- is most of dracut's time;
* it runs on a writable copy of the deployment, never on the input, and never as real root:
  in a rootless user-namespace sandbox (:mod:`.sandbox`, the default where user namespaces
  work) or, for images you do not trust and as the fallback, in the libguestfs appliance
  (:mod:`.appliance`);
* it is given :data:`~liveimg.dracut.plan.SLIM_ARGS` (``--filesystems``, ``--omit-drivers``): the
  filesystems and drivers a live boot needs, not all the kernel has -- the unpacked initramfs is
  in RAM beside the downloaded live file (``all_drivers`` keeps lorax's everything);
* before running, the guest must have dracut, the kernel's modules and the live modules
  (``dmsquash-live``, ``livenet``; ``ostree`` on ostree images), or the error names the
  package to install in the image; afterwards the result must hold the live hooks and tools
  (``dmsquash-live-root``, ``livenetroot``, ``curl``, ``ostree-prepare-root``).

Options (:class:`DracutOptions`) follow lorax's where lorax has them:

* ``dracut_args`` is lorax's ``--dracut-arg``: each value is split on its first space
  (``"--add livenet nfs"`` -> ``--add``, ``livenet nfs``) and together they REPLACE lorax's
  default arguments (``--nomdadmconf --nolvmconf`` stay, as in lorax; ``--no-compress`` is
  always added, because compression happens on the host);
* ``dracut_conf`` is lorax's ``--dracut-conf``: the file is copied into the tree's
  ``/etc/dracut.conf.d/``.  Unlike lorax, it does not replace the default arguments -- dracut
  reads it as one more configuration file (command-line options still win);
* ``add_modules``/``omit_modules`` change the module list; ``extra_args`` are appended.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from liveimg import sandbox
from liveimg.cache import Cache
from liveimg.dracut import cpio, reuse
from liveimg.dracut.appliance import ApplianceOpener, run_dracut_in_appliance
from liveimg.dracut.compress import DEFAULT_LEVELS, Compressed, Compression, compress_initramfs, fingerprint
from liveimg.dracut.initramfs import newc_index, plain_segments
from liveimg.dracut.plan import OUT_DIR, DracutOptions, Plan, Where, plan_dracut, verify_initramfs
from liveimg.dracut.sandbox import Bind, Tmpfs, check_sandbox_result, log_tail, run_in_sandbox, sandbox_available
from liveimg.dracut.tree import ExtractedTree, extract_tree, guest_mkdirs
from liveimg.errors import HostError, InternalError, InvalidImage, InvalidOptions, ToolTimeout
from liveimg.fsview import GuestTree, HostFS, MergedFS
from liveimg.progress import Progress
from liveimg.ramfloor import unpacked_bytes
from liveimg.staging import temp_beside

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Initrd:
    """The stage's artifact: the live initramfs of one kernel."""

    path: Path
    kver: str
    compression: Compression
    size: int
    modules: tuple[str, ...]  # asked for with --add
    left_out: tuple[tuple[str, str], ...]  # (module, why) of lorax's list
    log: Path  # dracut's log
    seconds: float  # the whole stage
    dracut_seconds: float
    compress_seconds: float
    where: Where  # SANDBOX or APPLIANCE
    argv: tuple[str, ...] = field(default=())  # dracut's command line
    reused: bool = False  # taken from the build cache, dracut not run (liveimg.dracut.reuse)
    # the compressed initramfs came from the build cache, whether dracut ran or not
    compression_reused: bool = False
    # what it takes in RAM once unpacked (liveimg.ramfloor.unpacked_bytes), read from dracut's
    # uncompressed archive so that nobody decompresses it again to know; None: not known
    unpacked: int | None = None


def _choose_where(options: DracutOptions) -> Where:
    if options.where is not Where.AUTO:
        return options.where
    ok, reason = sandbox_available()
    if ok:
        return Where.SANDBOX
    log.warning("the rootless sandbox cannot run here (%s): using the libguestfs appliance", reason)
    return Where.APPLIANCE


def build_initramfs(
    *,
    kver: str,
    output: str | os.PathLike[str],
    rootfs: str | os.PathLike[str] | None = None,
    deployment: str = "/",
    tree: str | os.PathLike[str] | None = None,
    boot: str | os.PathLike[str] | None = None,
    options: DracutOptions | None = None,
    workdir: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    ostree: bool | None = None,
    appliance: ApplianceOpener | None = None,
    progress: Progress | None = None,
    cache: Cache | None = None,
) -> Initrd:
    """Build the live initramfs of kernel ``kver`` into ``output``.

    The guest comes either from ``rootfs`` (the rootfs stage's ext4 image file) and
    ``deployment`` (the deployment directory inside it, ``/`` for a classic image), or from
    ``tree``, a writable host directory holding the deployment (and ``boot``, the physical
    /boot to show at its /boot, if it is an ostree deployment).  ``ostree`` (default: an
    ostree deployment path, or a tree with a ``/ostree`` link or a separate ``boot``) adds the
    ostree module.  ``rootfs`` is only read; a given ``tree`` gets mount points, ``/var/tmp``
    and the dracut.conf.d copy written into it (it must be a copy).
    dracut's log goes to ``log_path`` (default: ``<output>.dracut.log``).  ``workdir`` holds
    the temporary files (default: beside ``output``).  ``appliance`` opens the libguestfs
    appliance for ``Where.APPLIANCE`` (default: :func:`liveimg.dracut.appliance.open_appliance`).
    With ``cache`` (the sandbox only), dracut is skipped when the cache holds the initramfs of
    the same inputs and the root still holds what it copied (:mod:`.reuse`, its contract); the
    output is then the same bytes, and ``reused`` says so.
    """
    opts = options or DracutOptions()
    started = time.monotonic()
    out = Path(output)
    logfile = Path(log_path) if log_path else out.with_name(out.name + ".dracut.log")
    if (rootfs is None) == (tree is None):
        raise InvalidOptions("give either rootfs (an ext4 image file) or tree (a directory), not both or neither")
    if not out.parent.is_dir():
        raise InvalidOptions(f"output directory {out.parent} does not exist")
    if ostree is None:
        ostree = deployment.strip("/") != "" if rootfs is not None else _looks_like_ostree(Path(tree or "."), boot)
    where = _choose_where(opts)
    cached: _Cached | None = None
    if where is Where.APPLIANCE and rootfs is None:
        raise InvalidOptions("the appliance runs dracut on a rootfs image: give rootfs, not tree")
    progress = progress or Progress()
    with tempfile.TemporaryDirectory(prefix=".liveimg-dracut-", dir=workdir or out.parent) as tmp:
        work = Path(tmp)
        raw = work / "initramfs.cpio"
        with progress.stage("dracut", unit="steps") as st:
            if where is Where.APPLIANCE:
                ran = run_dracut_in_appliance(
                    Path(rootfs or "."), deployment, kver=kver, options=opts, ostree=ostree, raw_output=raw,
                    log_path=logfile, opener=appliance,
                )  # fmt: skip
                plan, dracut_seconds = ran.plan, ran.seconds
            else:
                if rootfs is not None:
                    extracted = extract_tree(rootfs, deployment, work / "tree")
                else:
                    extracted = ExtractedTree(Path(tree or "."), Path(boot) if boot else None, "/", 0.0)
                st.advance(1)
                plan = _prepare_tree(extracted, kver=kver, ostree=ostree, opts=opts, raw=raw)
                cached = _Cached(cache, extracted, _key_parts(kver, plan, opts, where)) if cache else None
                if cached is not None and cached.take(out, logfile):
                    return _reused(out, kver=kver, opts=opts, cached=cached, plan=plan, logfile=logfile, where=where,
                                   seconds=time.monotonic() - started)  # fmt: skip
                dracut_seconds = _run_in_sandbox(extracted, plan=plan, opts=opts, raw=raw, logfile=logfile, work=work)
            st.advance(1)
            verify_initramfs(raw, plan.modules or plan.required)
            unpacked = unpacked_bytes(raw)
        with progress.stage("compress initramfs", total=raw.stat().st_size, unit="bytes") as st:
            packed = cached.compress(raw, out, opts) if cached is not None else _compress(raw, out, opts)
            st.update(raw.stat().st_size)
        if cached is not None:
            cached.store(raw, reuse.Entry(plan.modules, plan.left_out, unpacked))
    seconds = time.monotonic() - started
    for name, why in plan.left_out:
        log.info("dracut module %s left out: %s", name, why)
    return Initrd(
        path=out,
        kver=kver,
        compression=opts.compression,
        size=packed.size,
        modules=plan.modules,
        left_out=plan.left_out,
        log=logfile,
        seconds=seconds,
        dracut_seconds=dracut_seconds,
        compress_seconds=packed.seconds,
        compression_reused=packed.reused,
        unpacked=unpacked,
        where=where,
        argv=plan.argv,
    )


def _looks_like_ostree(tree: Path, boot: str | os.PathLike[str] | None) -> bool:
    return boot is not None or (tree / "ostree").is_symlink() or (tree / "usr/lib/ostree-boot").is_dir()


#: What the guest's dracut may use besides time (``DracutOptions.timeout``): it runs a few dozen
#: processes at once, writes its staging tree and image (a few hundred MiB) below /var/tmp and
#: the image into the output directory.
DRACUT_LIMITS = sandbox.Limits(tasks=512, memory=4 * sandbox.GiB, file_size=4 * sandbox.GiB,
                               disk=8 * sandbox.GiB, tmpfs=256 * sandbox.MiB)  # fmt: skip


def _guest(extracted: ExtractedTree) -> GuestTree:
    """The tree as dracut sees it, read safely: the deployment, with the physical /boot at /boot."""
    root = HostFS(extracted.root.resolve(), label="the guest tree")
    if extracted.boot is None:
        return GuestTree(root)
    return GuestTree(MergedFS({"/": root, "/boot": HostFS(extracted.boot, label="the guest's /boot")}))


def _key_parts(kver: str, plan: Plan, opts: DracutOptions, where: Where) -> reuse.KeyParts:
    level = opts.level if opts.level is not None else DEFAULT_LEVELS.get(opts.compression)
    return reuse.KeyParts(kver=kver, argv=plan.argv, compression=str(opts.compression), level=level,
                          compress_command=fingerprint(opts.compression, level or 0), where=str(where),
                          source_date_epoch=os.environ.get("SOURCE_DATE_EPOCH"))  # fmt: skip


def _compress(raw: Path, out: Path, opts: DracutOptions) -> Compressed:
    return compress_initramfs(raw, out, opts.compression, level=opts.level, threads=opts.threads, timeout=opts.timeout)


class _Cached:
    """The build cache for one initramfs: its key, computed once the tree is ready."""

    def __init__(self, cache: Cache, extracted: ExtractedTree, parts: reuse.KeyParts) -> None:
        self.cache = cache
        self.tree = _guest(extracted)
        self.compressor = parts.compress_command
        self.key = reuse.cache_key(self.tree, parts)
        self.entry: reuse.Entry | None = None
        self.packed_key = ""

    def take(self, out: Path, logfile: Path) -> bool:
        """Put the cached initramfs at ``out`` if there is one whose record holds; whether it did."""

        def copy(tmp: Path) -> bool:
            self.entry = reuse.lookup(self.cache, self.key, self.tree, tmp)
            return self.entry is not None

        if not _from_cache(out, copy):
            return False
        logfile.write_text(f"liveimg: dracut not run: the initramfs comes from the build cache ({self.key})\n")
        return True

    def compress(self, raw: Path, out: Path, opts: DracutOptions) -> Compressed:
        """dracut's archive ``raw`` compressed into ``out``: taken from the cache when it holds the
        compressed form of the same bytes (dracut ran, but copied what it copied last time), else
        compressed and stored there."""
        started = time.monotonic()
        self.packed_key = reuse.packed_key(raw, self.compressor)
        if _from_cache(out, lambda tmp: reuse.lookup_packed(self.cache, self.packed_key, tmp)):
            log.info("dracut's archive is the same bytes as a cached one: its compressed form reused")
            return Compressed(out, opts.compression, out.stat().st_size, raw.stat().st_size,
                              time.monotonic() - started, "the build cache", reused=True)  # fmt: skip
        packed = _compress(raw, out, opts)
        if not reuse.store_packed(self.cache, self.packed_key, out):
            self.packed_key = ""
        return packed

    def store(self, raw: Path, entry: reuse.Entry) -> None:
        stored = bool(self.packed_key) and reuse.store(
            self.cache, self.key, tree=self.tree, raw=raw, packed_key=self.packed_key, entry=entry
        )
        if not stored:
            log.info("the initramfs could not be stored in the build cache %s", self.cache.root)


def _from_cache(out: Path, copy: Callable[[Path], bool]) -> bool:
    """Put at ``out`` (replaced whole, mode 0644 as :func:`compress_initramfs` leaves it) what
    ``copy`` writes into a scratch file beside it; False, ``out`` untouched, if ``copy`` finds nothing."""
    tmp = temp_beside(out, ".cached")
    try:
        if not copy(tmp):
            return False
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _reused(out: Path, *, kver: str, opts: DracutOptions, cached: _Cached, plan: Plan, logfile: Path, where: Where,
            seconds: float) -> Initrd:  # fmt: skip
    entry = cached.entry or reuse.Entry(plan.modules, plan.left_out)
    for name, why in entry.left_out:
        log.info("dracut module %s left out: %s", name, why)
    log.info("initramfs of %s reused from the build cache: dracut not run", kver)
    return Initrd(path=out, kver=kver, compression=opts.compression, size=out.stat().st_size, modules=entry.modules,
                  left_out=entry.left_out, log=logfile, seconds=seconds, dracut_seconds=0.0, compress_seconds=0.0,
                  where=where, argv=plan.argv, reused=True, compression_reused=True,
                  unpacked=entry.unpacked)  # fmt: skip


#: Where :func:`_run_in_sandbox` mounts something over the tree (the physical /boot aside).
MOUNT_POINTS = ("/proc", "/dev", "/sys", "/run", "/tmp", "/var/tmp")


def _prepare_tree(extracted: ExtractedTree, *, kver: str, ostree: bool, opts: DracutOptions, raw: Path) -> Plan:
    """dracut's plan, and the tree made ready for it (mount points, the --dracut-conf copy)."""
    root = extracted.root.resolve()
    if not root.is_dir():
        raise InvalidOptions(f"guest tree {root} is not a directory")
    plan = plan_dracut(
        GuestTree(HostFS(root, label="the guest tree")),
        kver=kver,
        ostree=ostree,
        options=opts,
        output=f"{OUT_DIR}/{raw.name}",
    )
    if ostree:
        # lorax creates these too: /root and /tmp point there on ostree systems, and dracut
        # copies /root into the initramfs (Atomic layout: root -> var/roothome, tmp -> sysroot/tmp).
        for needed in ("/var/roothome", "/sysroot/tmp"):
            guest_mkdirs(root, needed)
    if opts.dracut_conf is not None and plan.conf_name:
        write_in_tree(root, "/etc/dracut.conf.d", plan.conf_name, opts.dracut_conf.read_bytes())
    # The sandbox's mount points (:func:`_run_in_sandbox`), made now rather than when it starts: the
    # initramfs cache reads the tree before dracut on a hit and after it when storing, and both
    # must see the same tree (an image without /var/tmp would otherwise never hit).
    for point in (*MOUNT_POINTS, *(("/boot",) if extracted.boot is not None else ())):
        guest_mkdirs(root, point)
    return plan


def _run_in_sandbox(
    extracted: ExtractedTree, *, plan: Plan, opts: DracutOptions, raw: Path, logfile: Path, work: Path
) -> float:
    root = extracted.root.resolve()
    outdir = work / "out"
    vartmp = work / "var-tmp"
    outdir.mkdir()
    vartmp.mkdir()
    os.chmod(vartmp, 0o1777)
    sandbox.hand_over(outdir, vartmp)
    mounts: list[Bind | Tmpfs] = [
        Tmpfs("/run"),
        Bind(outdir, OUT_DIR),
        Bind(vartmp, "/var/tmp"),
        Tmpfs("/tmp", "mode=1777"),
    ]
    if extracted.boot is not None:
        mounts.append(Bind(extracted.boot, "/boot", readonly=True))
    logfile.unlink(missing_ok=True)
    log.info("running %s", " ".join(plan.argv))
    # dracut (059 and dracut-ng) skips mknod with this set; add_device_nodes adds the nodes.
    env = {"DRACUT_NO_MKNOD": "1"}
    limits = dataclasses.replace(DRACUT_LIMITS, seconds=opts.timeout)
    try:
        result = run_in_sandbox(root, plan.argv, log_path=logfile, mounts=mounts, env=env, limits=limits)
    except ToolTimeout:
        raise ToolTimeout(plan.argv, opts.timeout, log_tail(logfile, 20)) from None
    check_sandbox_result(result, plan.argv, what="dracut")
    take_output(outdir, raw.name, raw)
    added = add_device_nodes(raw)
    if added:
        log.info("added the device nodes dracut creates when it runs as real root: %s", ", ".join(added))
    return result.seconds


def write_in_tree(root: Path, directory: str, name: str, data: bytes) -> Path:
    """Write the new file ``directory/name`` into the guest tree ``root``, replacing what the guest
    had there (a link to a host file included) without following anything: the directory is
    resolved inside the tree (:func:`guest_mkdirs`), the file created ``O_EXCL|O_NOFOLLOW``."""
    if "/" in name or name in ("", ".", ".."):
        raise InvalidOptions(f"{name!r} is not a file name")
    parent = guest_mkdirs(root, directory)
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise InvalidImage(f"{directory}/{name} in the guest tree is a directory") from None
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    finally:
        os.close(dfd)
    return parent / name


def take_output(outdir: Path, name: str, dest: Path) -> None:
    """Move what a sandboxed program left as ``outdir/name`` to ``dest`` -- a regular file, once
    linked, or an :class:`InvalidImage` (a link left there would make liveimg write elsewhere)."""
    dfd = os.open(outdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise HostError(f"dracut succeeded but wrote no {name}") from None
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise InvalidImage(f"dracut's output {name} is not a plain file (a link or a hard link): refused")
        os.rename(name, dest, src_dir_fd=dfd)
    finally:
        os.close(dfd)
    moved = os.lstat(dest)
    if (moved.st_dev, moved.st_ino) != (st.st_dev, st.st_ino):
        raise InternalError(f"{dest} changed while it was moved")
    sandbox.take_back(dest)


#: The nodes dracut makes with mknod when it runs as real root (dracut.sh; mode from its umask
#: 022).  In the sandbox mknod is not allowed, so they are added to the archive instead.
DEVICE_NODES: tuple[tuple[str, int, int], ...] = (
    ("dev/null", 1, 3),
    ("dev/kmsg", 1, 11),
    ("dev/console", 5, 1),
    ("dev/random", 1, 8),
    ("dev/urandom", 1, 9),
)


def add_device_nodes(raw: Path) -> tuple[str, ...]:
    """Put :data:`DEVICE_NODES` missing from the main archive of ``raw`` into it, in place of its trailer.

    The result is one archive again, as dracut writes it as root, so every reader (the kernel,
    lsinitrd, GNU cpio) sees the nodes.
    """
    start, _end = plain_segments(raw)[-1]
    index = newc_index(raw, start)
    have = set(index.names)
    missing = [(path, major, minor) for path, major, minor in DEVICE_NODES if path not in have]
    if not missing:
        return ()
    entries = [cpio.Entry(path, cpio.Kind.CHAR, 0o644, rdev=(major, minor)) for path, major, minor in missing]
    if "dev" not in have:
        entries.append(cpio.directory("dev"))
    with open(raw, "r+b") as f:
        f.truncate(index.trailer_at)
        f.seek(index.trailer_at)
        cpio.write_newc(entries, f, parents=False, first_ino=index.max_ino + 1)
    return tuple(path for path, _, _ in missing)
