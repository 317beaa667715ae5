"""The dracut stage: the live initramfs, built by the image's own dracut (:mod:`liveimg.dracut`).

The layout's hooks (:attr:`~liveimg.layouts.Layout.hooks`) are appended to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from liveimg.dracut import EmbeddedFile, append_cpio, build_initramfs, hook_dir

if TYPE_CHECKING:
    from liveimg.context import Build
    from liveimg.layouts import Hook


def run(ctx: Build) -> None:
    info = ctx.info
    kver = info.kernel.version
    with ctx.stage("dracut"):
        ctx.initrd = build_initramfs(
            kver=kver,
            output=ctx.txn.out / f"initramfs-{kver}.img",
            rootfs=ctx.rootfs.path,
            deployment=info.deployment.path if info.deployment is not None else "/",
            options=ctx.options.dracut,
            workdir=ctx.txn.work,
            log_path=ctx.txn.work / "dracut.log",
            ostree=info.ostree,
            progress=ctx.progress,
        )
        if ctx.layout.hooks:
            add_hooks(ctx.initrd.path, ctx.layout.hooks, ctx.txn.work)


def add_hooks(initramfs: Path, hooks: Sequence[Hook], workdir: Path) -> None:
    """Append ``hooks`` to ``initramfs``, each in the directory where its dracut keeps that hook's scripts."""
    files = []
    for hook in hooks:
        script = workdir / hook.name
        script.write_text(hook.script)
        files.append(EmbeddedFile(script, f"/{hook_dir(initramfs, hook.point)}/{hook.name}", 0o755))
    tmp = initramfs.with_name(f".{initramfs.name}.tmp")
    try:
        append_cpio(initramfs, tmp, files=files)
        tmp.replace(initramfs)
    finally:
        tmp.unlink(missing_ok=True)
