"""``manifest.json``: what a build made, from what, and how; the sha256 sums it records.

The manifest is ASCII JSON with sorted keys, so that equal builds give equal files; with
``$SOURCE_DATE_EPOCH`` set it holds no wall-clock time or duration (``stages`` is null: the
stage times are in :class:`~liveimg.context.BuildResult` ``timings`` and the build's last log
line), so two builds of the same input are byte-identical there too.  ``liveimg
boot-test`` reads it back (``boot``: what the pxe stage was given) to write the same boot
configurations for its own URL.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveimg._version import __version__
from liveimg.errors import HostError, InternalError, InvalidImage, InvalidOptions
from liveimg.pxe import EfiBoot, LiveBoot
from liveimg.reproducible import source_date_epoch
from liveimg.staging import AtomicOutput

if TYPE_CHECKING:
    from liveimg.context import Build
    from liveimg.guest import ImageFormat


def describe(ctx: Build) -> dict[str, Any]:
    """The manifest of a build whose artifacts are all in ``ctx.txn.out`` (the manifest itself aside)."""
    out = ctx.txn.out
    artifacts = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        digest = ctx.digests.get(path.resolve()) or sha256_file(path)
        artifacts[rel] = {"size": path.stat().st_size, "sha256": digest}
    info, options, layout = ctx.info, ctx.options, ctx.layout
    boot, initrd, rootfs, pxe = ctx.boot, ctx.initrd, ctx.rootfs, ctx.pxe
    embedded = ctx.embedded if ctx.has("embedded") else None
    deployment = info.deployment
    return {
        "liveimg": {"version": __version__},
        "input": {
            "path": str(ctx.image),
            "sha256": ctx.input_digest.result(),
            "format": info.format,
            "size": info.virtual_size,
        },
        # Who read the image's layout (native: the host's ext reader; appliance: libguestfs), and
        # why the appliance was launched, if it was.
        "guest": {
            "backend": ctx.inspector.backend,
            "inspect": options.inspect,
            "appliance": list(ctx.appliance_reasons),
        },
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
            # Taken from the build cache, dracut not run (liveimg.dracut.reuse): the same bytes as dracut's.
            "reused": initrd.reused,
            # Its compressed form taken from the build cache: dracut ran but wrote the same archive as before.
            "compression_reused": initrd.compression_reused,
            # Whether it checks the live file's size and sha256 before mounting it (liveimg.liveverify).
            "verifies_live": options.verify,
            # Every driver and filesystem (lorax's), or what a live boot needs (liveimg.dracut.plan.SLIM_ARGS).
            "all_drivers": options.dracut.all_drivers or options.dracut.dracut_args is not None,
            # The RAM a network boot needs, computed (liveimg.ramfloor); the initramfs checks it.
            "ram_floor_mib": ctx.ram_floor.need_mib,
            "ram_floor": ctx.ram_floor.manifest(),
        },
        "rootfs": {
            "file": layout.file_name,
            "type": layout.name,
            "image": layout.rootfs_image,
            "method": str(rootfs.method),
            "size": rootfs.size,
            "allocated": rootfs.allocated,
            "label": rootfs.label,
        },
        layout.packer: layout.manifest(ctx),  # how the live file was packed
        # What the pxe stage was given, so that `liveimg boot-test` can write the same configs for its own URL.
        "boot": {
            **jsonable(asdict(boot)),
            "kernel_args": list(options.pxe.kernel_args),
            "keep_image_args": options.pxe.keep_image_args,
            "cloud_init": options.pxe.cloud_init is not None,
        },
        "kernel_args": list(pxe.kernel_args),
        "lorax_args": list(pxe.lorax_args),
        "pxe": {"url": options.pxe.url, "pxe_dir": options.pxe.pxe_dir},
        "iso": ctx.iso.manifest() if ctx.has("iso") else None,
        # --embed-rootfs: the second initrd, the live file's path in it, and the limits it passes.
        "embed": None
        if embedded is None
        else {
            "file": embedded.file,
            "path": embedded.path,
            "size": artifacts[embedded.file]["size"],
            "sha256": artifacts[embedded.file]["sha256"],
            "warnings": list(ctx.embed_warnings),
        },
        # The build cache (liveimg.cache): where, and what each namespace reused (the same for every
        # build from an empty cache; no time in it).
        "cache": None
        if ctx.cache is None
        else {
            "dir": str(ctx.cache.root),
            "namespaces": {ns: stats.to_json() for ns, stats in ctx.cache.stats().items()},
        },
        "artifacts": artifacts,
        # Each stage's wall time, unless the build is to be reproducible (see the module doc).
        "stages": None if source_date_epoch() is not None else dict(ctx.timings),
        "warnings": list(info.warnings),
    }


def jsonable(value: Any) -> Any:
    """``value`` (``asdict`` of options) with paths and enums as JSON has them: strings."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def sha256_file(path: Path) -> str:
    """The sha256 of the file at ``path``, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class InputDigest(threading.Thread):
    """The sha256 of the input, computed beside the appliance's start (it is I/O, they are CPU).

    It reads the input as :func:`~liveimg.guest.probe_image` opened it (``reader_path``), the
    file the probes and libguestfs read: a file put in its place at the same path meanwhile is
    not the one hashed.
    """

    def __init__(self, image: ImageFormat) -> None:
        super().__init__(name="liveimg-sha256", daemon=True)
        self.image = image  # holds the open file for as long as the thread reads it
        self.digest: str | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.digest = sha256_file(Path(self.image.reader_path))
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self) -> str:
        """The hex digest, once the thread is done; :class:`HostError` if the input could not be read."""
        self.join()
        if self.error is not None:
            raise HostError(f"cannot read {self.image.path}: {self.error}")
        if self.digest is None:
            raise InternalError("the input's sha256 thread ended without a digest")
        return self.digest


def write_manifest(outdir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (keys sorted, so that equal builds give equal files), atomically:
    ``liveimg iso`` rewrites it in a finished OUTDIR."""
    path = outdir / "manifest.json"
    # json.dumps escapes every control and non-ASCII character (guest strings included): the
    # file is ASCII JSON whatever the image holds; NaN is not JSON, so it is refused.
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"
    with AtomicOutput(path) as tmp:
        tmp.write_text(text)
    return path


