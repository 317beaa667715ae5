"""The efi stage: the UEFI network boot chain the preflight found, copied into OUTDIR (:mod:`liveimg.efi`).

From ``LiveOS/rootfs.img`` like the kernel (or from ``--efi-from DIR``); the pxe stage then
writes ``grub.cfg`` wherever that GRUB reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liveimg.efi import copy_chain

if TYPE_CHECKING:
    from liveimg.context import Build


def run(ctx: Build) -> None:
    chain = ctx.efi_chain
    if chain is None:
        ctx.efi = None
        return
    deployment = ctx.info.deployment
    with ctx.stage("efi"):
        ctx.efi = copy_chain(chain, ctx.txn.out, rootfs_img=ctx.rootfs.path,
                             root=deployment.path if deployment is not None else "/")  # fmt: skip
