"""The ``liveimg`` command line: a thin front end over the library.

Exit status: 0 success, 1 failure, 2 usage error, 128 + the signal when SIGINT (130), SIGTERM
(143) or SIGHUP (129) stopped it (:mod:`liveimg.cancel`: its programs killed, its partial
build removed).  Every failure is one line on stderr: ``liveimg: error: ...`` for a
:class:`~liveimg.errors.LiveImgError` or an ``OSError`` (naming the path), ``liveimg:
internal error: ...`` for anything else (a bug); ``--debug`` adds the traceback.  Only this
module maps errors to exit codes; the library raises.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from liveimg import bootsyntax, cancel, squashfs
from liveimg import run as runner
from liveimg._version import __version__
from liveimg.accel import choose_accel
from liveimg.boottest import MAX_MEMORY_MIB, MIN_MEMORY_MIB, VIAS, BootTestOptions, boot_test
from liveimg.dracut import Compression, DracutOptions, Where
from liveimg.dracut.customize import DEFAULT_CMDLINE_NAME, AppendCompression, EmbeddedFile, append_cpio
from liveimg.dracut.initramfs import Initramfs
from liveimg.efi import EfiMode, EfiOptions
from liveimg.errors import Cancelled, InvalidOptions, LiveImgError, signal_name
from liveimg.iscsi import ENGINES, IscsiStorage
from liveimg.iso import IsoOptions, make_iso
from liveimg.layouts import LAYOUTS
from liveimg.options import BuildOptions, RootfsType
from liveimg.pipeline import build
from liveimg.progress import JsonLines, Progress, StageLines, TerminalBar
from liveimg.pxe import CloudInitSeed, PxeOptions
from liveimg.rootfs import Method, RootfsOptions, SizeMode, parse_size
from liveimg.serve import BiosLoader, DhcpMode, ServeOptions, describe, print_config, serve
from liveimg.serve.service import DEFAULT_PORT
from liveimg.squashfs import SquashfsOptions, parse_compress_args
from liveimg.squashfs.options import BCJ_MODES
from liveimg.write import WriteOptions, human_size, image_size, probe_target, write_image

log = logging.getLogger("liveimg")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: A signal that stopped liveimg: 128 + its number, as a shell reports it (130 for SIGINT).
EXIT_SIGNAL = 128
EXIT_INTERRUPTED = EXIT_SIGNAL + signal.SIGINT


@dataclass(frozen=True)
class Context:
    """What every subcommand gets besides its arguments."""

    progress: Progress
    accel: str | None
    debug: bool


Handler = Callable[[argparse.Namespace, Context], int]


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are suppressed so that `liveimg --debug build` and
    # `liveimg build --debug` both work and neither overrides the other.
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("common options")
    group.add_argument("--debug", action="store_true", default=default(False), help="log everything, show tracebacks")
    group.add_argument("-v", "--verbose", action="store_true", default=default(False), help="log each step")
    group.add_argument("-q", "--quiet", action="store_true", default=default(False), help="only errors")
    group.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "json", "none"),
        default=default("auto"),
        help="progress on stderr: a bar, or one line per finished stage (auto: a bar on a terminal, lines "
        "otherwise); JSON lines on stdout for programs; or none",
    )
    group.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default=default(None),
        help="accelerator for QEMU and libguestfs (default: $LIVEIMG_ACCEL, else probe)",
    )


# --- doctor ------------------------------------------------------------------------------

#: Programs liveimg's stages use, and what for.
DOCTOR_TOOLS: tuple[tuple[str, str], ...] = (
    ("qemu-system-x86_64", "libguestfs appliance and boot tests"),
    ("qemu-img", "input format detection"),
    ("blkid", "input checks"),
    ("supermin", "libguestfs appliance"),
    ("mkfs.ext4", "rootfs"),
    ("e2fsck", "rootfs"),
    ("resize2fs", "rootfs"),
    ("debugfs", "rootfs"),
    ("sfdisk", "partition tables"),
    ("mksquashfs", "squashfs (mksquashfs backend)"),
    ("mkfs.erofs", "erofs rootfs type"),
    ("fsck.erofs", "tests"),
    ("unsquashfs", "tests"),
    ("cpio", "initramfs"),
    ("bwrap", "sandbox for guest content"),
    ("xz", "initramfs compression"),
    ("zstd", "initramfs compression"),
    ("dnsmasq", "liveimg serve: DHCP and TFTP"),
)

DOCTOR_MODULES: tuple[tuple[str, str], ...] = (
    ("guestfs", "Debian package python3-guestfs (venv made with --system-site-packages)"),
    ("libarchive", "PyPI libarchive-c and Debian libarchive13"),
    ("yaml", "PyPI PyYAML"),
    ("pycdlib", "PyPI pycdlib (the live ISO)"),
    ("zstandard", "PyPI zstandard (optional: zstd squashfs)"),
    ("lz4", "PyPI lz4 (optional: lz4 squashfs)"),
    ("seccomp", "Debian package python3-seccomp (the sandbox's system call filter)"),
)

#: What libguestfs's appliance takes on its first run, in its cache directory (about 700 MiB).
APPLIANCE_CACHE_BYTES = 1 << 30
#: Where supermin looks for the host's kernel (unless ``$SUPERMIN_KERNEL``).
HOST_BOOT = Path("/boot")


def _host_checks() -> dict[str, dict[str, object]]:
    """What this user needs of the machine besides programs: each check's verdict and why.

    The ones a non-root user is most likely to lack: a kernel supermin can read (it builds
    libguestfs's appliance from the host's), room for that appliance, and the sandbox (user
    namespaces, bubblewrap, seccomp).
    """
    from liveimg import sandbox  # noqa: PLC0415  # keeps `liveimg --help` fast

    checks: dict[str, dict[str, object]] = {}
    kernels = sorted(HOST_BOOT.glob("vmlinuz-*"))
    readable = [k for k in kernels if os.access(k, os.R_OK)]
    if os.environ.get("SUPERMIN_KERNEL"):
        ok, why = os.access(os.environ["SUPERMIN_KERNEL"], os.R_OK), f"$SUPERMIN_KERNEL={os.environ['SUPERMIN_KERNEL']}"
    elif readable:
        ok, why = True, f"{readable[-1]} is readable"
    elif kernels:
        ok, why = False, f"{kernels[-1]} is not readable by this user: libguestfs cannot build its appliance"
    else:
        ok, why = False, f"no kernel in {HOST_BOOT}: install the Debian package linux-image-amd64"
    checks["appliance kernel"] = {"ok": ok, "reason": why}
    cache = Path(os.environ.get("LIBGUESTFS_CACHEDIR") or os.environ.get("TMPDIR") or "/var/tmp")
    if not os.access(cache, os.W_OK | os.X_OK):
        ok, why = False, f"{cache} is not writable: set LIBGUESTFS_CACHEDIR to a directory you own"
    else:
        free = shutil.disk_usage(cache).free
        ok = free >= APPLIANCE_CACHE_BYTES or any(cache.glob(f".guestfs-{os.getuid()}"))
        why = f"{cache}: {free / (1 << 30):.1f} GiB free" + ("" if ok else ", the first appliance needs about 1 GiB")
    checks["appliance cache"] = {"ok": ok, "reason": why}
    ok, why = sandbox.available()
    checks["sandbox"] = {"ok": ok, "reason": why}
    return checks


def _add_doctor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _cmd_doctor(args: argparse.Namespace, ctx: Context) -> int:
    tools = {name: runner.which(name) for name, _ in DOCTOR_TOOLS}
    modules = {name: importlib.util.find_spec(name) is not None for name, _ in DOCTOR_MODULES}
    choice = choose_accel(ctx.accel)
    host = _host_checks()
    report = {
        "version": __version__,
        "accel": {"choice": str(choice.accel), "reason": choice.reason},
        "tools": tools,
        "modules": modules,
        "host": host,
    }
    missing = [n for n, p in tools.items() if p is None] + [n for n, ok in modules.items() if not ok]
    missing += [name for name, check in host.items() if not check["ok"]]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"liveimg {__version__}")
        print(f"accelerator: {choice.accel} ({choice.reason})")
        for name, why in DOCTOR_TOOLS:
            path = tools[name]
            where = path or f"MISSING: install the Debian package {runner.PACKAGES.get(name, '?')}"
            print(f"  {name:20} {where}  [{why}]")
        for name, source in DOCTOR_MODULES:
            print(f"  python: {name:12} {'ok' if modules[name] else 'MISSING: ' + source}")
        for name, check in host.items():
            print(printable(f"  {name + ':':20} {'ok' if check['ok'] else 'PROBLEM'}: {check['reason']}"))
    return EXIT_FAILURE if missing else EXIT_OK


# --- inspect -----------------------------------------------------------------------------


def _add_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="disk image (raw, qcow2, ...) or filesystem image")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.add_argument(
        "--deployment",
        metavar="SEL",
        help="ostree deployment: index (0 = default), osname, or commit checksum prefix",
    )
    parser.add_argument("--kernel", metavar="KVER", help="kernel version (default: the deployment's, or the newest)")
    parser.add_argument("--inspect", choices=("auto", "native", "appliance"), default="auto",
                        help="who reads it: the host's ext reader, the libguestfs appliance, or auto")  # fmt: skip


def _cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    from liveimg.guest import inspect_image  # noqa: PLC0415  # keeps `liveimg --help` fast

    info = inspect_image(
        args.image, deployment=args.deployment, kernel=args.kernel, accel=ctx.accel, progress=ctx.progress,
        backend=args.inspect,
    )  # fmt: skip
    for warning in info.warnings:
        log.info("%s: %s", args.image, warning)
    print(json.dumps(info.to_dict(), indent=2) if args.json else printable(info.summary()))
    return EXIT_OK


# --- squashfs ----------------------------------------------------------------------------


def _add_squashfs(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="squashfs_command", metavar="ACTION", required=True)
    pack = sub.add_parser("pack", help="pack a directory (or one file) into a squashfs image")
    pack.add_argument("source", help="directory to pack (or a file, with --file-as)")
    pack.add_argument("dest", help="image to write")
    pack.add_argument("--backend", choices=("native", "mksquashfs"), default="native", help="writer (default native)")
    pack.add_argument("--file-as", metavar="PATH", help="pack SOURCE, a file, as PATH (e.g. LiveOS/rootfs.img)")
    pack.add_argument("--comp", default="xz", help="gzip, xz (default), zstd, lz4 or lzo")
    pack.add_argument("-b", "--block-size", default="128K", help="data block size, 4K to 1M (default 128K)")
    pack.add_argument("--Xbcj", help="xz BCJ filters, comma separated (x86, arm, armthumb, powerpc, sparc, ia64)")
    pack.add_argument("--Xcompression-level", type=int, help="gzip 1-9, zstd 1-22, lzo 1-9")
    pack.add_argument("--Xdict-size", help="xz dictionary size (bytes, K/M suffix or percent of the block)")
    pack.add_argument("--Xhc", action="store_true", help="lz4 high compression")
    pack.add_argument("--bcj-mode", choices=BCJ_MODES, default="heuristic",
                      help="xz with BCJ: guess per block whether the filter helps (heuristic, default) or "
                      "compress every block both ways and keep the smaller (exhaustive, as mksquashfs)")  # fmt: skip
    pack.add_argument(
        "--compress-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="mksquashfs-style compressor argument, e.g. '-Xbcj x86' (lorax's --compress-arg)",
    )
    for flag, text in (
        ("--no-fragments", "do not pack tails into fragment blocks"),
        ("--always-use-fragments", "pack the tails of big files into fragments too"),
        ("--no-exports", "no NFS export table"),
        ("--no-xattrs", "do not store extended attributes"),
        ("--all-root", "make every file owned by root"),
    ):
        pack.add_argument(flag, action="store_true", help=text)
    pack.add_argument("--force-uid", type=int, help="owner of every file")
    pack.add_argument("--force-gid", type=int, help="group of every file")
    pack.add_argument("--mkfs-time", type=int, help="image creation time (default $SOURCE_DATE_EPOCH, else now)")
    pack.add_argument("--all-time", type=int, help="mtime of every file")
    pack.add_argument("--processors", type=int, help="compression threads (default: all CPUs)")
    info = sub.add_parser("info", help="describe a squashfs image")
    info.add_argument("image")
    info.add_argument("--json", action="store_true", help="print JSON")
    for p in (pack, info):
        _add_common(p, top=False)


def _squashfs_options(args: argparse.Namespace) -> SquashfsOptions:
    compress_args = [f"-b {args.block_size}"]
    if args.Xdict_size:
        compress_args.append(f"-Xdict-size {args.Xdict_size}")
    base = SquashfsOptions(
        comp=args.comp, Xbcj=tuple(f for f in (args.Xbcj or "").split(",") if f), bcj_mode=args.bcj_mode,
        Xcompression_level=args.Xcompression_level, Xhc=args.Xhc, no_fragments=args.no_fragments,
        always_use_fragments=args.always_use_fragments, no_exports=args.no_exports, no_xattrs=args.no_xattrs,
        all_root=args.all_root, force_uid=args.force_uid, force_gid=args.force_gid, mkfs_time=args.mkfs_time,
        all_time=args.all_time, processors=args.processors,
    )  # fmt: skip
    return parse_compress_args([*compress_args, *args.compress_arg], base)


def _cmd_squashfs(args: argparse.Namespace, ctx: Context) -> int:
    if args.squashfs_command == "info":
        report = squashfs.describe(Path(args.image))
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for key, value in report.items():
                print(printable(f"{key:20} {value}"))
        return EXIT_OK
    options = _squashfs_options(args)
    if args.file_as:
        result = squashfs.write_squashfs_file(
            Path(args.source), Path(args.dest), args.file_as, options, ctx.progress, backend=args.backend
        )
    else:
        result = squashfs.write_squashfs(
            Path(args.source), Path(args.dest), options, ctx.progress, backend=args.backend
        )
    print(f"{result.path}: {result.size} bytes, {result.backend} backend, {result.seconds:.1f} s")
    return EXIT_OK


# --- initramfs -----------------------------------------------------------------------------


def _add_initramfs(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="initramfs_command", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list an initramfs (every archive, plain or compressed)")
    ls.add_argument("file", type=Path, help="the initramfs")
    ls.add_argument("--segments", action="store_true", help="also list the archives and their compression")
    ls.add_argument("--json", action="store_true", help="print segments and members as JSON")
    _add_common(ls, top=False)
    append = sub.add_parser(
        "append",
        help="append a cpio archive with kernel arguments and files (no dracut run)",
        description="Write OUT: FILE followed by a small reproducible cpio archive holding the kernel "
        "arguments (as /etc/cmdline.d/90-liveimg.conf, read by dracut) and the files given.",
    )
    append.add_argument("file", type=Path, help="the initramfs (left unchanged unless -o names it)")
    append.add_argument("-o", "--output", type=Path, required=True, help="where to write the result")
    append.add_argument("--karg", action="append", default=[], metavar="ARG",
                        help="a kernel argument for dracut (repeatable), e.g. rd.live.image")  # fmt: skip
    append.add_argument("--file", dest="files", action="append", default=[], metavar="SRC:DEST[:MODE]",
                        help="embed host file SRC at absolute path DEST, with octal MODE (repeatable)")  # fmt: skip
    append.add_argument("--compress", choices=[c.value for c in AppendCompression], default="none",
                        help="compression of the appended archive (default: none)")  # fmt: skip
    append.add_argument("--cmdline-name", default=DEFAULT_CMDLINE_NAME, help="file name in /etc/cmdline.d")
    _add_common(append, top=False)


def _parse_embedded(value: str) -> EmbeddedFile:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidOptions(f"--file {value!r}: expected SRC:DEST or SRC:DEST:MODE")
    mode: int | None = None
    if len(parts) == 3:
        try:
            mode = int(parts[2], 8)
        except ValueError:
            raise InvalidOptions(f"--file {value!r}: mode {parts[2]!r} is not octal") from None
    return EmbeddedFile(Path(parts[0]), parts[1], mode)


def _cmd_initramfs(args: argparse.Namespace, ctx: Context) -> int:
    if args.initramfs_command == "ls":
        with Initramfs(args.file) as ird:
            if args.json:
                print(json.dumps({"segments": [asdict(s) for s in ird.segments],
                                  "members": [asdict(m) for m in ird.members]}, indent=2))  # fmt: skip
                return EXIT_OK
            if args.segments:
                for seg in ird.segments:
                    print(f"# segment {seg.index}: offset {seg.offset}, {seg.length} bytes, {seg.compression}, "
                          f"{seg.unpacked} bytes unpacked, {seg.archives} archive(s)")  # fmt: skip
            for member in ird.members:
                print(printable(member.describe()))
        return EXIT_OK
    result = append_cpio(
        args.file,
        args.output,
        kargs=args.karg,
        files=[_parse_embedded(f) for f in args.files],
        compression=AppendCompression(args.compress),
        cmdline_name=args.cmdline_name,
    )
    log.info("appended %s at offset %d: %s", result.compression, result.offset, ", ".join(result.paths))
    return EXIT_OK


# --- build -------------------------------------------------------------------------------


def _layouts_help(default: str) -> str:
    """``--rootfs-type``'s help: each layout's name and summary, in the registry's order."""
    return "; ".join(f"{name}: {layout.summary}{' (default)' if name == default else ''}"
                     for name, layout in LAYOUTS.items())  # fmt: skip


