"""Thin typed wrappers over e2fsprogs, used on ext4 image *files* (never mounted).

The bytes of these images come from the guest, and e2fsprogs is C: every tool here but
``mkfs.ext4`` (which only writes) runs in :mod:`liveimg.sandbox`, with the image handed over
as an open file (``/proc/self/fd/N``: no host path is visible) and, for the tools that write
files (``debugfs`` ``dump``/``rdump``), one directory of its own.  When liveimg runs as
root, an image a tool must write is lent to the sandbox user for the call
(:func:`lend`) and given back after.

All of them run with ``E2FSPROGS_FAKE_TIME`` and ``E2FSCK_TIME`` set from
``SOURCE_DATE_EPOCH`` when that is set, so that the times e2fsprogs writes (superblock
write and check times, the times of inodes debugfs creates) do not depend on the clock,
and rebuilding the same input gives the same bytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from liveimg import run as runner
from liveimg import sandbox
from liveimg.errors import InvalidImage, ToolError

log = logging.getLogger(__name__)

#: e2fsck exit status bits (e2fsck(8)).
FSCK_CORRECTED = 1
FSCK_REBOOT = 2
FSCK_UNCORRECTED = 4
FSCK_OPERATIONAL = 8
FSCK_USAGE = 16
FSCK_CANCELLED = 32


def fake_time_env() -> dict[str, str]:
    """The clock e2fsprogs should use, from ``SOURCE_DATE_EPOCH``, if that is set.

    ``E2FSPROGS_FAKE_TIME`` for the library (inode times debugfs writes), ``E2FSCK_TIME``
    for e2fsck, which stamps the superblock's last write and last check times with it.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch or not epoch.isdigit():
        return {}
    return {"E2FSPROGS_FAKE_TIME": epoch, "E2FSCK_TIME": epoch}


#: What one e2fsprogs run may use besides time: these tools run one process each.  Their memory
#: grows with the filesystem (e2fsck keeps bitmaps and directory information), not with files.
TOOL_TASKS = 8
TOOL_MEMORY = 8 * sandbox.GiB


def _limits(image: Path, seconds: float, *, grow_to: int = 0, disk: int | None = None) -> sandbox.Limits:
    # The only file a tool writes is the image (or, for dump, a file of the image): nothing
    # larger than the image, or than the size it is being resized to.
    size = max(os.stat(image).st_size, grow_to, sandbox.MiB)
    return sandbox.Limits(seconds=seconds, tasks=TOOL_TASKS, memory=TOOL_MEMORY, file_size=size, disk=disk)


@contextlib.contextmanager
def lend(image: Path, writable: bool) -> Iterator[None]:
    """As root, a work image the sandbox user must write (or cannot read) is given to it for the
    call, and given back -- owner and mode -- afterwards.  Otherwise nothing changes."""
    ids = sandbox.sandbox_ids()
    st = os.lstat(image)
    if ids is None or not stat.S_ISREG(st.st_mode) or (not writable and sandbox.can_read(st, ids)):
        yield
        return
    os.lchown(image, *ids)
    try:
        yield
    finally:
        os.lchown(image, st.st_uid, st.st_gid)
        os.chmod(image, stat.S_IMODE(st.st_mode))  # a chown clears set-id bits; the mode comes back whole


_session: contextvars.ContextVar[sandbox.Session | None] = contextvars.ContextVar("e2fs_session", default=None)


@contextlib.contextmanager
def session(
    image: Path, *, writable: bool, mounts: Sequence[sandbox.Bind] = (), max_size: int = 0
) -> Iterator[sandbox.Session]:
    """Run the e2fsprogs calls on ``image`` in this block in one sandbox (:class:`sandbox.Session`):
    a stage's ten tools then cost one sandbox start.  ``mounts`` are those the calls will need;
    ``max_size`` the largest the image may grow to.  Calls the session does not cover (another
    file, another mount, a larger size) run in sandboxes of their own, as outside the block.
    """
    limits = sandbox.Limits(seconds=3600, tasks=TOOL_TASKS, memory=TOOL_MEMORY,
                            file_size=max(os.stat(image).st_size, max_size, sandbox.MiB))  # fmt: skip
    with lend(image, writable):
        files = [sandbox.File(image, writable=writable)]
        with sandbox.Session(what="e2fsprogs", files=files, mounts=mounts, limits=limits, env=fake_time_env()) as s:
            token = _session.set(s)
            try:
                yield s
            finally:
                _session.reset(token)


