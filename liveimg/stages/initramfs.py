"""The initramfs stage: the live initramfs, built by the image's own dracut (:mod:`liveimg.dracut`).

The dracut stage (:mod:`liveimg.stages.dracut`) started it in the background while the pack
stage wrote the live file; this one waits for it.  Appended to it then, in one archive: the
layout's hooks (:attr:`~liveimg.layouts.Layout.hooks`), and liveimg's livenetroot with the
live file's size and sha256 (:mod:`liveimg.liveverify`) and the build's RAM floor
(:mod:`liveimg.ramfloor`), and for an ``nbd://`` URL its livenbdroot (:mod:`liveimg.livenbd`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from liveimg import livenbd, liveverify, ramfloor
from liveimg.dracut import EmbeddedFile, append_cpio, hook_dir
from liveimg.dracut.initramfs import Initramfs, Source, opened
from liveimg.manifest import sha256_file

if TYPE_CHECKING:
    from liveimg.context import Build
    from liveimg.layouts import Hook


def run(ctx: Build) -> None:
    """The initramfs: dracut's (waited for), with the live file's checks and the layout's hooks appended."""
    ctx.initrd = ctx.dracut_job.result()
    with ctx.stage("initramfs"):
        live = Path(ctx.live.path)
        expected = None
        if ctx.options.verify:
            ctx.digests[live.resolve()] = digest = sha256_file(live)
            expected = (live.stat().st_size, digest)
        # Read once: every reader below would otherwise decompress the whole initramfs again.
        with Initramfs(ctx.initrd.path) as ird:
            # dracut's initramfs as unpacked at boot (what is appended below is a few KiB).
            unpacked = ctx.initrd.unpacked if ctx.initrd.unpacked is not None else ramfloor.unpacked_bytes(ird)
            ctx.ram_floor = ramfloor.RamFloor(live.stat().st_size, unpacked)
            files = liveverify.initramfs_files(ird, ctx.txn.work / "liveverify", expected, ctx.ram_floor)
            if livenbd.wanted(ctx.options.pxe.url):
                files += livenbd.initramfs_files(ird, ctx.txn.work / "livenbd", ctx.options.verify)
            add_hooks(ird, ctx.layout.hooks, ctx.txn.work, files)


def add_hooks(initramfs: Source, hooks: Sequence[Hook], workdir: Path, files: Sequence[EmbeddedFile] = ()) -> None:
    """Append ``hooks`` to ``initramfs``, each in the directory where its dracut keeps that hook's
    scripts, with ``files`` (nothing appended if both are empty).  ``initramfs``: a path, or the
    initramfs open (:func:`~liveimg.dracut.initramfs.opened`), whose file is replaced."""
    with opened(initramfs) as ird:
        embedded = list(files)
        for hook in hooks:
            script = workdir / hook.name
            script.write_text(hook.script)
            embedded.append(EmbeddedFile(script, f"/{hook_dir(ird, hook.point)}/{hook.name}", 0o755))
        if not embedded:
            return
        tmp = ird.path.with_name(f".{ird.path.name}.tmp")
        try:
            append_cpio(ird, tmp, files=embedded)
            tmp.replace(ird.path)
        finally:
            tmp.unlink(missing_ok=True)