def _add_build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="installed disk image (raw, qcow2, ...) or filesystem image")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="where the artifacts go")
    parser.add_argument("--force", action="store_true", help="replace OUTDIR if it exists")
    g = parser.add_argument_group("what to boot")
    g.add_argument(
        "--deployment", metavar="SEL", help="ostree deployment: index, osname or checksum (default: ostree's)"
    )
    g.add_argument("--kernel", metavar="KVER", help="kernel version (classic images; default: the newest)")
    g = parser.add_argument_group("LiveOS/rootfs.img")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--live-rootfs-size", metavar="SIZE", help="fixed size: GiB, or with a unit (512M, 2G)")
    size.add_argument("--live-rootfs-keep-size", action="store_true", help="the size of the source root partition")
    g.add_argument("--rootfs-method", choices=[m.value for m in Method], default="auto",
                   help="partition: copy the ext4 root partition's bytes (fast, reproducible); copy: file by file "
                   "in the appliance (any filesystem); auto: partition where it applies")  # fmt: skip
    g.add_argument("--repair-source", action="store_true",
                   help="let e2fsck repair liveimg's copy of a damaged root filesystem (never the input)")  # fmt: skip
    g.add_argument("--inspect", choices=("auto", "native", "appliance"), default="auto",
                   help="who reads the image's layout: the host's ext reader (raw images, ext partitions), the "
                   "libguestfs appliance, or auto: native where it applies, else the appliance")  # fmt: skip
    g.add_argument("--rootfs-type", choices=list(LAYOUTS), default=RootfsType.SQUASHFS_EXT4.value,
                   help=_layouts_help(RootfsType.SQUASHFS_EXT4))  # fmt: skip
    g = parser.add_argument_group("squashfs")
    g.add_argument(
        "--compression",
        default="xz",
        help="xz (default, with the image's BCJ filter), zstd, gzip, lz4, lzo; "
        "for erofs: xz means lzma where the image's kernel reads it (else lz4hc), lz4 means lz4hc, gzip deflate",
    )
    g.add_argument("--compress-arg", action="append", default=[], metavar="ARG",
                   help="compressor argument as lorax takes it, e.g. '-Xcompression-level 3' (repeatable)")  # fmt: skip
    g.add_argument("--squashfs-backend", choices=("native", "mksquashfs"), default="native",
                   help="liveimg's own parallel writer (default) or squashfs-tools' mksquashfs")  # fmt: skip
    g.add_argument("--processors", type=int, help="compression threads (default: all CPUs)")
    g.add_argument("--squashfs-bcj-mode", choices=BCJ_MODES, default="heuristic",
                   help="xz with BCJ: guess per block whether the filter helps (heuristic, default) or try "
                   "every block both ways and keep the smaller (exhaustive: mksquashfs's way, slower)")  # fmt: skip
    g = parser.add_argument_group("initramfs (dracut)")
    g.add_argument("--dracut-arg", action="append", metavar="ARG",
                   help="lorax-style dracut argument (split at the first space); replaces the defaults")  # fmt: skip
    g.add_argument("--dracut-conf", type=Path, metavar="FILE", help="a dracut.conf file for the guest's dracut")
    g.add_argument("--dracut-add", action="append", default=[], metavar="MODULE", help="add a dracut module")
    g.add_argument("--dracut-omit", action="append", default=[], metavar="MODULE", help="omit a dracut module")
    g.add_argument("--dracut-all-drivers", action="store_true",
                   help="every driver and filesystem of the kernel in the initramfs, as lorax (default: what a "
                   "live boot needs: no Fibre Channel, InfiniBand or wireless drivers, only the live filesystems; "
                   "less RAM)")  # fmt: skip
    g.add_argument("--dracut-in", choices=[w.value for w in Where], default="auto",
                   help="sandbox: a rootless user namespace on the host (default where possible); "
                   "appliance: the libguestfs VM, for images you do not trust")  # fmt: skip
    g.add_argument("--initramfs-compression", choices=[c.value for c in Compression], default="xz",
                   help="initramfs compression, done on the host with all CPUs (default xz, as lorax)")  # fmt: skip
    g.add_argument("--initramfs-level", type=int, metavar="N", help="compression level (default: dracut's)")
    g.add_argument("--dracut-timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="time limit of the image's dracut, in the sandbox or the appliance (default 3600)")  # fmt: skip
    g.add_argument("--no-verify", action="store_true",
                   help="do not have the initramfs check the live image's size and sha256 against this "
                   "build's before mounting it (it still says in one line why a download failed)")  # fmt: skip
    g = parser.add_argument_group("boot configuration")
    g.add_argument(
        "--url",
        help="where OUTDIR will be served (http://...): writes pxelinux, iPXE and GRUB "
        "configs; nbd://HOST[:PORT][/PATH]: the live file is read over NBD",
    )
    g.add_argument("--pxe-dir", default="", help="TFTP directory of the kernel and initramfs in pxelinux/GRUB configs")
    g.add_argument("--embed-rootfs", action="store_true",
                   help="deliver the live file as a second initrd (live-rootfs.cpio, root=live:/FILE): boots with "
                   "TFTP or iPXE alone, no HTTP server and no --url (--url only with --cloud-init, for the seed); "
                   "needs RAM for the live file twice and the initramfs while the kernel unpacks them")  # fmt: skip
    g.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                   help="kernel argument for the live system, e.g. rd.live.overlay.size=1024 (repeatable)")  # fmt: skip
    g.add_argument("--no-image-kargs", action="store_true",
                   help="do not keep the installed system's own kernel arguments (console=, ...)")  # fmt: skip
    g = parser.add_argument_group("UEFI network boot (Secure Boot): shim and a network GRUB in OUTDIR, the TFTP root")
    efi = g.add_mutually_exclusive_group()
    efi.add_argument("--efi", dest="efi", action="store_const", const=EfiMode.REQUIRE.value, default="auto",
                     help="require the image's signed shim and network GRUB (default: include them when the "
                     "image has them)")  # fmt: skip
    efi.add_argument("--no-efi", dest="efi", action="store_const", const=EfiMode.OFF.value,
                     help="leave them out")  # fmt: skip
    g.add_argument("--efi-from", type=Path, metavar="DIR",
                   help="take shim and the network GRUB from DIR (yours) instead of the image")  # fmt: skip
    g = parser.add_argument_group("live ISO")
    g.add_argument("--iso", action="store_true",
                   help="also write live.iso, a hybrid ISO of the live system (CD: BIOS, UEFI; USB stick)")  # fmt: skip
    g.add_argument("--iso-label", metavar="LABEL",
                   help="its volume label: up to 32 of A-Z, 0-9 and _ (default: from the OS, as lorax)")  # fmt: skip
    g = parser.add_argument_group("cloud-init NoCloud seed (served with the artifacts)")
    g.add_argument("--cloud-init", action="store_true", help="write a seed and point the kernel at it (needs --url)")
    g.add_argument("--ci-hostname", default="liveimg", help="local-hostname in meta-data")
    g.add_argument("--ci-ssh-key", action="append", default=[], metavar="KEY|@FILE", help="root's authorized key")
    g.add_argument("--ci-password", help="root's password (a crypt hash if it starts with $)")
    g.add_argument("--ci-runcmd", action="append", default=[], metavar="CMD", help="a command to run at first boot")
    g.add_argument("--ci-user-data", type=Path, metavar="FILE", help="use this user-data instead")
    g.add_argument("--ci-iscsi", metavar="PORTAL,IQN[,LUN]",
                   help="put the container storage on this iSCSI LUN at boot: the seed logs in to target IQN at "
                   "PORTAL (IPv4, [IPv6] or host name, :PORT default 3260), makes a filesystem on the LUN (the "
                   "lowest one by default) only if it has none, and mounts it as the engine's storage; added "
                   "before the other commands, also to a #cloud-config --ci-user-data")  # fmt: skip
    g.add_argument("--ci-iscsi-initiator", metavar="IQN",
                   help="the initiator's name (default: derived from the seed's instance-id and hostname)")  # fmt: skip
    g.add_argument("--ci-iscsi-engine", choices=sorted(ENGINES), default="podman",
                   help="the container engine whose storage goes on the LUN (default podman)")  # fmt: skip
    g = parser.add_argument_group("work files")
    g.add_argument("--workdir", type=Path, help="where temporary files go (default: beside OUTDIR)")
    g.add_argument("--keep-workdir", action="store_true", help="keep the temporary files (rootfs.img, dracut log)")
    c = g.add_mutually_exclusive_group()
    c.add_argument("--cache", type=Path, metavar="DIR",
                   help="the build cache: compressed squashfs blocks reused by the next build "
                        "(default: $LIVEIMG_CACHE, else ~/.cache/liveimg/cache)")  # fmt: skip
    c.add_argument("--no-cache", action="store_true", help="build without the cache")
    g.add_argument("--cache-size", metavar="SIZE",
                   help="the cache's bound, GiB or with a unit (default 10); the least recently used entries go "
                        "when a build ends")  # fmt: skip


