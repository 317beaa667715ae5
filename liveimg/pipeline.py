"""The whole pipeline: a disk image in, live PXE artifacts out.

``build(image, outdir, options)`` runs the stages in order, each taking the typed artifacts
of the ones before it::

    guest     liveimg.guest.open_guest / Guest.inspect  -> ImageInfo
    rootfs    liveimg.rootfs.build_rootfs               -> RootfsImage   (LiveOS/rootfs.img)
    squashfs  liveimg.squashfs.write_squashfs_file      -> SquashfsResult (live-rootfs.squashfs.img)
      or erofs  liveimg.erofs.pack_file                 -> ErofsResult    (live-rootfs.erofs.img)
    dracut    liveimg.dracut.build_initramfs            -> Initrd        (initramfs-<kver>.img)
    pxe       liveimg.pxe.write_pxe                     -> PxeResult     (PXE_CONFIG, configs, seed)

then writes ``manifest.json``.  OUTDIR is a transaction (:mod:`liveimg.outdir`): everything
is built in a staging directory beside it and swapped into place at the end in one atomic
step, so a failed or interrupted build (:mod:`liveimg.cancel`) leaves OUTDIR as it was.
Each stage runs under :meth:`~liveimg.outdir.OutdirTransaction.stage`, which turns a full
disk into a :class:`~liveimg.errors.HostError` naming the directory and the stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from liveimg import cancel, e2fs, erofs, rootfs
from liveimg._version import __version__
from liveimg.dracut import (
    DracutOptions,
    EmbeddedFile,
    Initrd,
    append_cpio,
    build_initramfs,
    hook_dir,
    plan_dracut,
)
from liveimg.errors import (
    Cancelled,
    HostError,
    InvalidImage,
    InvalidOptions,
    signal_name,
)
from liveimg.fsview import GuestTree
from liveimg.guest import Guest, ImageInfo, open_guest, probe_image
from liveimg.manifest import InputDigest, sha256_file, write_manifest
from liveimg.options import BuildOptions, RootfsType, squashfs_options
from liveimg.outdir import OutdirTransaction
from liveimg.progress import Progress
from liveimg.pxe import LiveBoot, PxeResult, write_pxe
from liveimg.rootfs import RootfsImage
from liveimg.squashfs import (
    SquashfsOptions,
    SquashfsResult,
    write_squashfs_file,
)
from liveimg.squashfs.writer import SquashfsWriter
from liveimg.tarout import tar_into

log = logging.getLogger(__name__)

STAGES = ("guest", "rootfs", "squashfs", "dracut", "pxe")
#: The appliance's RAM during a build, MiB.  It inspects, streams files (the copy method's
#: cp -a, the flat type's tar-out) and reads /boot: none of it needs more.  Its page cache
#: fills whatever it is given, and QEMU's RSS with it: the xfs-on-LVM sample's copy method
#: peaked at 1392 MiB of QEMU with libguestfs's default 1280 MiB, at 386 MiB with 256, in the
#: same time (``$LIBGUESTFS_MEMSIZE`` still wins).
APPLIANCE_MEMORY_MIB = 256


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: OUTDIR, its files, and the manifest written there."""

    outdir: Path
    info: ImageInfo
    rootfs: RootfsImage
    squashfs: SquashfsResult | erofs.ErofsResult  # the live image, whichever its type
    initramfs: Initrd
    pxe: PxeResult
    manifest: dict[str, Any]
    timings: dict[str, float]

    @property
    def kernel(self) -> Path:
        return self.outdir / str(self.manifest["kernel"]["file"])


def _check_input(image: Path) -> Path:
    if not image.exists():
        raise InvalidImage(f"{image}: no such file", hint="give the path of a disk image")
    if not image.is_file() and not image.is_block_device():
        raise InvalidImage(f"{image}: not a regular file")
    if not os.access(image, os.R_OK):
        raise HostError(f"{image}: permission denied (cannot read it)")
    return image.absolute()


