"""A tar stream as a source of entries (:mod:`liveimg.tree`), fed into the squashfs writer.

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
import stat
import tarfile
from collections.abc import Iterator
from typing import IO, cast

from liveimg.errors import HostError, InvalidImage, LiveImgError
from liveimg.squashfs.writer import SquashfsWriter
from liveimg.tree import Entry, display

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


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    # tarfile decodes pax values as UTF-8 with surrogateescape; undo it to get the raw bytes.
    pairs = ((key[len(_XATTR) :], value.encode("utf-8", "surrogateescape"))
             for key, value in member.pax_headers.items() if key.startswith(_XATTR))  # fmt: skip
    return tuple(sorted(pairs))


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


#: tar member types and the ``st_mode`` file type they stand for (a hard link, ``LNKTYPE``, aside).
_TYPE_BITS = {
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
    # tarfile's regular types, GNU sparse files included (it reads their map and fills the holes).
    **dict.fromkeys((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE), stat.S_IFREG),
}


class _Added:
    """How many members the consumer has taken, for messages."""

    count = 0


class _MemberData:
    """A member's bytes as the consumer reads them: a stream that ends early is a damaged stream."""

    def __init__(self, data: IO[bytes], added: _Added) -> None:
        self.data = data
        self.added = added

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self.data.read(size)
        except tarfile.TarError as exc:
            raise DamagedStream(f"the tar stream is damaged after {self.added.count} members: {exc}") from exc


def tar_entries(stream: IO[bytes], *, prefix: str = "", skip: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Every member of a tar ``stream`` below ``prefix`` as an :class:`~liveimg.tree.Entry` (a source).

    ``skip`` names paths (relative to the stream's top) to leave out, with what is below them.
    A regular file's data is the member's stream, read while the entry is the current one; a
    member naming an earlier one (``LNKTYPE``) is an entry with ``hardlink`` set.  The stream is
    read to its end.  Raises :class:`DamagedStream` when it is not a whole archive (also while
    a member's data is read), :class:`InvalidImage` for a member without data.
    """
    counted = _Counted(stream)
    added = _Added()
    try:
        with tarfile.open(fileobj=cast(IO[bytes], counted), mode="r|", errors="surrogateescape") as tar:
            for member in tar:
                entry = _entry(tar, member, prefix, skip, added)
                if entry is not None:
                    yield entry
                    added.count += 1
            _check_end(counted, tar.offset)
    except tarfile.TarError as exc:
        raise DamagedStream(f"the tar stream is damaged after {added.count} members: {exc}") from exc
    except OSError as exc:
        if isinstance(exc, LiveImgError):
            raise
        raise HostError(f"reading the tar stream failed after {added.count} members: {exc.strerror or exc}") from exc


def add_tar_stream(
    writer: SquashfsWriter, stream: IO[bytes], *, prefix: str = "", skip: frozenset[str] = frozenset()
) -> int:
    """Add every member of a tar ``stream`` below ``prefix`` (:func:`tar_entries`); return how many were added.

    Raises :class:`DamagedStream` when the stream is not a whole archive, :class:`InvalidImage`
    for a member the writer cannot store.
    """
    return writer.add_all(tar_entries(stream, prefix=prefix, skip=skip))


def _entry(
    tar: tarfile.TarFile, member: tarfile.TarInfo, prefix: str, skip: frozenset[str], added: _Added
) -> Entry | None:
    rel = _name(member.name, "")
    if any(rel == s or rel.startswith(s + "/") for s in skip):
        return None
    path = _name(member.name, prefix)
    hardlink = _name(member.linkname, prefix) if member.islnk() else None
    bits = stat.S_IFREG if hardlink is not None else _TYPE_BITS.get(member.type)
    if bits is None:
        log.warning("skipping %s: unsupported tar member type %r", display(path), member.type)
        return None
    data = None
    if bits == stat.S_IFREG and hardlink is None:
        stream = tar.extractfile(member)
        if stream is None:
            raise InvalidImage(f"{display(path)}: no data in the tar stream")
        data = _MemberData(stream, added)
    device = bits in (stat.S_IFCHR, stat.S_IFBLK)
    return Entry(
        path, bits | (member.mode & 0o7777), uid=member.uid, gid=member.gid, size=member.size,
        mtime_ns=int(member.mtime) * 10**9, rdev=(member.devmajor, member.devminor) if device else (0, 0),
        link_target=member.linkname if bits == stat.S_IFLNK else None, hardlink=hardlink, xattrs=_xattrs(member),
        data=data,
    )  # fmt: skip