def _ssh_keys(value: str) -> list[str]:
    """``--ci-ssh-key``: a key, or ``@FILE`` with one key a line (an ``authorized_keys`` file:
    blank and ``#`` lines skipped).  Each key is checked to be one line by :class:`CloudInitSeed`."""
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise InvalidOptions(f"cannot read the ssh key file {value[1:]}: {why}") from None
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise InvalidOptions(f"the ssh key file {value[1:]} has no key")
        return keys
    return [value.strip()]


def build_options(args: argparse.Namespace, accel: str | None) -> BuildOptions:
    """BuildOptions from ``liveimg build``'s arguments."""
    if args.live_rootfs_size:
        rootfs_options = RootfsOptions(size_mode=SizeMode.FIXED, size=parse_size(args.live_rootfs_size))
    elif args.live_rootfs_keep_size:
        rootfs_options = RootfsOptions(size_mode=SizeMode.KEEP)
    else:
        rootfs_options = RootfsOptions()
    rootfs_options = dataclasses.replace(
        rootfs_options, method=Method(args.rootfs_method), repair_source=args.repair_source
    )
    if args.dracut_arg and args.dracut_conf:
        raise InvalidOptions("--dracut-arg and --dracut-conf cannot be used together (as in lorax)")
    dracut_options = DracutOptions(
        compression=Compression(args.initramfs_compression),
        level=args.initramfs_level,
        add_modules=tuple(args.dracut_add),
        omit_modules=tuple(args.dracut_omit),
        dracut_args=tuple(args.dracut_arg) if args.dracut_arg else None,
        dracut_conf=args.dracut_conf,
        where=Where(args.dracut_in),
        timeout=args.dracut_timeout,
        all_drivers=args.dracut_all_drivers,
    )
    seed = None
    if not args.cloud_init and (args.ci_iscsi or args.ci_iscsi_initiator):
        raise InvalidOptions("--ci-iscsi and --ci-iscsi-initiator are parts of the seed: they need --cloud-init")
    if args.ci_iscsi_initiator and not args.ci_iscsi:
        raise InvalidOptions("--ci-iscsi-initiator names the initiator of --ci-iscsi, which is not given")
    if args.cloud_init:
        if not args.url:
            raise InvalidOptions("--cloud-init needs --url: the seed is served with the artifacts")
        user_data = None
        if args.ci_user_data:
            try:
                user_data = args.ci_user_data.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise InvalidOptions(f"cannot read {args.ci_user_data}: {why}") from None
        iscsi = None
        if args.ci_iscsi:
            iscsi = IscsiStorage.parse(args.ci_iscsi, initiator=args.ci_iscsi_initiator, engine=args.ci_iscsi_engine)
        seed = CloudInitSeed(
            hostname=args.ci_hostname,
            ssh_authorized_keys=tuple(key for k in args.ci_ssh_key for key in _ssh_keys(k)),
            password=args.ci_password,
            runcmd=tuple(args.ci_runcmd),
            user_data=user_data,
            iscsi=iscsi,
        )
        seed.user_data_text()  # validate now, not after the build
    return BuildOptions(
        deployment=args.deployment,
        kernel=args.kernel,
        rootfs=rootfs_options,
        rootfs_type=args.rootfs_type,
        compression=args.compression,
        compress_args=tuple(args.compress_arg),
        squashfs_processors=args.processors,
        squashfs_bcj_mode=args.squashfs_bcj_mode,
        squashfs_backend=args.squashfs_backend,
        dracut=dracut_options,
        pxe=PxeOptions(
            url=args.url,
            pxe_dir=args.pxe_dir,
            kernel_args=tuple(args.kernel_arg),
            keep_image_args=not args.no_image_kargs,
            cloud_init=seed,
        ),
        iso=IsoOptions(label=args.iso_label) if args.iso or args.iso_label else None,
        efi=EfiOptions(mode=EfiMode(args.efi), source=args.efi_from),
        embed_rootfs=args.embed_rootfs,
        verify=not args.no_verify,
        workdir=args.workdir,
        keep_workdir=args.keep_workdir,
        force=args.force,
        accel=accel,
        inspect=args.inspect,
        cache=not args.no_cache,
        cache_dir=args.cache,
        cache_max_bytes=parse_size(args.cache_size) if args.cache_size else None,
    )