def _preflight_dracut(tree: GuestTree, info: ImageInfo, options: DracutOptions) -> None:
    root = tree.subtree(info.deployment.path) if info.deployment is not None else tree
    plan_dracut(root, kver=info.kernel.version, ostree=info.ostree, options=options, output="/run/initramfs.cpio")


def _preflight_erofs(tree: GuestTree, info: ImageInfo, opts: BuildOptions) -> erofs.ErofsOptions:
    """The mkfs.erofs options, once the image is known to boot an EROFS live image."""
    host = erofs.host_tool()  # missing erofs-utils: said now, not after the rootfs stage
    root = tree.subtree(info.deployment.path) if info.deployment is not None else tree
    support = erofs.guest_support(root, info.kernel.version)
    erofs.check_guest(support, info.kernel.version)
    compressor = erofs.choose_compressor(opts.compression, support, host)
    return erofs.ErofsOptions.from_compress_args(compressor, opts.compress_args)


def pack_guest_tree(guest: Guest, dest: Path, options: SquashfsOptions, progress: Progress) -> SquashfsResult:
    """The flat rootfs type: the physical root (``/boot`` merged) itself in the squashfs.

    dracut uses a flat squashfs as the root under an overlay when it has ``/proc`` (dracut
    before 110) or ``/usr`` or ``/ostree`` (dracut-ng): an ostree physical root gets an
    empty ``/proc`` so that both recognise it.
    """
    boot_mp = guest.boot_mountpoint
    with SquashfsWriter(dest, options, progress) as writer:
        skip = frozenset({"boot"}) if boot_mp is not None else frozenset()
        tar_into(guest.g, guest.root_mountpoint, writer, prefix="", skip=skip)
        if boot_mp is not None:
            tar_into(guest.g, boot_mp, writer, prefix="boot", skip=frozenset())
        if not guest.tree().lexists("/proc"):
            writer.add_directory("proc", mode=0o555)
        return writer.finish()


#: dracut up to 059 (and early dracut-ng), with systemd in the initramfs, never creates the upper
#: and work directories of a temporary OverlayFS root (dracutdevs/dracut#1820, dracut-ng#431),
#: so a flat squashfs root fails with "overlayfs: failed to resolve '/run/overlayfs'".
OVERLAYFS_HOOK = """\
# liveimg: the directories a temporary OverlayFS live root needs (see dracut issue 1820)
mkdir -m 0755 -p /run/overlayfs /run/ovlwork
"""


