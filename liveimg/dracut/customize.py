"""Customise an initramfs without rerunning dracut: append a small cpio archive to it.

The kernel unpacks every archive of an initramfs in turn over the same root, later files
replacing earlier ones (``init/initramfs.c``), so appending an archive adds or replaces
files -- the trick coreos-installer's ``pxe customize`` uses.  What the appended archive
may carry here:

* kernel arguments, as ``/etc/cmdline.d/<name>.conf``: dracut's ``getcmdline`` reads every
  ``/etc/cmdline.d/*.conf`` (each line's words) as if they were on the kernel command line,
  so ``root=live:...``, ``rd.live.image`` or ``ostree=...`` can be baked in.  They are not in
  ``/proc/cmdline``, so only dracut's own hooks see them, which is where they are needed;
* any other files (a cloud-init seed, a CA bundle, a systemd unit for the initramfs).
  They exist in the initramfs only: whatever must reach the booted root needs a hook that
  copies it there.

Alignment, from the kernel's ``unpack_to_rootfs``: zero bytes between archives are skipped;
an uncompressed archive must begin at a multiple of 4 bytes from the start of the file
(counted across the whole file, also after compressed segments), and anything following an
uncompressed archive must begin on such a boundary too ("broken padding" otherwise).  So
the original is padded with zeros to a multiple of 4 before the new archive is appended.
A compressed appended archive is fine as long as the kernel's decompressor knows where it
ends: gzip and xz do (xz must use CRC32: the kernel's xz decoder has no CRC64 by default);
the legacy lz4 format has no end marker, so nothing can follow an lz4 segment -- an
initramfs whose last segment is lz4 is refused.

The appended archive is reproducible (see :mod:`.cpio`): the same arguments and files give
the same bytes.
"""

from __future__ import annotations

import enum
import gzip
import logging
import lzma
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from liveimg.dracut import cpio
from liveimg.dracut.initramfs import Source, opened
from liveimg.dracut.output import replaced_whole
from liveimg.errors import InvalidImage, InvalidOptions

log = logging.getLogger(__name__)

CMDLINE_DIR = "etc/cmdline.d"
DEFAULT_CMDLINE_NAME = "90-liveimg.conf"


class AppendCompression(enum.StrEnum):
    """How the appended archive is stored; small archives gain little from compression."""

    NONE = "none"
    GZIP = "gzip"
    XZ = "xz"


@dataclass(frozen=True)
class EmbeddedFile:
    """A host file to put into the initramfs at ``dest`` (an absolute path in the initramfs)."""

    source: Path
    dest: str
    mode: int | None = None  # None: 0755 if the source is executable by its owner, else 0644


@dataclass(frozen=True)
class Appended:
    """The result of :func:`append_cpio`."""

    path: Path
    offset: int  # where the appended archive begins in ``path``
    size: int  # bytes from ``offset`` to the end of the file (the archive and its padding)
    compression: AppendCompression
    paths: tuple[str, ...]  # what the archive holds (directories included)


def check_karg(arg: str) -> str:
    """A kernel argument as dracut's cmdline.d reader takes it: one word, printable, no quotes."""
    if not arg or arg != arg.strip() or any(c.isspace() for c in arg):
        raise InvalidOptions(f"kernel argument {arg!r} must be one word without spaces")
    if any(not c.isprintable() for c in arg):
        raise InvalidOptions(f"kernel argument {arg!r} contains a control character")
    if '"' in arg or "'" in arg:
        raise InvalidOptions(f"kernel argument {arg!r} contains quotes; dracut's cmdline.d reader does not unquote")
    return arg