def _cmd_build(args: argparse.Namespace, ctx: Context) -> int:
    options = build_options(args, ctx.accel)
    result = build(args.image, args.output, options, ctx.progress)
    if args.progress == "json":
        print(json.dumps({"event": "result", "outdir": str(result.outdir), "manifest": "manifest.json",
                          "seconds": result.timings["total"], "cpu_seconds": result.cpu_seconds}))  # fmt: skip
    else:
        for name in sorted(result.manifest["artifacts"]):
            print(f"{result.outdir / name}")
        for module, why in result.initramfs.left_out:
            log.warning("initramfs: dracut module %s left out: %s", module, why)
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items() if k != "total")
        total = result.timings["total"]
        log.warning("built %s in %.0f s, %.0f CPU seconds (%.1f cores busy; %s)", result.outdir, total,
                    result.cpu_seconds, result.cpu_seconds / max(total, 0.001), stages)  # fmt: skip
    return EXIT_OK


# --- boot-test ---------------------------------------------------------------------------


def _add_boot_test(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", type=Path, help="OUTDIR of `liveimg build`")
    parser.add_argument("--via", choices=VIAS, default="pxelinux",
                        help="pxelinux (PXE, TFTP; default), ipxe (PXE, HTTP), kernel (QEMU -kernel), "
                        "disk (the squashfs as a disk, no network), iso-bios, iso-uefi (the live ISO as a CD, "
                        "SeaBIOS or OVMF), usb, usb-uefi (the live ISO as a USB stick), uefi-pxe (OVMF's own PXE: "
                        "shim, GRUB; needs a build with --efi), grub-bios (SeaBIOS PXE: the host's BIOS GRUB, "
                        "grub.cfg)")  # fmt: skip
    parser.add_argument("--secure-boot", action="store_true",
                        help="with --via uefi-pxe: OVMF with Microsoft's keys and Secure Boot on; the firmware "
                        "verifies shim, shim GRUB, GRUB the kernel")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--memory", type=int, default=3072, metavar="MIB",
                        help=f"the guest's RAM, QEMU's -m ({MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}; default 3072); "
                        "Linux counts less (MemTotal); a build's floor is manifest.json's "
                        "initramfs.ram_floor_mib")  # fmt: skip
    parser.add_argument("--kernel-arg", action="append", default=[], metavar="ARG", help="add a kernel argument")
    parser.add_argument("--write", type=int, metavar="MIB", help="write MIB in the booted system (overlay size test)")
    parser.add_argument("--no-checks", action="store_true",
                        help="boot the initramfs as it is: no appended checker, success on a login prompt")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="console log and work files (default: OUTDIR.boot-test/)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _cmd_boot_test(args: argparse.Namespace, ctx: Context) -> int:
    # Said now, before the manifest is read and a work directory made.
    bootsyntax.kernel_args(args.kernel_arg, what="--kernel-arg", source=bootsyntax.Source.CALLER)
    options = BootTestOptions(
        via=args.via, timeout=args.timeout, memory_mib=args.memory, kernel_args=tuple(args.kernel_arg),
        checks=not args.no_checks, write_mib=args.write, workdir=args.workdir, accel=ctx.accel,
        secure_boot=args.secure_boot,
    )  # fmt: skip
    result = boot_test(args.outdir, options, ctx.progress)
    if args.json:
        print(json.dumps({
            "ok": result.ok, "outcome": str(result.boot.outcome), "reason": result.boot.reason,
            "seconds": result.boot.seconds, "checks": dict(result.checks), "problems": list(result.problems),
            "ostree_status": list(result.ostree_status), "console_log": str(result.boot.console_log),
            "last_lines": list(result.boot.last_lines), "http_server": result.http_server,
        }, indent=2))  # fmt: skip
    else:
        print(f"boot-test via {args.via}: {result.summary()}")
        for key, value in result.checks.items():
            print(f"  {key}: {value}")
        if not result.ok:
            for line in result.boot.last_lines[-10:]:
                print(f"  | {line}")
        print(f"console log: {result.boot.console_log}")
    return EXIT_OK if result.ok else EXIT_FAILURE


