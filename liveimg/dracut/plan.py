"""What dracut is asked to do: options, checks of the guest, the command line, the result check.

Shared by both places dracut runs (:mod:`.sandbox` via :mod:`.stage`, and :mod:`.appliance`).
See :mod:`liveimg.dracut.stage` for how the options relate to lorax's.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from liveimg.dracut.compress import Compression
from liveimg.dracut.initramfs import Initramfs
from liveimg.dracut.modules import (
    LIVE_MODULES,
    LORAX_MODULES,
    OSTREE_MODULE,
    ModuleChecker,
    is_executable,
    select_modules,
)
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.fsview import GuestTree

log = logging.getLogger(__name__)

#: Arguments lorax always passes for PXE images (``rebuild_initrds_for_live``).
LORAX_FIXED_ARGS: tuple[str, ...] = ("--nomdadmconf", "--nolvmconf")
#: lorax's ``DRACUT_DEFAULT`` without its ``--xz`` and ``--add`` (the host compresses; the
#: module list is computed).
LORAX_DEFAULT_ARGS: tuple[str, ...] = ("--no-hostonly", "--debug", "--no-early-microcode")
#: Files each module must have put into the initramfs (matched by name, in any directory).
EXPECTED_FILES: dict[str, tuple[str, ...]] = {
    "dmsquash-live": ("dmsquash-live-root",),
    "livenet": ("livenetroot", "curl"),
    "ostree": ("ostree-prepare-root",),
}
#: The kernel filesystems a live boot mounts: the live file (squashfs, erofs), the ``rootfs.img``
#: in it (ext4), the overlay over it, the media it comes on (an ISO's iso9660, a stick's vfat with
#: its code pages).  Given to dracut as ``--filesystems``, which replaces its ``=fs`` (every
#: filesystem the kernel has) in a generic initramfs; dracut logs a name the kernel lacks and goes on.
LIVE_FILESYSTEMS: tuple[str, ...] = (
    "squashfs", "erofs", "ext4", "overlay", "iso9660", "vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8",
)  # fmt: skip
#: Drivers a live boot never needs, for ``--omit-drivers`` (each a regular expression dracut anchors
#: at both ends; ``_``, not ``-``, for dracut rewrites a ``-``): Fibre Channel, FCoE and iSCSI host
#: adapters, InfiniBand and RDMA, wireless, SCSI targets.  Wired NIC drivers, and the block, CD-ROM,
#: USB, MMC and virtual disk drivers an ISO or a USB stick boots from, stay.
OMIT_DRIVERS: tuple[str, ...] = (
    "lpfc", "qla2xxx", "qla4xxx", "bfa", "bnx2fc", "bnx2i", "qedf", "qedi", "fnic", "snic", "csiostor",
    "be2iscsi", "cxgb3i", "cxgb4i", "libfc", "libfcoe", "fcoe", "zfcp",
    "ib_.*", "rdma_.*", "iw_cm", "mlx4_ib", "mlx5_ib", "rdma_rxe", "siw", "irdma", "ib_srp.*", "ib_iser.*",
    "cfg80211", "mac80211", "libertas.*", "rndis_wlan",
    "target_core_.*", "iscsi_target_mod", "tcm_.*", "scsi_debug",
)  # fmt: skip
#: What liveimg adds to dracut's default arguments for a live initramfs of what a live boot needs
#: (``DracutOptions.all_drivers`` leaves them out: every driver and filesystem, as lorax).
SLIM_ARGS: tuple[str, ...] = ("--filesystems", " ".join(LIVE_FILESYSTEMS), "--omit-drivers", " ".join(OMIT_DRIVERS))
_COMPRESSION_FLAGS = ("--xz", "--zstd", "--gzip", "--lz4", "--lzo", "--bzip2", "--lzma", "--compress")
#: Where the output and the configuration appear inside the tree while dracut runs.
OUT_DIR = "/run/liveimg"
DRACUT_CANDIDATES = ("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut", "/bin/dracut")
#: dracut's option for reproducible images (dracut 047 and later; older ones refuse it): file times
#: no later than its own ``dracut-functions.sh``'s (dracut-ng: ``$SOURCE_DATE_EPOCH``), the archive
#: in sorted order with inode numbers from 0, whatever the build host's filesystem gave.
REPRODUCIBLE = "--reproducible"
#: The largest dracut script :func:`knows_reproducible` reads (dracut 059's is about 90 KiB).
_DRACUT_SCRIPT_LIMIT = 4 << 20


class Where(enum.StrEnum):
    """Where dracut runs."""

    AUTO = "auto"  # the sandbox where user namespaces work, else the appliance
    SANDBOX = "sandbox"
    APPLIANCE = "appliance"


@dataclass(frozen=True)
class DracutOptions:
    """How to build the initramfs.  See the module documentation for lorax's equivalents."""

    compression: Compression = Compression.XZ
    level: int | None = None
    threads: int = 0
    add_modules: tuple[str, ...] = ()
    omit_modules: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    dracut_args: tuple[str, ...] | None = None
    dracut_conf: Path | None = None
    where: Where = Where.AUTO
    timeout: float = 3600.0
    all_drivers: bool = False  # every driver and filesystem of the kernel, as lorax (no SLIM_ARGS)

    def __post_init__(self) -> None:
        for name in (*self.add_modules, *self.omit_modules):
            if not name or any(c.isspace() for c in name) or name.startswith("-"):
                raise InvalidOptions(f"dracut module name {name!r} is not valid")
        clash = set(self.add_modules) & set(self.omit_modules)
        if clash:
            raise InvalidOptions(f"dracut modules both added and omitted: {', '.join(sorted(clash))}")
        omitted_live = set(self.omit_modules) & set(LIVE_MODULES)
        if omitted_live:
            raise InvalidOptions(f"cannot omit {', '.join(sorted(omitted_live))}: a live initramfs needs them")
        if self.dracut_conf is not None and not self.dracut_conf.is_file():
            raise InvalidOptions(f"dracut configuration file {self.dracut_conf} does not exist")
        if self.dracut_args is not None and (self.add_modules or self.omit_modules):
            raise InvalidOptions("dracut_args replace the default arguments: add or omit modules in them instead")
        if self.timeout <= 0:
            raise InvalidOptions(f"timeout must be positive, not {self.timeout}")


