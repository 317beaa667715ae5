"""EROFS as the live image's container: ``LiveOS/rootfs.img`` packed by ``mkfs.erofs``.

The ``erofs`` rootfs type has the layout of ``squashfs-ext4`` -- one file,
``LiveOS/rootfs.img``, in a compressed read-only filesystem -- with EROFS in place of
squashfs (lorax names this layout ``erofs-ext4``).  dracut's dmsquash-live mounts it where it
mounts a squashfs, which dracut-ng does since its 2024 releases (dracut-ng pull request 490)
and dracut 059 and older never did; the kernel needs ``CONFIG_EROFS_FS`` and the compressor
(``CONFIG_EROFS_FS_ZIP`` for lz4, ``..._ZIP_LZMA``, ``..._ZIP_DEFLATE``, ``..._ZIP_ZSTD``).
:func:`guest_support` reads all of that from the image, so that :func:`check_guest` refuses
an image that could not boot the result before any long stage runs.

The image is reproducible: all files get one time (``$SOURCE_DATE_EPOCH`` when set, else the
rootfs image's mtime), owner root, and the filesystem UUID is derived from that time and the
packed file's size and name instead of being random.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from liveimg import run as runner
from liveimg.dracut.modules import scan_modules
from liveimg.errors import GuestPathEscapes, HostError, InvalidImage, InvalidOptions, ToolError
from liveimg.fsview import GuestTree
from liveimg.progress import Progress
from liveimg.reproducible import clamp_to_epoch
from liveimg.staging import AtomicOutput, source_stat, staged_file

log = logging.getLogger(__name__)

#: The file name of the live image in OUTDIR (``root=live:<URL>/live-rootfs.erofs.img``).
EROFS_NAME = "live-rootfs.erofs.img"
#: Time limit for one mkfs.erofs run (single-threaded before erofs-utils 1.8).
TIMEOUT = 6 * 3600.0
#: mkfs.erofs's compressor names, and the kernel option each needs to be read.
KERNEL_OPTION = {
    "lz4": "CONFIG_EROFS_FS_ZIP",
    "lz4hc": "CONFIG_EROFS_FS_ZIP",
    "lzma": "CONFIG_EROFS_FS_ZIP_LZMA",
    "deflate": "CONFIG_EROFS_FS_ZIP_DEFLATE",
    "zstd": "CONFIG_EROFS_FS_ZIP_ZSTD",
}
#: The pipeline's ``--compression`` (squashfs names) as mkfs.erofs compressors.
FROM_SQUASHFS_NAME = {"xz": "lzma", "lz4": "lz4hc", "gzip": "deflate", "zstd": "zstd"}
#: What to use when the default (xz) cannot be: every EROFS kernel that compresses reads lz4.
FALLBACK = "lz4hc"
_UUID_NAMESPACE = uuid.UUID("5b0c1f52-4d1e-4c55-9a57-6c6976656966")  # liveimg's, for uuid5
_VERSION = re.compile(r"mkfs\.erofs\s+v?(\d[\w.+~-]*)")
_DMSQUASH_EROFS = re.compile(r"\berofs\b")
_CONFIG_LIMIT = 1 << 20


@dataclass(frozen=True)
class HostTool:
    """The host's mkfs.erofs: its version and the compressors it was built with."""

    path: str
    version: str
    compressors: frozenset[str]


def parse_help(text: str) -> tuple[str, frozenset[str]]:
    """The version and the compressors named in ``mkfs.erofs --help`` (one line in 1.5, a list later)."""
    match = _VERSION.search(text)
    version = match.group(1) if match else "unknown"
    _, _, tail = text.partition("Available compressors are:")
    names = {word for word in re.findall(r"[a-z][a-z0-9]*", tail) if word in KERNEL_OPTION or word == "libdeflate"}
    if "libdeflate" in names:
        names.discard("libdeflate")
        names.add("deflate")
    return version, frozenset(names)


@cache
def host_tool() -> HostTool:
    """The host's mkfs.erofs; :class:`~liveimg.errors.ToolNotFound` naming erofs-utils if it is missing."""
    path = runner.require("mkfs.erofs")
    # erofs-utils 1.5 prints its version for --version and then fails on the unknown option.
    texts = [runner.run([path, arg], check=False, timeout=30) for arg in ("--version", "--help")]
    version, compressors = parse_help("\n".join(t.stdout + "\n" + t.stderr for t in texts))
    return HostTool(path, version, compressors)


@dataclass(frozen=True)
class GuestSupport:
    """What the image can boot: read from its dracut and its kernel's modules and configuration."""

    dracut_version: str | None
    #: dmsquash-live's root script names erofs (dracut-ng); False also when the module is missing.
    dmsquash_erofs: bool
    #: erofs.ko (any compression) or a built-in erofs in the kernel's module directory.
    kernel_erofs: bool
    #: Compressors the kernel's configuration enables; None when the image has no config file.
    kernel_compressors: frozenset[str] | None