# --- serve ---------------------------------------------------------------------------------


def _add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdirs", nargs="+", type=Path, metavar="OUTDIR",
                        help="OUTDIRs of `liveimg build`; with several, the boot menus list them all, the newest "
                        "the default")  # fmt: skip
    parser.add_argument("--http", default=f"0.0.0.0:{DEFAULT_PORT}", metavar="ADDR:PORT",
                        help=f"where the HTTP server listens (default 0.0.0.0:{DEFAULT_PORT}; [ADDR]:PORT for "
                        "IPv6)")  # fmt: skip
    parser.add_argument("--url", help="the base URL machines fetch from, if not http://ADDR:PORT (a host name, a "
                        "proxy in front); default: ADDR, or --interface's address")  # fmt: skip
    parser.add_argument("--tftp", action="store_true", help="serve the boot loaders and menus over TFTP (dnsmasq)")
    parser.add_argument("--dhcp", choices=[str(m) for m in DhcpMode], default="none",
                        help="full: be the network's DHCP server; proxy: answer only PXE clients beside an existing "
                        "DHCP server; none (default). Implies --tftp. Both need --interface and root")  # fmt: skip
    parser.add_argument("--interface", metavar="IF", help="the network interface the machines are on")
    parser.add_argument("--bios-loader", choices=[str(m) for m in BiosLoader], default="auto",
                        help="what BIOS machines boot: auto (iPXE firmware runs the iPXE menu, other PXE firmware "
                        "gets pxelinux; default), pxelinux (all of them), ipxe (other PXE firmware gets iPXE, "
                        "undionly.kpxe, first)")  # fmt: skip
    parser.add_argument("--kernel-arg", action="append", default=[], metavar="ARG",
                        help="add a kernel argument to every build's entry (e.g. console=ttyS0,115200)")  # fmt: skip
    parser.add_argument("--print-config", choices=("nginx", "dnsmasq", "kea"), metavar="SERVER",
                        help="print the configuration of nginx, dnsmasq or Kea that serves the same, instead of "
                        "serving; with --tree")  # fmt: skip
    parser.add_argument("--tree", type=Path, metavar="DIR",
                        help="with --print-config: write the TFTP tree and the menus there, for those "
                        "servers")  # fmt: skip