def read_manifest(outdir: Path) -> dict[str, Any]:
    """``outdir``'s ``manifest.json``, checked to name files that are there (a one-line error if not)."""
    path = outdir / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidOptions(f"{outdir} has no manifest.json", hint="give the OUTDIR of `liveimg build`") from None
    except (OSError, ValueError) as exc:
        raise InvalidImage(f"{path} cannot be read: {exc}") from None
    for key in ("boot", "kernel", "initramfs", "rootfs"):
        if key not in manifest:
            raise InvalidImage(f"{path} has no {key!r}: was it written by this version of liveimg?")
    for name in (manifest["kernel"]["file"], manifest["initramfs"]["file"], manifest["rootfs"]["file"]):
        if "/" in name or not (outdir / name).is_file():
            raise InvalidImage(f"{outdir}: {name} (named in manifest.json) is missing")
    return manifest


def live_boot(manifest: Mapping[str, Any]) -> LiveBoot:
    """What the pxe stage was given (``manifest["boot"]``), checked again as it is read back."""
    fields = {f.name for f in dataclasses.fields(LiveBoot)}
    data = {k: v for k, v in manifest["boot"].items() if k in fields}
    data["image_args"] = tuple(data.get("image_args", ()))
    efi: Mapping[str, Any] | None = data.get("efi")
    if efi is not None:
        data["efi"] = EfiBoot(
            grub=efi["grub"],
            shim=efi.get("shim"),
            configs=tuple(efi.get("configs", ("grub.cfg",))),
            http=bool(efi.get("http", False)),
            source=str(efi.get("source", "")),
        )
    return LiveBoot(**data)


__all__ = ["InputDigest", "describe", "jsonable", "live_boot", "read_manifest", "sha256_file", "write_manifest"]