def _read(tree: GuestTree, path: str) -> str | None:
    try:
        if not tree.is_file(path):
            return None
        return tree.read_head(path, _CONFIG_LIMIT).decode("utf-8", "replace")
    except GuestPathEscapes:
        return None  # a link out of the image is not the image's file


def _dracut_version(tree: GuestTree) -> str | None:
    for path in ("/usr/lib/dracut/dracut-version.sh", "/usr/share/dracut/dracut-version.sh"):
        text = _read(tree, path)
        if text:
            match = re.search(r"DRACUT_VERSION=[\"']?([\w.+~-]+)", text)
            if match:
                return match.group(1)
    return None


def _module_dirs(tree: GuestTree, kver: str) -> list[str]:
    return [d for d in (f"/usr/lib/modules/{kver}", f"/lib/modules/{kver}") if tree.is_dir(d)]


def _kernel_config(tree: GuestTree, kver: str) -> str | None:
    candidates = [f"{d}/config" for d in _module_dirs(tree, kver)]
    candidates += [f"/boot/config-{kver}", f"/usr/lib/ostree-boot/config-{kver}"]
    for path in candidates:
        text = _read(tree, path)
        if text:
            return text
    return None


def _config_value(config: str, option: str) -> str | None:
    match = re.search(rf"^{re.escape(option)}=(\S+)", config, re.MULTILINE)
    return match.group(1) if match else None


def guest_support(tree: GuestTree, kver: str) -> GuestSupport:
    """Read from the image (the deployment's tree for ostree) whether it can boot an EROFS live image."""
    module = scan_modules(tree).get("dmsquash-live")
    dmsquash = False
    if module is not None:
        script = _read(tree, f"{module.directory}/dmsquash-live-root.sh")
        dmsquash = bool(script and _DMSQUASH_EROFS.search(script))
    kernel_erofs = False
    for directory in _module_dirs(tree, kver):
        erofs_dir = f"{directory}/kernel/fs/erofs"
        if tree.is_dir(erofs_dir) and any(n.startswith("erofs.ko") for n in tree.listdir(erofs_dir)):
            kernel_erofs = True
        builtin = _read(tree, f"{directory}/modules.builtin") or ""
        if re.search(r"(^|/)erofs\.ko$", builtin, re.MULTILINE):
            kernel_erofs = True
    config = _kernel_config(tree, kver)
    compressors: frozenset[str] | None = None
    if config is not None:
        if _config_value(config, "CONFIG_EROFS_FS") in ("y", "m"):
            kernel_erofs = True
        compressors = frozenset(c for c, opt in KERNEL_OPTION.items() if _config_value(config, opt) == "y")
    return GuestSupport(_dracut_version(tree), dmsquash, kernel_erofs, compressors)


def check_guest(support: GuestSupport, kver: str) -> None:
    """Refuse an image that cannot boot an EROFS live image, saying what it lacks and what to do."""
    dracut = f"dracut {support.dracut_version}" if support.dracut_version else "dracut"
    if not support.dmsquash_erofs:
        raise InvalidImage(
            f"the image's {dracut} cannot boot an erofs live image: its dmsquash-live mounts only squashfs "
            "(erofs came with dracut-ng's 2024 releases)",
            hint="use --rootfs-type squashfs-ext4 (the default), or update dracut in the image",
        )
    if not support.kernel_erofs:
        raise InvalidImage(
            f"the image's kernel {kver} has no erofs filesystem (no erofs.ko, not built in)",
            hint="use --rootfs-type squashfs-ext4, or a kernel built with CONFIG_EROFS_FS",
        )


def compressor_name(requested: str) -> str:
    """The mkfs.erofs compressor for a ``--compression`` value; :class:`InvalidOptions` if there is none."""
    name = FROM_SQUASHFS_NAME.get(requested, requested)
    if name not in KERNEL_OPTION:
        raise InvalidOptions(
            f"compression {requested!r} does not exist for erofs",
            hint=f"choose one of {', '.join(sorted(KERNEL_OPTION))} (or xz, gzip for lzma, deflate)",
        )
    return name


def choose_compressor(requested: str, support: GuestSupport, host: HostTool) -> str:
    """The mkfs.erofs compressor for the pipeline's ``--compression`` (squashfs names or erofs names).

    ``xz`` (the default) becomes lzma where both mkfs.erofs and the image's kernel have it,
    else lz4hc, with a warning; any other choice that either side lacks is an error.
    """
    name = compressor_name(requested)
    kernel = support.kernel_compressors
    missing: list[str] = []
    if name not in host.compressors:
        missing.append(f"the host's mkfs.erofs {host.version} (it has {', '.join(sorted(host.compressors)) or 'none'})")
    if kernel is not None and name not in kernel:
        missing.append(f"the image's kernel ({KERNEL_OPTION[name]} is not set)")
    if not missing:
        return name
    why = f"erofs compressor {name} is not supported by " + " nor by ".join(missing)
    if requested == "xz" and FALLBACK in host.compressors:
        log.warning("%s: using %s", why, FALLBACK)
        return FALLBACK
    raise InvalidOptions(why, hint=f"use --compression {FALLBACK}")