def _cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    bootsyntax.kernel_args(args.kernel_arg, what="--kernel-arg", source=bootsyntax.Source.CALLER)
    options = ServeOptions(
        http=args.http, url=args.url, tftp=args.tftp, dhcp=DhcpMode(args.dhcp), interface=args.interface,
        loader=BiosLoader(args.bios_loader), kernel_args=tuple(args.kernel_arg),
    )  # fmt: skip
    if args.print_config is not None:
        if args.tree is None:
            raise InvalidOptions("--print-config needs --tree DIR", hint="the servers read the menus from there")
        print(print_config(args.outdirs, options, args.print_config, args.tree), end="")
        return EXIT_OK
    if args.tree is not None:
        raise InvalidOptions("--tree goes with --print-config", hint="liveimg serve keeps its own tree")

    def ready(plan: Any) -> None:
        info = describe(plan)
        if args.progress == "json":
            print(json.dumps({"event": "serving", **info}), flush=True)
        else:
            names = ", ".join(f"{b['name']}{' (default)' if b['default'] else ''}" for b in info["builds"])
            print(f"liveimg serve: {info['url']} serving {names}", flush=True)

    def line(kind: str) -> Callable[[str], None]:
        def emit(text: str) -> None:
            if args.progress == "json":
                print(json.dumps({"event": kind, "line": text}), flush=True)
            elif not args.quiet:
                print(printable(f"{kind}: {text}"), file=sys.stderr, flush=True)

        return emit

    try:
        serve(args.outdirs, options, ready=ready, on_request=line("http"), on_dnsmasq=line("dnsmasq"),
              progress=ctx.progress)  # fmt: skip
    except cancel.Interrupt as exc:
        # A signal is how a server is stopped: everything was stopped and removed on the way out.
        if not args.quiet:
            print(f"liveimg serve: stopped by {signal_name(exc.signum)}", file=sys.stderr)
        return EXIT_OK
    return EXIT_OK