def customization_entries(
    *, kargs: Sequence[str] = (), files: Sequence[EmbeddedFile] = (), cmdline_name: str = DEFAULT_CMDLINE_NAME
) -> list[cpio.Entry]:
    """The cpio entries that carry ``kargs`` and ``files`` (without parent directories)."""
    if "/" in cmdline_name or not cmdline_name.endswith(".conf") or cmdline_name.startswith("."):
        raise InvalidOptions(f"cmdline file name {cmdline_name!r} must be a plain name ending in .conf")
    entries: list[cpio.Entry] = []
    if kargs:
        line = " ".join(check_karg(a) for a in kargs) + "\n"
        entries.append(cpio.file(f"{CMDLINE_DIR}/{cmdline_name}", line.encode(), 0o644))
    for f in files:
        try:
            info = f.source.stat()
        except FileNotFoundError:
            raise InvalidOptions(f"file to embed {f.source} does not exist") from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidOptions(f"file to embed {f.source} is not a regular file")
        if not f.dest.startswith("/"):
            raise InvalidOptions(f"destination {f.dest!r} of {f.source} must be an absolute path in the initramfs")
        mode = f.mode if f.mode is not None else (0o755 if info.st_mode & stat.S_IXUSR else 0o644)
        entries.append(cpio.file(f.dest, f.source, mode))
    if not entries:
        raise InvalidOptions("nothing to append: give kernel arguments or files")
    return entries


def append_cpio(
    initramfs: Source,
    output: str | os.PathLike[str],
    *,
    kargs: Sequence[str] = (),
    files: Sequence[EmbeddedFile] = (),
    compression: AppendCompression = AppendCompression.NONE,
    cmdline_name: str = DEFAULT_CMDLINE_NAME,
    mtime: int | None = None,
) -> Appended:
    """Write ``output``: ``initramfs`` followed by an archive with ``kargs`` and ``files``.

    ``initramfs`` is read in full first (a corrupt one is an :class:`InvalidImage`), or was, when
    it is given open (:func:`~liveimg.dracut.initramfs.opened`; its file must not have changed
    since).  It is never modified, unless ``output`` is the same path, in which case it is
    replaced whole once the new file is complete.
    """
    dst = Path(output)
    wanted = customization_entries(kargs=kargs, files=files, cmdline_name=cmdline_name)
    with opened(initramfs) as ird:
        src = ird.path
        last = ird.segments[-1]
        existing = ird.files()
    # Parent directories the initramfs already has are left out: for a directory entry the
    # kernel also applies the entry's mode and owner to an existing directory (or, through
    # a symbolic link, to its target), and the originals are right as they are.
    entries = [e for e in cpio.with_parents(wanted) if e in wanted or e.name not in existing]
    if last.compression == "lz4":
        raise InvalidImage(
            f"{src} ends with an lz4-compressed segment; the kernel cannot find its end, so nothing can be "
            f"appended after it",
            hint="rebuild it with another compression (xz, zstd or gzip)",
        )
    archive = cpio.newc_bytes(entries, mtime=mtime, parents=False)
    if compression is AppendCompression.GZIP:
        archive = gzip.compress(archive, compresslevel=9, mtime=0)
    elif compression is AppendCompression.XZ:
        archive = lzma.compress(archive, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    with replaced_whole(dst) as tmp:
        with open(tmp, "wb") as out:
            with open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
            offset = out.tell()
            pad = -offset % 4
            out.write(b"\0" * pad)
            out.write(archive)
            # Keep the whole file a multiple of 4, so that yet another archive can follow.
            tail = -(offset + pad + len(archive)) % 4
            out.write(b"\0" * tail)
        shutil.copymode(src, tmp)
    log.info("appended %d bytes (%s) to %s: %s", len(archive), compression, dst, ", ".join(e.name for e in entries))
    return Appended(
        path=dst,
        offset=offset + pad,
        size=len(archive) + tail,
        compression=compression,
        paths=tuple(sorted(e.name for e in entries)),
    )


def hook_dir(initramfs: Source, hook: str) -> str:
    """Where a dracut initramfs keeps the scripts of ``hook`` (``pre-mount``, ``pre-pivot``, ...).

    ``lib`` may be a link to ``usr/lib`` (merged /usr), and an appended archive must name
    the real directory: the kernel's unpacker would not follow the link for a new entry.
    """
    with opened(initramfs) as found:
        for candidate in (f"usr/lib/dracut/hooks/{hook}", f"lib/dracut/hooks/{hook}"):
            if any(m.kind is cpio.Kind.DIR for m in found.find(candidate)):
                return candidate
        raise InvalidImage(f"{found.path} has no dracut {hook} hook directory: is it a dracut initramfs?")