def _add_overlayfs_hook(initramfs: Path, workdir: Path) -> None:
    """Append the pre-mount hook that works around dracut's missing OverlayFS directories."""
    script = workdir / "liveimg-overlayfs.sh"
    script.write_text(OVERLAYFS_HOOK)
    hooks = hook_dir(initramfs, "pre-mount")
    tmp = initramfs.with_name(f".{initramfs.name}.tmp")
    try:
        append_cpio(initramfs, tmp, files=[EmbeddedFile(script, f"/{hooks}/10-liveimg-overlayfs.sh", 0o755)])
        tmp.replace(initramfs)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_kernel(rootfs_img: Path, guest_path: str, dest: Path, workdir: Path) -> None:
    """Copy the kernel out of rootfs.img (where /boot is merged) without mounting it."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    e2fs.dump_file(rootfs_img, guest_path, tmp)
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise InvalidImage(f"the kernel {guest_path} is missing or empty in the image")
    tmp.chmod(0o644)
    tmp.rename(dest)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - started, 3)


def _check_options(opts: BuildOptions) -> BuildOptions:
    """Options refused, or completed, before anything is touched."""
    if opts.rootfs_type is RootfsType.EROFS:
        # Said before the appliance starts: no erofs-utils, or a compression erofs does not have.
        erofs.host_tool()
        erofs.compressor_name(opts.compression)
        # dracut-ng loads erofs itself; naming the driver also serves dracuts that mount with -t auto.
        dracut_opts = dataclasses.replace(opts.dracut, extra_args=(*opts.dracut.extra_args, "--add-drivers", "erofs"))
        opts = dataclasses.replace(opts, dracut=dracut_opts)
    if opts.rootfs_type is RootfsType.SQUASHFS and opts.squashfs_backend != "native":
        raise InvalidOptions(
            "the squashfs rootfs type streams the tree into liveimg's own writer: use --squashfs-backend native"
        )
    return opts


def build(
    image: Path | str,
    outdir: Path | str,
    options: BuildOptions | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build live PXE artifacts from ``image`` into ``outdir``.

    OUTDIR is a transaction (:mod:`liveimg.outdir`): built beside it, swapped in at the end in
    one atomic step, one build at a time.  A failure raises a
    :class:`~liveimg.errors.LiveImgError` subclass that says what is wrong (a full disk is a
    :class:`~liveimg.errors.HostError` naming the directory and the stage); OUTDIR is then as
    it was, and no temporary file is left behind.

    SIGINT, SIGTERM and SIGHUP stop it the same way (:mod:`liveimg.cancel`; called from the
    main thread, it handles those that have their default disposition, and restores them
    after): its programs are killed, its staging directory removed, and
    :class:`~liveimg.errors.Cancelled` raised -- whose message says whether OUTDIR was
    already replaced, for a signal after the swap does not undo it.
    """
    opts = _check_options(options or BuildOptions())
    progress = progress or Progress()
    txn: OutdirTransaction | None = None
    with cancel.handling():
        try:
            image = _check_input(Path(image))
            txn = OutdirTransaction(
                Path(outdir), force=opts.force, workdir=opts.workdir, keep_workdir=opts.keep_workdir
            )
            try:
                return _build(image, txn, opts, progress)
            finally:
                txn.close()
        except BaseException as exc:
            signum = cancel.requested()
            if signum is None and isinstance(exc, KeyboardInterrupt):
                signum = signal.SIGINT
            if signum is None:
                raise
            where = Path(outdir).absolute()
            if txn is not None and txn.committed:
                message = f"interrupted by {signal_name(signum)} once the build was complete: {where} holds it"
            else:
                message = f"interrupted by {signal_name(signum)}: {where} left as it was"
            log.debug("cancelled: %s", exc)
            raise Cancelled(signum, message) from (
                None if isinstance(exc, cancel.Interrupt | KeyboardInterrupt) else exc
            )