def _run(
    argv: Sequence[str | sandbox.File],
    *,
    image: Path,
    timeout: float,
    writable: bool = False,
    check: bool = True,
    ok_codes: tuple[int, ...] = (0,),
    input: bytes | None = None,
    grow_to: int = 0,
    mounts: Sequence[sandbox.Bind] = (),
    disk: int | None = None,
) -> runner.Completed:
    """Run an e2fsprogs tool in the sandbox (the :func:`session`'s if one covers it); ``image`` is
    one of ``argv``'s :class:`sandbox.File`\\ s."""
    active = _session.get()
    if (
        active is not None
        and all(active.has(a) for a in argv if isinstance(a, sandbox.File))
        and all(m in active.mounts for m in mounts)
        and grow_to <= active.limits.file_size
    ):
        return active.run(argv, timeout=timeout, input=input, check=check, ok_codes=ok_codes)
    with lend(image, writable):
        return sandbox.run(
            argv, what=str(argv[0]), env=fake_time_env(), limits=_limits(image, timeout, grow_to=grow_to, disk=disk),
            check=check, ok_codes=ok_codes, input=input, mounts=mounts,
        )  # fmt: skip


@dataclass(frozen=True)
class Superblock:
    """The fields of ``dumpe2fs -h`` that liveimg uses."""

    block_size: int
    block_count: int
    free_blocks: int
    inode_count: int
    free_inodes: int
    inode_size: int
    label: str
    uuid: str
    features: frozenset[str]
    reserved_blocks: int
    state: str

    @property
    def size(self) -> int:
        return self.block_size * self.block_count

    @property
    def used_bytes(self) -> int:
        return self.block_size * (self.block_count - self.free_blocks)


_HEADER_FIELDS = {
    "Block size": "block_size",
    "Block count": "block_count",
    "Free blocks": "free_blocks",
    "Inode count": "inode_count",
    "Free inodes": "free_inodes",
    "Inode size": "inode_size",
    "Filesystem volume name": "label",
    "Filesystem UUID": "uuid",
    "Filesystem features": "features",
    "Reserved block count": "reserved_blocks",
    "Filesystem state": "state",
}


