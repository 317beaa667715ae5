"""Feed a tar stream into :class:`~liveimg.squashfs.writer.SquashfsWriter`, entry by entry.

The pipeline's flat rootfs type (the tree itself in the squashfs, no ext4 image inside)
reads the guest's files through libguestfs's ``tar-out``: GNU tar in the appliance, with
``--numeric-owner --xattrs --selinux --acls``.  Every extended attribute arrives in a
``SCHILY.xattr.<name>`` pax record (``security.selinux`` and the binary
``system.posix_acl_*`` values included); times in ``mtime``.  Hard links arrive as
``LNKTYPE`` members naming the first path; sparse regions as zeros (the writer stores
all-zero blocks as holes).  Nothing is staged on the host: file data goes from the
stream to the compressor.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
from typing import IO, BinaryIO, cast

from liveimg.errors import InvalidImage
from liveimg.squashfs.writer import SquashfsWriter

log = logging.getLogger(__name__)

_XATTR = "SCHILY.xattr."


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
    """The member's path below ``prefix`` ("" is the top), refusing names that climb out."""
    name = posixpath.normpath(member_name.lstrip("/")) if member_name not in (".", "./") else ""
    if name == ".":
        name = ""
    if name.startswith("../") or name == "..":
        raise InvalidImage(f"the guest's tar stream names a path outside its top: {member_name!r}")
    if prefix:
        return f"{prefix}/{name}" if name else prefix
    return name


def add_tar_stream(
    writer: SquashfsWriter, stream: IO[bytes], *, prefix: str = "", skip: frozenset[str] = frozenset()
) -> int:
    """Add every member of a tar ``stream`` below ``prefix``; return how many were added.

    ``skip`` names paths (relative to the stream's top) to leave out, with what is below them.
    """
    count = 0
    with tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape") as tar:
        for member in tar:
            rel = _name(member.name, "")
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            path = _name(member.name, prefix)
            mode, uid, gid, mtime, xattrs = (
                member.mode & 0o7777,
                member.uid,
                member.gid,
                int(member.mtime),
                _xattrs(member),
            )
            if member.isdir():
                writer.add_directory(path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs)
            elif member.islnk():
                writer.add_hardlink(path, _name(member.linkname, prefix))
            elif member.isreg():
                data = tar.extractfile(member)
                if data is None:
                    raise InvalidImage(f"{member.name}: no data in the tar stream")
                writer.add_file(
                    path,
                    cast(BinaryIO, data),
                    size=member.size,
                    mode=mode,
                    uid=uid,
                    gid=gid,
                    mtime=mtime,
                    xattrs=xattrs,
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
                log.warning("skipping %s: unsupported tar member type %r", member.name, member.type)
                continue
            count += 1
    return count