def _build(image: Path, txn: OutdirTransaction, opts: BuildOptions, progress: Progress) -> BuildResult:
    timings: dict[str, float] = {}
    started = time.monotonic()
    with txn.stage("appliance"):
        fmt = probe_image(image)  # the input, opened once: hashed, sized and given to libguestfs
        hasher = InputDigest(fmt)
        rootfs_dir = txn.work / "LiveOS"
        rootfs_dir.mkdir()
        # A sparse, writable drive for the appliance, in case the root must be copied file by file
        # (libguestfs cannot add a drive after launch): it costs nothing unless written.
        drive = txn.work / "appliance-rootfs.img"
        with open(drive, "wb") as f:
            f.truncate(rootfs.work_drive_size(fmt.virtual_size, opts.rootfs))
    with (
        txn.stage("appliance"),
        open_guest(
            fmt,
            accel=opts.accel,
            work_drives=[drive],
            memsize=APPLIANCE_MEMORY_MIB,
            progress=progress,
            tmpdir=txn.work,
        ) as guest,
    ):
        with txn.stage("guest"), _timed(timings, "guest"), progress.stage("guest"):
            info = guest.inspect(deployment=opts.deployment, kernel=opts.kernel)
        for warning in info.warnings:
            log.warning("%s", warning)
        pack_opts: SquashfsOptions | erofs.ErofsOptions
        with txn.stage("guest"):
            # Refuse an image whose dracut cannot build a live initramfs before the long stages.
            _preflight_dracut(guest.tree(), info, opts.dracut)
            if opts.rootfs_type is RootfsType.EROFS:
                pack_opts = _preflight_erofs(guest.tree(), info, opts)
            else:
                pack_opts = squashfs_options(opts, info.arch)
        with txn.stage("rootfs"), _timed(timings, "rootfs"):
            rootfs_img = rootfs.build_rootfs(
                guest, info, rootfs_dir / "rootfs.img", opts.rootfs, workdir=txn.work,
                work_drive=(drive, guest.work_devices[0]), progress=progress,
            )  # fmt: skip
        live_dest = txn.out / opts.rootfs_type.file_name
        packed: SquashfsResult | erofs.ErofsResult
        if opts.rootfs_type is RootfsType.SQUASHFS:
            assert isinstance(pack_opts, SquashfsOptions)
            # The tree comes from the appliance; rootfs.img above still feeds the dracut stage.
            with txn.stage("squashfs"), _timed(timings, "squashfs"):
                packed = pack_guest_tree(guest, live_dest, pack_opts, progress)
    # The appliance is closed before the long host-side stages, to give them its memory.
    if isinstance(pack_opts, erofs.ErofsOptions):
        with txn.stage("erofs"), _timed(timings, "erofs"):
            packed = erofs.pack_file(rootfs_img.path, live_dest, "LiveOS/rootfs.img", pack_opts, progress)
    elif opts.rootfs_type is RootfsType.SQUASHFS_EXT4:
        with txn.stage("squashfs"), _timed(timings, "squashfs"):
            packed = write_squashfs_file(
                rootfs_img.path, live_dest, "LiveOS/rootfs.img", pack_opts, progress,
                backend=opts.squashfs_backend,
            )  # fmt: skip
    result = _finish(
        image=image, info=info, rootfs_img=rootfs_img, packed=packed, pack_opts=pack_opts, opts=opts,
        txn=txn, timings=timings, progress=progress, hasher=hasher,
    )  # fmt: skip
    txn.commit()
    timings["total"] = round(time.monotonic() - started, 3)
    log.info("built %s in %.1f s", result.outdir, timings["total"])
    return result


def _finish(
    *,
    image: Path,
    info: ImageInfo,
    rootfs_img: RootfsImage,
    packed: SquashfsResult | erofs.ErofsResult,
    pack_opts: SquashfsOptions | erofs.ErofsOptions,
    opts: BuildOptions,
    txn: OutdirTransaction,
    timings: dict[str, float],
    progress: Progress,
    hasher: InputDigest,
) -> BuildResult:
    out = txn.out
    kernel = info.kernel
    kver = kernel.version
    deployment = info.deployment
    with txn.stage("dracut"), _timed(timings, "dracut"):
        initrd = build_initramfs(
            kver=kver,
            output=out / f"initramfs-{kver}.img",
            rootfs=rootfs_img.path,
            deployment=deployment.path if deployment is not None else "/",
            options=opts.dracut,
            workdir=txn.work,
            log_path=txn.work / "dracut.log",
            ostree=info.ostree,
            progress=progress,
        )
        if opts.rootfs_type is RootfsType.SQUASHFS:
            _add_overlayfs_hook(initrd.path, txn.work)
        kernel_name = f"vmlinuz-{kver}"
        _copy_kernel(rootfs_img.path, kernel.path, out / kernel_name, txn.work)
    input_sha256 = hasher.result()
    title = info.os_release.get("PRETTY_NAME") or info.os_release.get("NAME") or "Linux"
    boot = LiveBoot(
        kernel=kernel_name,
        initramfs=initrd.path.name,
        kver=kver,
        title=title,
        ostree_arg=deployment.ostree_arg if deployment is not None else None,
        image_args=tuple(deployment.options) if deployment is not None else (),
        squashfs=opts.rootfs_type.file_name,
        seed_id=input_sha256,
    )
    with txn.stage("pxe"), _timed(timings, "pxe"), progress.stage("pxe"):
        pxe_result = write_pxe(out, boot, opts.pxe)
    with txn.stage("manifest"):
        manifest = _manifest(
            image=image, input_sha256=input_sha256, info=info, opts=opts, packed=packed, pack_opts=pack_opts,
            rootfs_img=rootfs_img,
            initrd=initrd, boot=boot, pxe_result=pxe_result, out=out, timings=timings,
        )  # fmt: skip
        write_manifest(out, manifest)
    return BuildResult(
        outdir=txn.outdir,
        info=info,
        rootfs=rootfs_img,
        squashfs=packed,
        initramfs=initrd,
        pxe=pxe_result,
        manifest=manifest,
        timings=timings,
    )