def parse_superblock(text: str, what: str) -> Superblock:
    """Parse ``dumpe2fs -h`` output; ``what`` names the filesystem in errors."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in _HEADER_FIELDS:
            values[_HEADER_FIELDS[key.strip()]] = value.strip()
    missing = [f for f in ("block_size", "block_count", "free_blocks", "uuid") if f not in values]
    if missing:
        raise InvalidImage(f"{what}: not an ext2/3/4 filesystem (dumpe2fs shows no {', '.join(missing)})")
    label = values.get("label", "")

    def number(name: str, default: str = "0") -> int:
        # What dumpe2fs prints comes from the guest's bytes (through a tool that may have been
        # fooled): read strictly, with bounds.
        text = values.get(name, default)
        if not re.fullmatch(r"[0-9]{1,20}", text) or int(text) >= 1 << 64:
            raise InvalidImage(f"{what}: dumpe2fs shows an unreadable {name.replace('_', ' ')}: {text[:40]!r}")
        return int(text)

    sb = Superblock(
        block_size=number("block_size"),
        block_count=number("block_count"),
        free_blocks=number("free_blocks"),
        inode_count=number("inode_count"),
        free_inodes=number("free_inodes"),
        inode_size=number("inode_size", "128"),
        label="" if label == "<none>" else label,
        uuid=values["uuid"],
        features=frozenset(values.get("features", "").split()),
        reserved_blocks=number("reserved_blocks"),
        state=values.get("state", ""),
    )
    if sb.block_size not in (1024, 2048, 4096, 8192, 16384, 32768, 65536) or sb.free_blocks > sb.block_count:
        raise InvalidImage(f"{what}: dumpe2fs shows an impossible superblock (block size {sb.block_size}, "
                           f"{sb.free_blocks} of {sb.block_count} blocks free)")  # fmt: skip
    return sb


def superblock(image: Path) -> Superblock:
    """Read the superblock of the ext filesystem in ``image``."""
    try:
        result = _run(["dumpe2fs", "-h", sandbox.File(image)], image=image, timeout=120)
    except ToolError as exc:
        raise InvalidImage(f"{image}: cannot read an ext2/3/4 superblock: {exc.stderr or exc}") from exc
    return parse_superblock(result.stdout, str(image))


@dataclass(frozen=True)
class FsckResult:
    status: int
    output: str

    @property
    def corrected(self) -> bool:
        return bool(self.status & FSCK_CORRECTED)

    @property
    def clean(self) -> bool:
        return self.status == 0


def fsck(image: Path, *, repair: bool, force: bool = True, discard: bool = False, what: str = "") -> FsckResult:
    """Check (and with ``repair``, fix) the filesystem in an image file.

    "Errors corrected" (status 1) and "reboot" (2) are not failures; uncorrected errors,
    operational errors or a cancelled check raise :class:`InvalidImage` or :class:`ToolError`.
    With ``repair=False`` the check only reads; any error found is returned in ``status``.
    """
    argv: list[str | sandbox.File] = ["e2fsck", "-y" if repair else "-n"]
    if force:
        argv.append("-f")
    if discard:
        argv += ["-E", "discard"]
    writable = repair or discard
    argv.append(sandbox.File(image, writable=writable))
    result = _run(argv, image=image, writable=writable, timeout=3600, check=False)
    output = (result.stdout + result.stderr).strip()
    status = result.returncode
    if status & (FSCK_OPERATIONAL | FSCK_USAGE | FSCK_CANCELLED):
        raise ToolError(result.argv, status, output)
    if repair and status & FSCK_UNCORRECTED:
        tail = " / ".join(output.splitlines()[-3:])
        raise InvalidImage(f"{what or image}: e2fsck could not repair the filesystem: {tail}")
    log.debug("e2fsck %s: status %d", image, status)
    return FsckResult(status, output)


def replay_journal(image: Path) -> None:
    """Replay a journal left by an unclean unmount (only the journal, nothing else)."""
    argv: list[str | sandbox.File] = ["e2fsck", "-y", "-E", "journal_only", sandbox.File(image, writable=True)]
    _run(argv, image=image, writable=True, timeout=600, ok_codes=(0, 1, 2))


def min_size_blocks(image: Path) -> int:
    """The smallest size, in blocks, resize2fs could shrink the filesystem to (``resize2fs -P``)."""
    result = _run(["resize2fs", "-P", sandbox.File(image)], image=image, timeout=600)
    match = re.search(r"Estimated minimum size of the filesystem:\s*(\d+)", result.stdout)
    if not match:
        raise ToolError(result.argv, result.returncode, result.stdout, message="resize2fs -P printed no estimate")
    return int(match.group(1))


def resize(image: Path, blocks: int, block_size: int) -> None:
    """Grow or shrink the filesystem in an image file to ``blocks`` blocks, and the file with it."""
    new_size = blocks * block_size
    current = image.stat().st_size
    if new_size > current:
        os.truncate(image, new_size)  # resize2fs grows a file system to its device's size
    # -f: resize2fs refuses a filesystem mounted after its last full check (s_lastcheck <
    # s_mtime), which is every root that has booted since.  liveimg has just checked its copy
    # with e2fsck -f, and E2FSCK_TIME (SOURCE_DATE_EPOCH) may even predate that last mount.
    argv: list[str | sandbox.File] = ["resize2fs", "-f", sandbox.File(image, writable=True), f"{new_size // 1024}K"]
    _run(argv, image=image, writable=True, timeout=3600, grow_to=new_size)
    if new_size < current:
        os.truncate(image, new_size)


def tune(image: Path, *, label: str | None = None, reserved_percent: int | None = None) -> None:
    argv: list[str | sandbox.File] = ["tune2fs"]
    if label is not None:
        argv += ["-L", label]
    if reserved_percent is not None:
        argv += ["-m", str(reserved_percent)]
    argv.append(sandbox.File(image, writable=True))
    _run(argv, image=image, writable=True, timeout=600)


def debugfs_quote(name: str) -> str:
    """Quote one argument for a debugfs command file (a ``"`` is written twice)."""
    if "\n" in name or "\r" in name or "\0" in name:
        raise InvalidImage(f"cannot handle a file name with a line break or NUL byte: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def debugfs_script(
    image: Path,
    commands: list[str],
    *,
    writable: bool,
    workdir: Path | None = None,
    mounts: Sequence[sandbox.Bind] = (),
    disk: int | None = None,
) -> str:
    """Run debugfs commands (given on its stdin) against an image; return what debugfs printed.

    The commands run in the sandbox: host paths in them must be below ``mounts`` (their
    targets), and only writable mounts can receive files.  ``workdir`` is no longer used.
    debugfs reports most command failures on stderr but still exits 0, so every line it
    prints to stderr, except its banner and what the caller expects, is an error here.
    """
    del workdir  # commands go through stdin now
    argv: list[str | sandbox.File] = ["debugfs"]
    if writable:
        argv.append("-w")
    argv += ["-f", "-", sandbox.File(image, writable=writable)]
    script = "".join(c + "\n" for c in commands).encode()
    result = _run(argv, image=image, writable=writable, timeout=3600, input=script, mounts=mounts, disk=disk)
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("debugfs ") and "Allocated inode" not in line
    ]
    if errors:
        raise ToolError(result.argv, 0, "\n".join(errors), message=f"debugfs failed on {image}: {errors[0]}")
    return result.stdout


