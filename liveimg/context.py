"""One build's state, handed from stage to stage: :class:`Build`; and what a build returns: :class:`BuildResult`.

:func:`liveimg.pipeline.build` makes one :class:`Build` and passes it through
:data:`liveimg.pipeline.STAGES`.  What the build was given (the input, the options, the
layout, OUTDIR's transaction, the progress sink) is set when it is made; what the stages make
(the artifacts) is set by each stage in turn and read by the later ones, each one an
:class:`Artifact`: typed, and an :class:`~liveimg.errors.InternalError` naming it when a stage
reads it before the stage that makes it has run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from liveimg.errors import InternalError

if TYPE_CHECKING:
    from liveimg.cache import Cache
    from liveimg.dracut import Initrd
    from liveimg.efi import EfiChain
    from liveimg.embed import Embedded
    from liveimg.fsview import GuestTree
    from liveimg.guest import Guest, ImageFormat
    from liveimg.imageinfo import ImageInfo
    from liveimg.iso import IsoResult
    from liveimg.layouts import Layout, Packed
    from liveimg.manifest import InputDigest
    from liveimg.options import BuildOptions
    from liveimg.outdir import OutdirTransaction
    from liveimg.progress import Progress
    from liveimg.pxe import EfiBoot, LiveBoot, PxeResult
    from liveimg.ramfloor import RamFloor
    from liveimg.rootfs import RootfsImage

T = TypeVar("T")


class Artifact(Generic[T]):
    """A stage's output kept on the :class:`Build`: set by that stage, read by the later ones."""

    def __set_name__(self, owner: type[Build], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, ctx: None, owner: type[Build]) -> Artifact[T]: ...

    @overload
    def __get__(self, ctx: Build, owner: type[Build]) -> T: ...

    def __get__(self, ctx: Build | None, owner: type[Build]) -> Artifact[T] | T:
        if ctx is None:
            return self
        try:
            return cast(T, ctx.__dict__[self.name])
        except KeyError:
            raise InternalError(
                f"the build has no {self.name} yet: a stage reads it before the one that makes it"
            ) from None

    def __set__(self, ctx: Build, value: T) -> None:
        ctx.__dict__[self.name] = value


class Build:
    """One build of ``image`` into OUTDIR: what it was given, and the artifacts its stages made so far.

    ``txn`` is OUTDIR's transaction (:mod:`liveimg.outdir`): stages write OUTDIR's files into
    ``txn.out`` and their temporary files into ``txn.work``.  ``resources`` holds what must be
    closed when the build ends however it ends (the appliance).  ``timings`` has the wall time
    of each timed stage, in seconds (the manifest's ``stages``).  ``cache`` is the build cache
    (:mod:`liveimg.cache`), or None with ``--no-cache``; the pipeline trims it when the build ends.
    """

    # The artifacts, in the order the stages make them.
    input: Artifact[ImageFormat] = Artifact()  # appliance: the input, probed and opened once
    input_digest: Artifact[InputDigest] = Artifact()  # appliance: its sha256, computed meanwhile
    drive: Artifact[Path] = Artifact()  # appliance: the appliance's writable work drive
    guest: Artifact[Guest] = Artifact()  # appliance: the image opened in the appliance
    info: Artifact[ImageInfo] = Artifact()  # guest
    efi_chain: Artifact[EfiChain | None] = Artifact()  # preflight: the UEFI boot chain found, to copy
    rootfs: Artifact[RootfsImage] = Artifact()  # rootfs: LiveOS/rootfs.img
    live: Artifact[Packed] = Artifact()  # pack: the live file, packed by the layout
    initrd: Artifact[Initrd] = Artifact()  # initramfs
    embedded: Artifact[Embedded | None] = Artifact()  # embed: the live file as a second initrd (--embed-rootfs)
    embed_warnings: Artifact[tuple[str, ...]] = Artifact()  # embed: the size limits it passes
    ram_floor: Artifact[RamFloor] = Artifact()  # initramfs: the RAM a network boot needs
    kernel: Artifact[str] = Artifact()  # kernel: its file name in OUTDIR
    efi: Artifact[EfiBoot | None] = Artifact()  # efi: the UEFI network boot chain in OUTDIR
    boot: Artifact[LiveBoot] = Artifact()  # pxe: what the boot configurations were made from
    pxe: Artifact[PxeResult] = Artifact()  # pxe
    iso: Artifact[IsoResult] = Artifact()  # iso, with --iso
    manifest: Artifact[dict[str, Any]] = Artifact()  # manifest

    def __init__(  # noqa: PLR0917
        self,
        image: Path,
        options: BuildOptions,
        layout: Layout,
        txn: OutdirTransaction,
        progress: Progress,
        cache: Cache | None = None,
    ) -> None:
        self.image = image
        self.cache = cache
        self.options = options
        self.layout = layout
        self.txn = txn
        self.progress = progress
        self.timings: dict[str, float] = {}
        # The sha256 of OUTDIR files a stage has hashed already (by resolved path): the manifest
        # reuses them rather than read a live file of hundreds of MiB again.
        self.digests: dict[Path, str] = {}
        self.resources = contextlib.ExitStack()

    def has(self, artifact: str) -> bool:
        """Whether a stage has made ``artifact`` (an attribute name) yet."""
        return artifact in self.__dict__

    @contextlib.contextmanager
    def stage(self, name: str, *, timed: bool = True) -> Iterator[None]:
        """Run (part of) the stage ``name``: a full disk said as such (:meth:`OutdirTransaction.stage`).

        With ``timed``, its wall time is added to ``timings[name]``.
        """
        started = time.monotonic()
        try:
            with self.txn.stage(name):
                yield
        finally:
            if timed:
                self.timings[name] = round(self.timings.get(name, 0.0) + time.monotonic() - started, 3)

    def close_appliance(self) -> None:
        """Shut the appliance down, if it is up: the host-side stages after it get its memory."""
        if self.has("guest"):
            with self.stage("appliance", timed=False):
                self.guest.close()

    def system_tree(self) -> GuestTree:
        """The installed system's tree in the appliance: the chosen deployment's on ostree, else the root's."""
        tree = self.guest.tree()
        deployment = self.info.deployment
        return tree.subtree(deployment.path) if deployment is not None else tree

    def result(self) -> BuildResult:
        """What the build made, once its stages are done (an :class:`InternalError` before)."""
        return BuildResult(outdir=self.txn.outdir, info=self.info, rootfs=self.rootfs, squashfs=self.live,
                           initramfs=self.initrd, pxe=self.pxe, manifest=self.manifest,
                           timings=self.timings)  # fmt: skip


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: OUTDIR, its files, and the manifest written there."""

    outdir: Path
    info: ImageInfo
    rootfs: RootfsImage
    squashfs: Packed  # the live file as its layout's packer made it (a SquashfsResult, an ErofsResult)
    initramfs: Initrd
    pxe: PxeResult
    manifest: dict[str, Any]
    timings: dict[str, float]

    @property
    def kernel(self) -> Path:
        return self.outdir / str(self.manifest["kernel"]["file"])


__all__ = ["Artifact", "Build", "BuildResult"]