def lorax_dracut_args(values: Sequence[str]) -> list[str]:
    """lorax's ``--dracut-arg`` parsing: each value split on its first space."""
    args: list[str] = []
    for value in values:
        args.extend(value.split(" ", 1))
    return [a for a in args if a]


def find_dracut(tree: GuestTree) -> str:
    for candidate in DRACUT_CANDIDATES:
        if is_executable(tree, candidate):
            return candidate
    raise InvalidImage(
        "the image has no dracut, so it cannot build its live initramfs",
        hint="install dracut (Debian: dracut, dracut-live, dracut-network; Fedora: dracut, dracut-live, "
        "dracut-network) in the image",
    )


def check_kernel(tree: GuestTree, kver: str) -> None:
    """The guest must have ``/usr/lib/modules/<kver>`` (or ``/lib/modules``)."""
    if "/" in kver or kver in ("", ".", ".."):
        raise InvalidOptions(f"kernel version {kver!r} is not valid")
    for base in ("/usr/lib/modules", "/lib/modules"):
        if tree.is_dir(f"{base}/{kver}"):
            return
    have = sorted(set(tree.listdir("/usr/lib/modules") + tree.listdir("/lib/modules")))
    raise InvalidImage(
        f"the image has no kernel modules for {kver} (in /usr/lib/modules or /lib/modules); "
        f"it has: {', '.join(have) or 'none'}",
        hint="choose one of the image's kernels",
    )


def knows_reproducible(tree: GuestTree, dracut: str) -> bool:
    """Whether the guest's ``dracut`` script takes :data:`REPRODUCIBLE` (it names the option)."""
    try:
        return REPRODUCIBLE.encode() in tree.read_bytes(dracut, limit=_DRACUT_SCRIPT_LIMIT)
    except InvalidImage:
        return False


@dataclass(frozen=True)
class Plan:
    """What to run: the dracut command line and the module decisions."""

    argv: tuple[str, ...]
    modules: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]
    required: tuple[str, ...]
    conf_name: str | None


def plan_dracut(tree: GuestTree, *, kver: str, ostree: bool, options: DracutOptions, output: str) -> Plan:
    """Check the guest and compute dracut's command line (``output`` is a guest path)."""
    dracut = find_dracut(tree)
    check_kernel(tree, kver)
    checker = ModuleChecker(tree)
    required = (*LIVE_MODULES, OSTREE_MODULE) if ostree else LIVE_MODULES
    conf_name = f"99-liveimg-{options.dracut_conf.name}" if options.dracut_conf else None
    if conf_name and not conf_name.endswith(".conf"):
        conf_name += ".conf"  # dracut reads only *.conf from dracut.conf.d
    if options.dracut_args is not None:
        selection = select_modules(tree, wanted=(), required=required, checker=checker)
        middle = lorax_dracut_args(options.dracut_args)
        dropped = [a for a in middle if a.split("=", 1)[0] in _COMPRESSION_FLAGS]
        if dropped:
            log.warning("ignoring %s: liveimg compresses on the host (option compression)", " ".join(dropped))
        middle = [a for a in middle if a not in dropped]
        modules: tuple[str, ...] = ()
        left_out: tuple[tuple[str, str], ...] = ()
    else:
        wanted = [m for m in (*LORAX_MODULES, *options.add_modules) if m not in options.omit_modules]
        selection = select_modules(tree, wanted=wanted, required=required, checker=checker)
        modules, left_out = selection.modules, selection.left_out
        middle = ["--add", " ".join(modules), *LORAX_DEFAULT_ARGS]
        if not options.all_drivers:
            middle += SLIM_ARGS
        if options.omit_modules:
            middle += ["--omit", " ".join(options.omit_modules)]
    # --reproducible is given, not left to the image's configuration (Debian's ostree package sets it,
    # a plain Debian does not): the same image gives the same initramfs (``--no-reproducible`` in
    # dracut_args or extra_args comes later and wins).
    fixed = (*LORAX_FIXED_ARGS, REPRODUCIBLE) if knows_reproducible(tree, dracut) else LORAX_FIXED_ARGS
    argv = (dracut, *fixed, *middle, *options.extra_args, "--no-compress", output, kver)
    return Plan(tuple(argv), modules, left_out, required, conf_name)


def verify_initramfs(path: Path, modules: Sequence[str]) -> None:
    """The initramfs must hold each module's expected files (:data:`EXPECTED_FILES`)."""
    with Initramfs(path) as ird:
        names = {m.path.rsplit("/", 1)[-1] for m in ird.files().values() if m.kind.value in ("file", "hardlink")}
    missing = [(mod, f) for mod in modules for f in EXPECTED_FILES.get(mod, ()) if f not in names]
    if missing:
        what = ", ".join(f"{f} (module {mod})" for mod, f in missing)
        raise InvalidImage(
            f"dracut's initramfs lacks {what}",
            hint="see the dracut log; the image's dracut modules may be incomplete",
        )
