"""The whole pipeline: a disk image in, live PXE artifacts out.

``build(image, outdir, options)`` passes one :class:`~liveimg.context.Build` through
:data:`STAGES`, in order (:mod:`liveimg.stages`, one module each); each reads the artifacts
of the ones before it from the context and adds its own::

    appliance  the input probed and opened once, its sha256 begun; read natively, or the
               appliance launched (later stages launch it when they need it)
    guest      the image inspected: root, /boot, deployment, kernel (ImageInfo)
    preflight  what cannot boot refused before the long stages: dracut's plan, the layout's;
               the UEFI boot chain found
    rootfs     LiveOS/rootfs.img, ext4
    dracut     the image's dracut started on rootfs.img, in the background (liveimg.background)
    pack       the live file, packed by the layout (the squashfs or the erofs stage), meanwhile
    initramfs  initramfs-<kver>.img: dracut's, waited for, the layout's hooks appended, and
               liveimg's livenetroot with the live file's size and sha256 (liveimg.liveverify)
    embed      with --embed-rootfs: live-rootfs.cpio, the live file as a second initrd (liveimg.embed)
    kernel     vmlinuz-<kver>, copied out of rootfs.img (the dracut stage, with initramfs)
    efi        the UEFI network boot chain (shim, network GRUB), copied out of rootfs.img (or --efi-from)
    pxe        PXE_CONFIG, the ready boot configurations, the cloud-init seed
    iso        with --iso: the hybrid live ISO (live.iso)
    manifest   manifest.json

The live layout (``--rootfs-type``) is a class of :mod:`liveimg.layouts`, chosen by name: the
stages call it, they do not know which it is.  OUTDIR is a transaction (:mod:`liveimg.outdir`):
everything is built in a staging directory beside it and swapped into place at the end in
one atomic step, so a failed or interrupted build (:mod:`liveimg.cancel`) leaves OUTDIR as it
was.  Each stage runs under :meth:`~liveimg.context.Build.stage`, which turns a full disk
into a :class:`~liveimg.errors.HostError` naming the directory and the stage.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

from liveimg import cancel, livenbd
from liveimg.cache import Cache, open_cache, open_default_cache
from liveimg.context import Build, BuildResult
from liveimg.errors import Cancelled, HostError, InvalidImage, InvalidOptions, signal_name
from liveimg.layouts import Layout, get_layout
from liveimg.liveverify import DRACUT_INSTALL
from liveimg.options import BuildOptions
from liveimg.outdir import OutdirTransaction
from liveimg.progress import Progress
from liveimg.stages import (
    appliance,
    dracut,
    efi,
    embed,
    guest,
    initramfs,
    iso,
    kernel,
    manifest,
    pack,
    preflight,
    pxe,
    rootfs,
)

log = logging.getLogger(__name__)

Stage = Callable[[Build], None]

#: The stages, in the order they run.
STAGES: tuple[Stage, ...] = (
    appliance.run,
    guest.run,
    preflight.run,
    rootfs.run,
    dracut.run,
    pack.run,
    initramfs.run,
    embed.run,
    kernel.run,
    efi.run,
    pxe.run,
    iso.run,
    manifest.run,
)


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
    opts, layout = _check_options(options or BuildOptions())
    progress = progress or Progress()
    txn: OutdirTransaction | None = None
    with cancel.handling():
        try:
            image = _check_input(Path(image))
            txn = OutdirTransaction(
                Path(outdir), force=opts.force, workdir=opts.workdir, keep_workdir=opts.keep_workdir
            )
            cache: Cache | None = None
            try:
                # After OUTDIR's checks: an OUTDIR that cannot be written is said first, alone.
                cache = build_cache(opts)
                return _run(Build(image, opts, layout, txn, progress, cache=cache))
            finally:
                txn.close()
                if cache is not None:
                    _trim(cache)
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


def _run(ctx: Build) -> BuildResult:
    started, cpu = time.monotonic(), _cpu_seconds()
    with ctx.resources:  # the appliance shut down, the background job stopped, however the stages end
        for stage in STAGES:
            stage(ctx)
    ctx.txn.commit()
    ctx.timings["total"] = round(time.monotonic() - started, 3)
    ctx.cpu_seconds = round(_cpu_seconds() - cpu, 3)
    log.info("built %s in %.1f s, %.1f CPU seconds", ctx.txn.outdir, ctx.timings["total"], ctx.cpu_seconds)
    return ctx.result()


def _cpu_seconds() -> float:
    """User + system time of this process and of the children it has waited for, so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_cache(opts: BuildOptions) -> Cache | None:
    """The build's cache: None with ``cache=False``; a directory the caller named (``cache_dir`` or
    ``$LIVEIMG_CACHE``) must be usable (a :class:`HostError` before anything is touched), the default
    one only may fail, with a warning and no cache."""
    if not opts.cache:
        return None
    if opts.cache_dir is not None:
        return open_cache(opts.cache_dir, opts.cache_max_bytes)
    return open_default_cache(opts.cache_max_bytes)


def _trim(cache: Cache) -> None:
    """Bring the cache under its bound once the build is done; a failure there fails no build."""
    try:
        cache.trim()
    except (OSError, HostError) as exc:
        log.warning("could not trim the build cache %s: %s", cache.root, exc)


def _check_options(opts: BuildOptions) -> tuple[BuildOptions, Layout]:
    """The options, refused or completed before anything is touched, and the layout they choose."""
    layout = get_layout(opts.rootfs_type)
    layout.check(opts)
    opts.efi.check()
    check_embed(opts)
    # The live initramfs's check of the live file needs sha256sum and tee (liveimg.liveverify).
    extra = (*(DRACUT_INSTALL if opts.verify else ()), *layout.dracut_args)
    if livenbd.wanted(opts.pxe.url):  # the live file over NBD: nbd-client and the nbd module
        extra += livenbd.DRACUT_INSTALL
    if extra:
        dracut = dataclasses.replace(opts.dracut, extra_args=(*opts.dracut.extra_args, *extra))
        opts = dataclasses.replace(opts, dracut=dracut)
    return opts, layout


def check_embed(opts: BuildOptions) -> None:
    """``--embed-rootfs`` with what it does not go with refused (:class:`InvalidOptions`).

    Nothing is fetched over HTTP then but a cloud-init seed: ``--url`` says only where that is
    served, and without ``--cloud-init`` it would name a server the boot never asks.  The live
    ISO carries the live file itself, so the two together are refused rather than half-done.
    """
    if not opts.embed_rootfs:
        return
    if opts.iso is not None:
        raise InvalidOptions(
            "--embed-rootfs and --iso cannot be used together",
            hint="the ISO carries the live file itself: build it without --embed-rootfs",
        )
    if opts.pxe.url is not None and opts.pxe.cloud_init is None:
        raise InvalidOptions(
            "--url means nothing with --embed-rootfs: the live file comes with the initramfs",
            hint="leave --url out (it is only where a --cloud-init seed is served)",
        )


def _check_input(image: Path) -> Path:
    if not image.exists():
        raise InvalidImage(f"{image}: no such file", hint="give the path of a disk image")
    if not image.is_file() and not image.is_block_device():
        raise InvalidImage(f"{image}: not a regular file")
    if not os.access(image, os.R_OK):
        raise HostError(f"{image}: permission denied (cannot read it)")
    return image.absolute()


__all__ = ["STAGES", "Stage", "build"]
