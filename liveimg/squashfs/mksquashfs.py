"""A typed wrapper over squashfs-tools' ``mksquashfs``, the reference writer.

The pipeline used it before the native writer existed and keeps it as a backend
(``backend="mksquashfs"``).  Options come from the same :class:`SquashfsOptions` the
native writer takes; :func:`mksquashfs_argv` renders them as mksquashfs arguments.

Reproducibility: with ``$SOURCE_DATE_EPOCH`` set and neither ``mkfs_time`` nor ``all_time``
given, mksquashfs gets the variable: it makes it the superblock's time and clamps later
inode times to it (squashfs-tools 4.4 and later), as the native writer does.  mksquashfs
refuses the variable next to ``-mkfs-time`` or ``-all-time``, so with either option it is
removed from mksquashfs's environment (``-mkfs-time`` takes its value when only ``all_time``
is given); ``mkfs_time`` with ``$SOURCE_DATE_EPOCH`` then leaves inode times unclamped here,
where the native writer still clamps them.  The image is written beside ``dest`` under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from liveimg import run as runner
from liveimg.errors import HostError, InvalidOptions, ToolError
from liveimg.progress import Progress
from liveimg.squashfs.options import SquashfsOptions, SquashfsResult, clamp_to_epoch, source_date_epoch
from liveimg.staging import AtomicOutput, source_stat, staged_file

log = logging.getLogger(__name__)

#: Time limit for one mksquashfs run: xz on a 20 GiB image on two slow cores.
TIMEOUT = 6 * 3600.0


def mksquashfs_argv(source: Path, dest: Path, options: SquashfsOptions) -> list[str]:
    """The mksquashfs command line that builds ``dest`` from the directory ``source``."""
    o = options.validate()
    argv = ["mksquashfs", os.fspath(source), os.fspath(dest), "-noappend", "-no-progress", "-quiet"]
    argv += ["-comp", o.comp, "-b", str(o.block_size)]
    if o.Xbcj:
        argv += ["-Xbcj", ",".join(o.Xbcj)]
    if o.Xcompression_level is not None:
        argv += ["-Xcompression-level", str(o.Xcompression_level)]
    if o.Xdict_size is not None:
        argv += ["-Xdict-size", str(o.Xdict_size)]
    if o.Xhc:
        argv += ["-Xhc"]
    if o.no_fragments:
        argv += ["-no-fragments"]
    if o.always_use_fragments:
        argv += ["-always-use-fragments"]
    if o.no_exports:
        argv += ["-no-exports"]
    if o.no_xattrs:
        argv += ["-no-xattrs"]
    if o.all_root:
        argv += ["-all-root"]
    if o.force_uid is not None:
        argv += ["-force-uid", str(o.force_uid)]
    if o.force_gid is not None:
        argv += ["-force-gid", str(o.force_gid)]
    if not _epoch_passed(o):
        mkfs_time = o.mkfs_time if o.mkfs_time is not None else source_date_epoch()
        if mkfs_time is not None:
            argv += ["-mkfs-time", str(mkfs_time)]
        if o.all_time is not None:
            argv += ["-all-time", str(o.all_time)]
    if o.processors is not None:
        argv += ["-processors", str(o.processors)]
    return argv


def _epoch_passed(options: SquashfsOptions) -> bool:
    """Whether mksquashfs gets ``$SOURCE_DATE_EPOCH`` itself (set, and no time option to clash with it)."""
    return options.mkfs_time is None and options.all_time is None and source_date_epoch() is not None


def mksquashfs_env(options: SquashfsOptions) -> dict[str, str | None]:
    """Changes to mksquashfs's environment: ``SOURCE_DATE_EPOCH`` removed unless it is passed on."""
    return {} if _epoch_passed(options) else {"SOURCE_DATE_EPOCH": None}


def _tree_bytes(source: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(source):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def mksquashfs(
    source: Path,
    dest: Path,
    options: SquashfsOptions | None = None,
    progress: Progress | None = None,
) -> SquashfsResult:
    """Pack the directory ``source`` into the squashfs image ``dest`` with mksquashfs.

    Raises :class:`InvalidOptions` for bad options or a source that is not a directory,
    :class:`~liveimg.errors.ToolNotFound` without squashfs-tools, :class:`ToolError` when
    mksquashfs fails (nothing is left at ``dest`` then).
    """
    opts = (options or SquashfsOptions()).validate()
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise InvalidOptions(f"mksquashfs source {source} is not a directory")
    runner.require("mksquashfs")
    progress = progress or Progress()
    total = _tree_bytes(source)
    started = time.monotonic()
    with progress.stage("squashfs", total=total, unit="bytes") as stage, AtomicOutput(dest) as tmp:
        argv = mksquashfs_argv(source, tmp, opts)
        if dest.exists():
            # mksquashfs leaves out the file it writes (the temporary one), not the previous image
            # at dest: excluded by its absolute path, which mksquashfs matches by inode.
            argv += ["-e", os.fspath(dest.absolute())]
        try:
            runner.run(argv, timeout=TIMEOUT, env=mksquashfs_env(opts))
        except ToolError as exc:
            if exc.returncode is not None and "No space left" in exc.stderr:
                raise HostError(f"no space left on the device of {dest} while packing {source}") from exc
            raise
        stage.update(total)
        size = tmp.stat().st_size
    seconds = time.monotonic() - started
    log.info("mksquashfs packed %s into %s (%d bytes) in %.1f s", source, dest, size, seconds)
    return SquashfsResult(path=dest, size=size, seconds=seconds, backend="mksquashfs", options=opts)


def mksquashfs_file(
    file: Path,
    dest: Path,
    arcname: str,
    options: SquashfsOptions | None = None,
    progress: Progress | None = None,
) -> SquashfsResult:
    """Pack one file as ``arcname`` (e.g. ``LiveOS/rootfs.img``) into ``dest`` with mksquashfs.

    mksquashfs packs directories, so the file is staged in a temporary directory beside
    ``dest`` by a hard link (a reflink or sparse copy where linking fails).  The staged
    directories get mode 0755 and the file's mtime (clamped to ``$SOURCE_DATE_EPOCH``), so the
    result is reproducible.
    """
    file, dest = Path(file), Path(dest)
    own_mtime = int(source_stat(file, arcname).st_mtime)
    mtime = clamp_to_epoch(own_mtime)
    o = options or SquashfsOptions()
    if o.all_time is None and mtime != own_mtime:
        # The staged file is a hard link to the caller's file, whose mtime is not ours to change.
        options = o.replace(all_time=mtime)
    with staged_file(file, dest, arcname, mtime) as stage_root:
        return mksquashfs(stage_root, dest, options, progress)