# --- write ---------------------------------------------------------------------------------

WRITE_EPILOG = (
    "Before writing, liveimg names the device on one line (vendor, model, size, bus) and, on a terminal, asks "
    "'Overwrite DEVICE? [y/N]'. Without a terminal on standard input (a script, a pipe) it writes only with "
    "--yes. It refuses, whatever the options: a partition, an optical drive, a read-only device or one without "
    "a medium, a disk smaller than the "
    "image, and a disk with a mounted filesystem or active swap (on it, its partitions, or LVM/device-mapper "
    "devices on them); a disk that is not removable (an internal disk, a loop device) only with "
    "--yes-this-disk. The device is opened exclusively, so the kernel refuses one that is in use, then written, "
    "synced, and read back and compared with the image."
)


def _add_write(parser: argparse.ArgumentParser) -> None:
    parser.epilog = WRITE_EPILOG
    parser.add_argument("image", type=Path, help="the image to write: a hybrid ISO, or any disk image file")
    parser.add_argument("device", help="the whole disk to overwrite, such as /dev/sdb")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="write without asking (needed when standard input is not a terminal)")  # fmt: skip
    parser.add_argument("--yes-this-disk", action="store_true",
                        help="write even to a disk that is not removable (internal, loop device)")  # fmt: skip
    parser.add_argument("--no-verify", action="store_true", help="do not read the device back")


