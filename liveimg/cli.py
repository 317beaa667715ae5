"""The ``liveimg`` command line: a thin front end over the library.

Exit status: 0 success, 1 failure (a :class:`~liveimg.errors.LiveImgError`, printed as one
line; ``--debug`` adds the traceback), 2 usage error, 130 interrupted.  Only this module
maps errors to exit codes; the library raises.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveimg import __version__
from liveimg import run as runner
from liveimg.accel import choose_accel
from liveimg.errors import InvalidOptions, LiveImgError
from liveimg.progress import JsonLines, Progress, TerminalBar

if TYPE_CHECKING:
    from liveimg.dracut.customize import EmbeddedFile

log = logging.getLogger("liveimg")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
        choices=("auto", "bar", "json", "none"),
        default=default("auto"),
        help="progress: a bar on a terminal (auto), JSON lines on stdout for programs, or none",
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
    ("unsquashfs", "tests"),
    ("cpio", "initramfs"),
    ("unshare", "dracut sandbox"),
    ("xz", "initramfs compression"),
    ("zstd", "initramfs compression"),
)

DOCTOR_MODULES: tuple[tuple[str, str], ...] = (
    ("guestfs", "Debian package python3-guestfs (venv made with --system-site-packages)"),
    ("libarchive", "PyPI libarchive-c and Debian libarchive13"),
    ("yaml", "PyPI PyYAML"),
    ("zstandard", "PyPI zstandard (optional: zstd squashfs)"),
    ("lz4", "PyPI lz4 (optional: lz4 squashfs)"),
)


def _add_doctor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _cmd_doctor(args: argparse.Namespace, ctx: Context) -> int:
    tools = {name: runner.which(name) for name, _ in DOCTOR_TOOLS}
    modules = {name: importlib.util.find_spec(name) is not None for name, _ in DOCTOR_MODULES}
    choice = choose_accel(ctx.accel)
    report = {
        "version": __version__,
        "accel": {"choice": str(choice.accel), "reason": choice.reason},
        "tools": tools,
        "modules": modules,
    }
    missing = [n for n, p in tools.items() if p is None] + [n for n, ok in modules.items() if not ok]
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
    return EXIT_FAILURE if missing else EXIT_OK


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
    append.add_argument("--compress", choices=("none", "gzip", "xz"), default="none",
                        help="compression of the appended archive (default: none)")  # fmt: skip
    append.add_argument("--cmdline-name", default="90-liveimg.conf", help="file name in /etc/cmdline.d")
    _add_common(append, top=False)


def _parse_embedded(value: str) -> EmbeddedFile:
    from liveimg.dracut.customize import EmbeddedFile  # noqa: PLC0415  # keeps `liveimg --help` fast

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
    from liveimg.dracut.customize import AppendCompression, append_cpio  # noqa: PLC0415  # keeps --help fast
    from liveimg.dracut.initramfs import Initramfs  # noqa: PLC0415

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
                print(member.describe())
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


def _cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    from liveimg.guest import inspect_image  # noqa: PLC0415  # keeps `liveimg --help` fast

    info = inspect_image(
        args.image, deployment=args.deployment, kernel=args.kernel, accel=ctx.accel, progress=ctx.progress
    )
    for warning in info.warnings:
        log.info("%s: %s", args.image, warning)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.summary())
    return EXIT_OK


# --- the parser ---------------------------------------------------------------------------

COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler], ...] = (
    ("doctor", "check this machine: tools, Python modules, KVM or TCG", _add_doctor, _cmd_doctor),
    ("inspect", "describe an image: partitions, root, /boot, ostree deployments, kernel", _add_inspect, _cmd_inspect),
    ("initramfs", "read an initramfs, or append kernel arguments and files to it", _add_initramfs, _cmd_initramfs),
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


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if args.verbose:
        level = logging.INFO
    if args.debug:
        level = logging.DEBUG
    if args.quiet:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if args.debug else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _progress(args: argparse.Namespace) -> Progress:
    mode = args.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() and not args.quiet else "none"
    if mode == "json":
        return Progress(JsonLines(sys.stdout), rate=2.0)
    if mode == "bar":
        return Progress(TerminalBar(sys.stderr))
    return Progress()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    _setup_logging(args)
    ctx = Context(progress=_progress(args), accel=args.accel, debug=args.debug)
    handler: Handler = args.handler
    try:
        return handler(args, ctx)
    except LiveImgError as exc:
        if args.debug:
            log.exception("liveimg %s failed", args.command)
        print(f"liveimg: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("liveimg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