@dataclass(frozen=True)
class ErofsOptions:
    """How mkfs.erofs packs the image."""

    compressor: str = FALLBACK
    level: int | None = None
    #: Further mkfs.erofs arguments, e.g. ``-Ededupe`` or ``-C65536`` (lorax's --compress-arg).
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.compressor not in KERNEL_OPTION:
            raise InvalidOptions(f"erofs compressor {self.compressor!r} is unknown")
        for i, arg in enumerate(self.extra_args):
            # An option's value may follow it ("-C 65536"), but the list must begin with an option.
            if (i == 0 and not arg.startswith("-")) or arg.startswith(("-z", "-T", "-U", "--quiet")):
                raise InvalidOptions(
                    f"mkfs.erofs argument {arg!r} is not allowed",
                    hint="give options that start with '-' (liveimg sets -z, -T and -U itself)",
                )

    @classmethod
    def from_compress_args(cls, compressor: str, args: Sequence[str]) -> ErofsOptions:
        """lorax's ``--compress-arg`` values, each split like a shell word list."""
        extra = tuple(word for arg in args for word in shlex.split(arg))
        return cls(compressor=compressor, extra_args=extra)


@dataclass(frozen=True)
class ErofsResult:
    """A finished EROFS image: where, how big, how it was made, how long it took."""

    path: Path
    size: int
    seconds: float
    options: ErofsOptions
    tool_version: str
    backend: str = "mkfs.erofs"


def mkfs_argv(source: Path, dest: Path, options: ErofsOptions, *, timestamp: int, fs_uuid: str) -> list[str]:
    """The mkfs.erofs command line that packs the directory ``source`` into ``dest``."""
    comp = options.compressor if options.level is None else f"{options.compressor},{options.level}"
    return [host_tool().path, f"-z{comp}", f"-T{timestamp}", f"-U{fs_uuid}", "--all-root", "--quiet",
            *options.extra_args, os.fspath(dest), os.fspath(source)]  # fmt: skip


def pack_file(
    file: Path,
    dest: Path,
    arcname: str = "LiveOS/rootfs.img",
    options: ErofsOptions | None = None,
    progress: Progress | None = None,
) -> ErofsResult:
    """Pack ``file`` as ``arcname`` into the EROFS image ``dest`` (nothing is left there on failure)."""
    options = options or ErofsOptions()
    file, dest = Path(file), Path(dest)
    tool = host_tool()
    if options.compressor not in tool.compressors:
        raise InvalidOptions(
            f"the host's mkfs.erofs {tool.version} has no {options.compressor} compressor",
            hint=f"use one of {', '.join(sorted(tool.compressors))}",
        )
    progress = progress or Progress()
    st = source_stat(file, arcname)
    timestamp = clamp_to_epoch(int(st.st_mtime))
    fs_uuid = str(uuid.uuid5(_UUID_NAMESPACE, f"{arcname}\0{st.st_size}\0{timestamp}"))
    started = time.monotonic()
    with (
        progress.stage("erofs", total=st.st_size, unit="bytes") as stage,
        staged_file(file, dest, arcname, timestamp) as source,
        AtomicOutput(dest) as tmp,
    ):
        argv = mkfs_argv(source, tmp, options, timestamp=timestamp, fs_uuid=fs_uuid)
        try:
            runner.run(argv, timeout=TIMEOUT)
        except ToolError as exc:
            if "No space left" in exc.stderr or "ENOSPC" in exc.stderr:
                raise HostError(f"no space left on the device of {dest} while packing {file}") from exc
            raise
        stage.update(st.st_size)
        size = tmp.stat().st_size
        tmp.chmod(0o644)
    seconds = time.monotonic() - started
    log.info("mkfs.erofs %s packed %s into %s (%d bytes, %s) in %.1f s",
             tool.version, file, dest, size, options.compressor, seconds)  # fmt: skip
    return ErofsResult(path=dest, size=size, seconds=seconds, options=options, tool_version=tool.version)


__all__ = [
    "EROFS_NAME",
    "ErofsOptions",
    "ErofsResult",
    "GuestSupport",
    "HostTool",
    "check_guest",
    "choose_compressor",
    "compressor_name",
    "guest_support",
    "host_tool",
    "mkfs_argv",
    "pack_file",
    "parse_help",
]
