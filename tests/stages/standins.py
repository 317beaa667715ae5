"""Stand-ins for what a build needs a real appliance and a real image's dracut for.

With them, ``pipeline.build()`` runs in the unit tier: the appliance stage and the rootfs
stage are replaced (:func:`appliance`, :func:`rootfs`), and so are the image's dracut
(:class:`FakeDracut`, for ``build_initramfs``) and the dracut preflight's plan; every other
stage -- guest, preflight, pack, initramfs (the layout's hooks), kernel, pxe, manifest -- is the
real one.  The real stages run in tests/integration and tests/e2e.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from liveimg import e2fs, pipeline
from liveimg.context import Build
from liveimg.dracut import Compression, DracutOptions, Initrd, Where
from liveimg.dracut import cpio as cpiolib
from liveimg.fsview import GuestTree, HostFS
from liveimg.guest import ImageFormat, InputFile
from liveimg.imageinfo import ImageInfo, Partition
from liveimg.kernels import Kernel
from liveimg.manifest import InputDigest
from liveimg.rootfs import Method, RootfsImage
from liveimg.stages import appliance as appliance_stage
from liveimg.stages import dracut as dracut_stage
from liveimg.stages import preflight
from liveimg.stages import rootfs as rootfs_stage
from tests.support import need

KVER = "6.1.0-9-amd64"
KERNEL = b"MZ a toy kernel\n" * 1024
#: The hook directory a dracut initramfs has, where layouts' hooks go.
PRE_MOUNT = "usr/lib/dracut/hooks/pre-mount"
#: What the stand-in dracut writes: the hook directories liveimg appends to, livenet's
#: livenetroot (which liveimg replaces) and the tools the live image's check needs.
DRACUT_FILES = (
    cpiolib.directory(PRE_MOUNT),
    cpiolib.directory("usr/lib/dracut/hooks/initqueue/timeout"),
    cpiolib.file("usr/sbin/livenetroot", b"#!/bin/sh\n# livenet's\n", 0o755),
    cpiolib.file("usr/bin/sha256sum", b"\x7fELF", 0o755),
    cpiolib.file("usr/bin/tee", b"\x7fELF", 0o755),
)


def image_info(image: Path) -> ImageInfo:
    """A classic (not ostree) image with one kernel in /boot."""
    root = Partition("/dev/sda", "ext4", 8 << 20, number=None, offset=0, length=8 << 20)
    path = f"/boot/vmlinuz-{KVER}"
    kernel = Kernel(KVER, path, None, path, None, in_boot_fs=False, size=len(KERNEL), initramfs_size=None)
    return ImageInfo(
        image=image, format="raw", virtual_size=image.stat().st_size, partition_table=None, partitions=(root,),
        root=root, boot=None, esp=None, os_release={"ID": "toy", "PRETTY_NAME": "Toy Linux 1"}, arch="x86_64",
        ostree=False, deployments=(), deployment=None, kernels=(kernel,), kernel=kernel,
    )  # fmt: skip


class FakeGuest:
    """The appliance as the stages use it once it is up; what happens to it is noted in ``events``."""

    backend = "appliance"

    def __init__(self, info: ImageInfo, events: list[str], root: Path | None = None) -> None:
        self.info = info
        self.events = events
        self.root = root
        self.work_devices = ("/dev/sdb",)

    def inspect(self, *, deployment: str | None, kernel: str | None) -> ImageInfo:
        self.events.append("inspect")
        return self.info

    def tree(self) -> GuestTree:
        if self.root is None:
            raise AssertionError("this stand-in appliance has no tree")
        return GuestTree(HostFS(self.root, label="the guest's tree"))

    def close(self) -> None:
        if "appliance closed" not in self.events:
            self.events.append("appliance closed")

    def __enter__(self) -> FakeGuest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def appliance(events: list[str], files: Mapping[str, bytes]) -> pipeline.Stage:
    """The appliance stage, with the input opened and hashed as the real one does, and no appliance:
    the guest's tree is a host directory holding the kernel, os-release and ``files`` (path: bytes)."""

    def run(ctx: Build) -> None:
        with ctx.stage("appliance", timed=False):
            ctx.input = ImageFormat(ctx.image, "raw", ctx.image.stat().st_size, InputFile(ctx.image))
            ctx.input_digest = InputDigest(ctx.input)
            ctx.drive = ctx.txn.work / "appliance-rootfs.img"
            ctx.drive.touch()
            tree = ctx.txn.work / "tree"
            for path, data in {f"boot/vmlinuz-{KVER}": KERNEL, "etc/os-release": OS_RELEASE, **files}.items():
                (tree / path).parent.mkdir(parents=True, exist_ok=True)
                (tree / path).write_bytes(data)
            fake: Any = FakeGuest(image_info(ctx.image), events, tree)
            ctx.guest = ctx.resources.enter_context(fake)
            ctx.inspector = ctx.guest

    return run


OS_RELEASE = b'ID=toy\nPRETTY_NAME="Toy Linux 1"\n'


def rootfs(ctx: Build) -> None:
    """The rootfs stage: a small ext4 LiveOS/rootfs.img of the guest's tree, made by mkfs.ext4 -d."""
    with ctx.stage("rootfs"):
        tree = ctx.txn.work / "tree"
        (ctx.txn.work / "LiveOS").mkdir()
        image = ctx.txn.work / "LiveOS" / "rootfs.img"
        e2fs.mkfs(image, 64 << 20, label="LiveOS", source=tree)
        size = image.stat().st_size
        ctx.rootfs = RootfsImage(image, size, os.stat(image).st_blocks * 512, size, Method.COPY, "LiveOS", "", True)


class FakeDracut:
    """``build_initramfs`` without the image's dracut: an uncompressed initramfs with dracut's hook directory."""

    def __init__(self) -> None:
        self.options: DracutOptions | None = None

    def __call__(self, *, kver: str, output: Path, options: DracutOptions, **_: Any) -> Initrd:
        self.options = options
        output.write_bytes(cpiolib.newc_bytes(DRACUT_FILES, mtime=0))
        return Initrd(output, kver, Compression.NONE, output.stat().st_size, ("dmsquash-live",), (), output,
                      0.0, 0.0, 0.0, Where.SANDBOX)  # fmt: skip


def use(monkeypatch: pytest.MonkeyPatch, events: list[str], files: Mapping[str, bytes] | None = None) -> FakeDracut:
    """Put the stand-ins in place (the guest's tree holding ``files`` too, path: bytes); the
    returned dracut notes the options it was given."""
    need("mkfs.ext4", "debugfs")  # the stand-in rootfs.img, and the real kernel stage reading it
    fakes = {appliance_stage.run: appliance(events, files or {}), rootfs_stage.run: rootfs}
    monkeypatch.setattr(pipeline, "STAGES", tuple(fakes.get(stage, stage) for stage in pipeline.STAGES))
    monkeypatch.setattr(preflight, "plan_dracut", lambda *args, **kwargs: events.append("dracut planned"))
    dracut = FakeDracut()
    monkeypatch.setattr(dracut_stage, "build_initramfs", dracut)
    return dracut