def _packer_manifest(
    packed: SquashfsResult | erofs.ErofsResult, pack_opts: SquashfsOptions | erofs.ErofsOptions, opts: BuildOptions
) -> dict[str, Any]:
    """The manifest's ``squashfs`` or ``erofs`` section: how the live image was packed."""
    if isinstance(packed, erofs.ErofsResult):
        return {"erofs": {"tool": f"mkfs.erofs {packed.tool_version}", **_jsonable(asdict(packed.options))}}
    return {"squashfs": {"backend": opts.squashfs_backend, **_jsonable(asdict(pack_opts))}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _manifest(
    *,
    image: Path,
    input_sha256: str,
    info: ImageInfo,
    opts: BuildOptions,
    packed: SquashfsResult | erofs.ErofsResult,
    pack_opts: SquashfsOptions | erofs.ErofsOptions,
    rootfs_img: RootfsImage,
    initrd: Initrd,
    boot: LiveBoot,
    pxe_result: PxeResult,
    out: Path,
    timings: dict[str, float],
) -> dict[str, Any]:
    artifacts = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        artifacts[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    deployment = info.deployment
    return {
        "liveimg": {"version": __version__},
        "input": {"path": str(image), "sha256": input_sha256, "format": info.format, "size": info.virtual_size},
        "os": {
            "id": info.os_release.get("ID"),
            "name": info.os_release.get("PRETTY_NAME") or info.os_release.get("NAME"),
            "version_id": info.os_release.get("VERSION_ID"),
            "arch": info.arch,
        },
        "deployment": None
        if deployment is None
        else {
            "osname": deployment.osname,
            "checksum": deployment.checksum,
            "serial": deployment.serial,
            "ostree": deployment.ostree_arg,
            "path": deployment.path,
        },
        "kernel": {"version": boot.kver, "file": boot.kernel},
        "initramfs": {
            "file": boot.initramfs,
            "compression": str(initrd.compression),
            "modules": list(initrd.modules),
            "left_out": [{"module": m, "why": why} for m, why in initrd.left_out],
            "built_in": str(initrd.where),
        },
        "rootfs": {
            "file": opts.rootfs_type.file_name,
            "type": str(opts.rootfs_type),
            "image": "LiveOS/rootfs.img" if opts.rootfs_type.holds_rootfs_img else None,
            "method": str(rootfs_img.method),
            "size": rootfs_img.size,
            "allocated": rootfs_img.allocated,
            "label": rootfs_img.label,
        },
        **_packer_manifest(packed, pack_opts, opts),
        # What the pxe stage was given, so that `liveimg boot-test` can write the same configs for its own URL.
        "boot": {
            **_jsonable(asdict(boot)),
            "kernel_args": list(opts.pxe.kernel_args),
            "keep_image_args": opts.pxe.keep_image_args,
            "cloud_init": opts.pxe.cloud_init is not None,
        },
        "kernel_args": list(pxe_result.kernel_args),
        "lorax_args": list(pxe_result.lorax_args),
        "pxe": {"url": opts.pxe.url, "pxe_dir": opts.pxe.pxe_dir},
        "artifacts": artifacts,
        "stages": dict(timings),
        "warnings": list(info.warnings),
    }


__all__ = ["STAGES", "BuildResult", "build"]
