"""Feed a tar stream into :class:`~liveimg.squashfs.writer.SquashfsWriter`, entry by entry.

The pipeline's flat rootfs type (the tree itself in the squashfs, no ext4 image inside)
reads the guest's files through libguestfs's ``tar-out``: GNU tar in the appliance, with
``--numeric-owner --xattrs --selinux --acls``.  Every extended attribute arrives in a
``SCHILY.xattr.<name>`` pax record (``security.selinux`` and the binary
``system.posix_acl_*`` values included); times in ``mtime``.  Hard links arrive as
``LNKTYPE`` members naming the first path; sparse regions as zeros (the writer stores
all-zero blocks as holes).  Nothing is staged on the host: file data goes from the
stream to the compressor.

The stream is the guest's content: member names go to the writer as they are (GNU tar's
leading ``./`` aside), and the writer refuses any it could not store.  The stream must end
with tar's end-of-archive marker: Python's tarfile takes a stream cut at a member boundary,
or a damaged header, for the end of the archive, which would lose the rest of the tree
without a word.
"""

from __future__ import annotations

import collections
import logging
import tarfile
from typing import IO, BinaryIO, cast

from liveimg.errors import HostError, InvalidImage, LiveImgError
from liveimg.squashfs.fstree import display
from liveimg.squashfs.writer import SquashfsWriter

log = logging.getLogger(__name__)

_XATTR = "SCHILY.xattr."
_BLOCK = tarfile.BLOCKSIZE
#: Bytes read after the end-of-archive marker at most (GNU tar pads to a 10 KiB record).
_MAX_TRAILER = 1 << 20


class DamagedStream(InvalidImage):
    """The tar stream is not a whole archive: cut short, a damaged header, a member's data missing."""


class _Counted:
    """The raw stream, counting what it gives and keeping its last bytes (to find the end marker)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.pos = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._kept = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self.pos += len(data)
            self._chunks.append(data)
            self._kept += len(data)
            while self._kept - len(self._chunks[0]) >= 2 * _MAX_TRAILER:
                self._kept -= len(self._chunks.popleft())
        return data

    def since(self, offset: int) -> bytes | None:
        """The bytes from ``offset`` to what was read last; None when no longer kept."""
        start = self.pos - self._kept
        if offset < start:
            return None
        return b"".join(self._chunks)[offset - start :]


def _xattrs(member: tarfile.TarInfo) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if key.startswith(_XATTR):
            # tarfile decodes pax values as UTF-8 with surrogateescape; undo it to get the raw bytes.
            out.append(
                (key[len(_XATTR) :].encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
            )
    return sorted(out)


def _name(member_name: str, prefix: str) -> str:
    """The member's path below ``prefix`` ("" is the top): GNU tar's ``./a/b`` is ``a/b``, ``.`` the top.

    Anything else goes to the writer as it is, which refuses ``..``, empty names and the like.
    """
    if member_name in (".", "./"):
        name = ""
    elif member_name.startswith("./"):
        name = member_name[2:]
    else:
        name = member_name
    if prefix:
        return f"{prefix}/{name}" if name else prefix
    return name


def _check_end(stream: _Counted, end: int) -> None:
    """Read the stream to its end and check that the archive ended there with its marker (zeros)."""
    while stream.pos - end <= _MAX_TRAILER and stream.read(1 << 16):
        pass
    trailer = stream.since(end)
    if trailer is None or len(trailer) > _MAX_TRAILER:
        raise DamagedStream(f"the tar stream goes on after its end-of-archive marker at byte {end}")
    if not trailer:
        raise DamagedStream(f"the tar stream stops at byte {end} without its end-of-archive marker (cut short)")
    if len(trailer) < _BLOCK:
        raise DamagedStream(f"the tar stream stops inside a header at byte {end} (cut short)")
    if trailer[:_BLOCK].count(0) != _BLOCK:
        raise DamagedStream(f"the tar stream has a damaged header at byte {end}")
    if trailer.count(0) != len(trailer):
        raise DamagedStream(f"the tar stream goes on after its end-of-archive marker at byte {end}")


def add_tar_stream(
    writer: SquashfsWriter, stream: IO[bytes], *, prefix: str = "", skip: frozenset[str] = frozenset()
) -> int:
    """Add every member of a tar ``stream`` below ``prefix``; return how many were added.

    ``skip`` names paths (relative to the stream's top) to leave out, with what is below them.
    The stream is read to its end.  Raises :class:`DamagedStream` when it is not a whole
    archive, :class:`InvalidImage` for a member the writer cannot store.
    """
    counted = _Counted(stream)
    count = 0
    try:
        with tarfile.open(fileobj=cast(IO[bytes], counted), mode="r|", errors="surrogateescape") as tar:
            for member in tar:
                count += _add_member(writer, tar, member, prefix, skip)
            _check_end(counted, tar.offset)
    except tarfile.TarError as exc:
        raise DamagedStream(f"the tar stream is damaged after {count} members: {exc}") from exc
    except OSError as exc:
        if isinstance(exc, LiveImgError):
            raise
        raise HostError(f"reading the tar stream failed after {count} members: {exc.strerror or exc}") from exc
    return count


def _add_member(
    writer: SquashfsWriter, tar: tarfile.TarFile, member: tarfile.TarInfo, prefix: str, skip: frozenset[str]
) -> int:
    rel = _name(member.name, "")
    if any(rel == s or rel.startswith(s + "/") for s in skip):
        return 0
    path = _name(member.name, prefix)
    mode, uid, gid, mtime, xattrs = member.mode & 0o7777, member.uid, member.gid, int(member.mtime), _xattrs(member)
    if member.isdir():
        writer.add_directory(path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
    elif member.islnk():
        writer.add_hardlink(path, _name(member.linkname, prefix))
    elif member.isreg():
        data = tar.extractfile(member)
        if data is None:
            raise InvalidImage(f"{display(path)}: no data in the tar stream")
        writer.add_file(
            path, cast(BinaryIO, data), size=member.size, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs
        )
    elif member.issym():
        writer.add_symlink(path, member.linkname, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
    elif member.ischr() or member.isblk():
        kind = "c" if member.ischr() else "b"
        writer.add_device(path, kind, member.devmajor, member.devminor, mode=mode, uid=uid, gid=gid,
                          mtime=mtime, xattrs=xattrs)  # fmt: skip
    elif member.isfifo():
        writer.add_fifo(path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
    else:
        log.warning("skipping %s: unsupported tar member type %r", display(path), member.type)
        return 0
    return 1