def _confirm(node: str) -> bool:
    """Ask on the terminal; only "y" or "yes" agrees."""
    sys.stderr.write(f"Overwrite {node}? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _cmd_write(args: argparse.Namespace, ctx: Context) -> int:
    size = image_size(args.image)
    target = probe_target(args.device, size, allow_fixed=args.yes_this_disk)
    print(printable(f"liveimg: writing {args.image} ({human_size(size)}) to {target.describe()}", lines=False),
          file=sys.stderr)  # fmt: skip
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidOptions(
                f"not writing to {target.node}: standard input is not a terminal to ask on",
                hint="add --yes to write without asking",
            )
        if not _confirm(target.node):
            print("liveimg: nothing written", file=sys.stderr)
            return EXIT_FAILURE
    options = WriteOptions(allow_fixed=args.yes_this_disk, verify=not args.no_verify)
    result = write_image(args.image, args.device, options, ctx.progress, expect=target)
    checked = "read back and verified" if result.verified else "not read back"
    if args.progress == "json":
        print(json.dumps({"event": "result", "device": result.device.node, "image": str(result.image),
                          "bytes": result.size, "verified": result.verified}))  # fmt: skip
    else:
        print(printable(f"wrote {result.image} to {result.device.node}: {result.size} bytes, {checked}", lines=False))
    return EXIT_OK


# --- iso ---------------------------------------------------------------------------------


def _add_iso(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", type=Path, help="OUTDIR of `liveimg build`")
    parser.add_argument("--iso-label", metavar="LABEL",
                        help="volume label, up to 32 of A-Z, 0-9 and _ (default: the build's or the OS's)")  # fmt: skip


def _cmd_iso(args: argparse.Namespace, ctx: Context) -> int:
    result = make_iso(args.outdir, IsoOptions(label=args.iso_label), ctx.progress)
    if args.progress == "json":
        print(json.dumps({"event": "result", "iso": str(result.path), "label": result.label, "sha256": result.sha256}))
    else:
        print(result.path)
    return EXIT_OK


# --- the parser ---------------------------------------------------------------------------

COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler], ...] = (
    ("doctor", "check this machine: tools, Python modules, KVM or TCG", _add_doctor, _cmd_doctor),
    (
        "build",
        "build live PXE artifacts (squashfs, kernel, initramfs, configs) from a disk image",
        _add_build,
        _cmd_build,
    ),
    (
        "boot-test",
        "boot built artifacts in QEMU (PXE by default) and check the live system",
        _add_boot_test,
        _cmd_boot_test,
    ),
    (
        "iso",
        "make a hybrid live ISO (live.iso) from the OUTDIR of a build, without building again",
        _add_iso,
        _cmd_iso,
    ),
    ("inspect", "describe an image: partitions, root, /boot, ostree deployments, kernel", _add_inspect, _cmd_inspect),
    (
        "squashfs",
        "pack a directory or LiveOS/rootfs.img into a squashfs image; describe one",
        _add_squashfs,
        _cmd_squashfs,
    ),
    ("initramfs", "read an initramfs, or append kernel arguments and files to it", _add_initramfs, _cmd_initramfs),
    ("write", "write an image (a hybrid ISO) to a USB stick, safely, and read it back", _add_write, _cmd_write),
    (
        "serve",
        "serve builds to diskless machines: HTTP, and with dnsmasq TFTP and DHCP (full or proxy)",
        _add_serve,
        _cmd_serve,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liveimg",
        description="Turn an installed Linux disk image into network-bootable live artifacts.",
    )
    parser.add_argument("--version", action="version", version=f"liveimg {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, add_arguments, handler in COMMANDS:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(cmd)
        _add_common(cmd, top=False)
        cmd.set_defaults(handler=handler)
    return parser


#: What a terminal would act on rather than show: C0 and C1 controls but newline and tab, DEL,
#: and the bidirectional overrides (text that reads differently from what it is).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, lines: bool = True) -> str:
    """``text`` as it may reach a terminal: every control character written as an escape
    (newlines too unless ``lines``).

    Guest strings (names, os-release fields, file names in an initramfs) end up in what the CLI
    prints and logs; an escape sequence among them must not drive the user's terminal.
    """
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return text if lines else text.replace("\n", "\\n")


class _PrintableFormatter(logging.Formatter):
    """A log record is one line, its message made :func:`printable`; a traceback follows it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record), lines=False)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if args.verbose:
        level = logging.INFO
    if args.debug:
        level = logging.DEBUG
    if args.quiet:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s" if args.debug else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _progress(args: argparse.Namespace) -> Progress:
    mode = args.progress
    if mode == "auto":
        mode = "none" if args.quiet else "bar" if sys.stderr.isatty() else "lines"
    if mode == "json":
        return Progress(JsonLines(sys.stdout), rate=2.0)
    if mode == "bar":
        return Progress(TerminalBar(sys.stderr))
    if mode == "lines":
        return Progress(StageLines(sys.stderr))
    return Progress()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module's docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    _setup_logging(args)
    handler: Handler = args.handler
    with cancel.handling():
        try:
            try:
                ctx = Context(progress=_progress(args), accel=args.accel, debug=args.debug)
                return handler(args, ctx)
            except BaseException as exc:  # every way out is one line and an exit status
                return _report(exc, args)
        except cancel.Interrupt as exc:  # the signal came while another error was being reported
            return _report(exc, args)


def _report(exc: BaseException, args: argparse.Namespace) -> int:
    """Say on one line why the command failed, and return its exit status; tracebacks only with --debug."""
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, BrokenPipeError) and exc.filename is None:
        # The reader of our output went away (`liveimg initramfs ls X | head`): stop quietly, as a
        # program killed by SIGPIPE would, and keep the interpreter from complaining at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGNAL + signal.SIGPIPE
    signum = cancel.requested()
    if isinstance(exc, Cancelled | cancel.Interrupt):
        signum = exc.signum
    elif isinstance(exc, KeyboardInterrupt):
        signum = signal.SIGINT
    if args.debug:
        log.error("liveimg %s failed", args.command, exc_info=exc)
    if signum is not None:
        # A failure caused by the cancellation itself (a tool killed on purpose) is the cancellation.
        text = str(exc) if isinstance(exc, Cancelled | cancel.Interrupt) else f"interrupted by {signal_name(signum)}"
        print(printable(f"liveimg: {text}"), file=sys.stderr)
        return EXIT_SIGNAL + signum
    if isinstance(exc, LiveImgError):
        print(printable(f"liveimg: error: {exc}"), file=sys.stderr)
    elif isinstance(exc, OSError):
        print(printable(f"liveimg: error: {describe_os_error(exc)}"), file=sys.stderr)
    else:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(printable(f"liveimg: internal error: {text} (a bug: please report it; --debug shows the traceback)"),
              file=sys.stderr)  # fmt: skip
    return EXIT_FAILURE


def describe_os_error(exc: OSError) -> str:
    """An ``OSError`` that no stage turned into a :class:`~liveimg.errors.HostError`, as one line naming the path."""
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, str | bytes) else None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = os.path.dirname(os.path.abspath(name)) if name else None
        return f"no space left on device in {where}" if where else "no space left on device"
    text = " ".join((exc.strerror or str(exc)).split())
    return f"{name}: {text}" if name else text