#: Where :func:`dump_file` shows its output directory inside the sandbox.
_DUMP_DIR = "/liveimg-out"


def dump_file(image: Path, guest_path: str, dest: Path) -> None:
    """Copy the file ``guest_path`` of the image into the new host file ``dest`` (debugfs ``dump``).

    debugfs writes into a directory of its own in the sandbox; the result must then be a
    regular file (not a link or anything a hostile image could make of it) to be moved to ``dest``.
    """
    with sandbox.scratch(dest.parent, f".{dest.name}.dump-") as out:
        command = f"dump {debugfs_quote(guest_path)} {debugfs_quote(_DUMP_DIR + '/file')}"
        try:
            debugfs_script(image, [command], writable=False, mounts=[sandbox.Bind(out, _DUMP_DIR, writable=True)],
                           disk=max(os.stat(image).st_size, sandbox.MiB))  # fmt: skip
        except sandbox.LimitExceeded:
            raise
        except ToolError as exc:
            raise InvalidImage(f"{guest_path} cannot be read from {image}: {exc.stderr.splitlines()[0]}") from None
        try:
            st = os.lstat(out / "file")
        except FileNotFoundError:
            raise InvalidImage(f"{guest_path} cannot be read from {image}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImage(f"{guest_path} in {image} is not a regular file")
        os.replace(out / "file", dest)
        sandbox.take_back(dest)


def mkfs(
    image: Path,
    size: int,
    *,
    label: str,
    source: Path | None = None,
    uuid: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Make an ext4 filesystem of ``size`` bytes (4 KiB blocks, no reserved blocks) in a file.

    It reads no guest bytes (``source`` is a host directory, copied without following its
    links), so it runs on the host.
    """
    argv: list[str | os.PathLike[str]] = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-L", label]
    if uuid:
        argv += ["-U", uuid]
    if source is not None:
        argv += ["-d", source]
    for key, value in (extra or {}).items():
        argv += [key, value]
    argv += [image, f"{size // 1024}K"]
    runner.run(argv, env=fake_time_env(), timeout=3600)
