"""A file tree with every piece of metadata, read from a host directory or from the guest.

The rootfs stage writes trees (the boot partition's files) into an ext4 image file with
debugfs; it needs, for every entry, what ``cp -a`` would keep: type, permission bits
(setuid/setgid/sticky included), owner, times to the nanosecond, device numbers, link
targets, extended attributes (``security.selinux`` and POSIX ACLs included, in their raw
VFS form) and hard-link identity.  :class:`TreeEntry` is that record; :class:`HostTree`
reads one from a host directory, :class:`ApplianceTree` from a directory inside the
libguestfs appliance (in a few bulk calls per directory).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from liveimg.errors import InvalidImage

Kind = Literal["dir", "file", "symlink", "chardev", "blockdev", "fifo", "socket"]

_KINDS: dict[int, Kind] = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a tree; ``path`` is relative to the tree's top ("" is the top itself)."""

    path: str
    kind: Kind
    mode: int  # st_mode, type bits included
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int = 0
    link_target: str | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    inode: tuple[int, int] | None = None  # (st_dev, st_ino): the same for hard links
    nlink: int = 1

    @property
    def permissions(self) -> int:
        return stat.S_IMODE(self.mode)


def kind_of(mode: int, where: str) -> Kind:
    kind = _KINDS.get(stat.S_IFMT(mode))
    if kind is None:
        raise InvalidImage(f"{where}: unknown file type (mode {mode:o})")
    return kind


class TreeSource(Protocol):
    """Where a tree comes from: its entries, parents before children, and file contents."""

    def entries(self) -> list[TreeEntry]: ...

    def fetch(self, entry: TreeEntry, dest: Path) -> None:
        """Write the content of a regular file into the host file ``dest``."""


def _check_name(path: str, where: str) -> None:
    if any(part in ("", ".", "..") for part in PurePosixPath(path).parts) or path.startswith("/"):
        raise InvalidImage(f"{where}: unexpected path {path!r} in a listing")


class HostTree:
    """A tree in a host directory (tests, and inputs already on the host)."""

    def __init__(self, top: Path) -> None:
        self.top = top

    def _entry(self, rel: str) -> TreeEntry:
        full = self.top / rel if rel else self.top
        st = os.lstat(full)
        kind = kind_of(st.st_mode, str(full))
        xattrs: list[tuple[str, bytes]] = []
        if kind != "symlink":
            for name in sorted(os.listxattr(full, follow_symlinks=False)):
                xattrs.append((name, os.getxattr(full, name, follow_symlinks=False)))
        return TreeEntry(
            path=rel,
            kind=kind,
            mode=st.st_mode,
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size,
            atime_ns=st.st_atime_ns,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
            rdev=st.st_rdev,
            link_target=os.readlink(full) if kind == "symlink" else None,
            xattrs=tuple(xattrs),
            inode=(st.st_dev, st.st_ino),
            nlink=st.st_nlink,
        )

    def entries(self) -> list[TreeEntry]:
        out = [self._entry("")]

        def walk(rel: str) -> Iterator[TreeEntry]:
            directory = self.top / rel if rel else self.top
            for name in sorted(os.listdir(directory)):
                child = f"{rel}/{name}" if rel else name
                entry = self._entry(child)
                yield entry
                if entry.kind == "dir":
                    yield from walk(child)

        out.extend(walk(""))
        return out

    def fetch(self, entry: TreeEntry, dest: Path) -> None:
        with open(self.top / entry.path, "rb") as fin, open(dest, "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)


def _xattr_groups(flat: Sequence[dict[str, Any]], count: int, where: str) -> list[tuple[tuple[str, bytes], ...]]:
    """Split libguestfs's ``lxattrlist`` answer into one tuple of xattrs per name.

    The answer is flat: for each name, a record with an empty ``attrname`` whose value is
    the number of attributes that follow, then those attributes.
    """
    groups: list[tuple[tuple[str, bytes], ...]] = []
    i = 0
    while i < len(flat):
        header = flat[i]
        if header["attrname"] != "":
            raise InvalidImage(f"{where}: unexpected xattr listing from libguestfs")
        n = int(header["attrval"])
        items = []
        for rec in flat[i + 1 : i + 1 + n]:
            value = rec["attrval"]
            items.append((str(rec["attrname"]), value if isinstance(value, bytes) else str(value).encode()))
        groups.append(tuple(sorted(items)))
        i += 1 + n
    if len(groups) != count:
        raise InvalidImage(f"{where}: libguestfs returned xattrs for {len(groups)} of {count} names")
    return groups


class ApplianceTree:
    """A tree inside the libguestfs appliance, below ``top`` (an appliance path).

    ``g`` is an open ``guestfs.GuestFS`` (``python_return_dict=True``) with the
    filesystem mounted.  Files are listed with bulk calls, one set per directory.
    """

    #: Names per bulk call: libguestfs limits a message to a few MiB.
    BATCH = 1000

    def __init__(self, g: Any, top: str, scratch: Path) -> None:
        self.g = g
        self.top = top.rstrip("/") or "/"
        self.scratch = scratch

    def _guest(self, rel: str) -> str:
        return f"{self.top}/{rel}" if rel else self.top

    def _stat_many(self, directory: str, rels: list[str]) -> list[TreeEntry]:
        out: list[TreeEntry] = []
        where = self._guest(directory)
        for start in range(0, len(rels), self.BATCH):
            batch = rels[start : start + self.BATCH]
            names = [PurePosixPath(r).name for r in batch]
            stats = self.g.lstatnslist(where, names)
            xattrs = _xattr_groups(self.g.lxattrlist(where, names), len(names), where)
            links = self.g.readlinklist(where, names)
            for rel, st, xa, target in zip(batch, stats, xattrs, links, strict=True):
                out.append(self._from_stat(rel, st, xa, str(target)))
        return out

    def entries(self) -> list[TreeEntry]:
        listing = self.scratch / "find0.out"
        self.g.find0(self.top, str(listing))
        rels = sorted(p for p in listing.read_bytes().decode("utf-8", "surrogateescape").split("\0") if p)
        listing.unlink()
        by_dir: dict[str, list[str]] = {}
        for rel in rels:
            _check_name(rel, self.top)
            parent = str(PurePosixPath(rel).parent)
            by_dir.setdefault("" if parent == "." else parent, []).append(rel)
        stats: dict[str, TreeEntry] = {}
        for directory, children in by_dir.items():
            for entry in self._stat_many(directory, children):
                stats[entry.path] = entry
        return [self._top_entry()] + [stats[rel] for rel in rels]

    def _top_entry(self) -> TreeEntry:
        xattrs = tuple(sorted((str(x["attrname"]), bytes(x["attrval"])) for x in self.g.lgetxattrs(self.top)))
        return self._from_stat("", self.g.lstatns(self.top), xattrs, "")

    def _from_stat(self, rel: str, st: dict[str, Any], xattrs: tuple[tuple[str, bytes], ...], target: str) -> TreeEntry:
        mode = int(st["st_mode"])
        kind = kind_of(mode, self._guest(rel))

        def ns(which: str) -> int:
            return int(st[f"st_{which}_sec"]) * 10**9 + int(st[f"st_{which}_nsec"])

        return TreeEntry(
            path=rel,
            kind=kind,
            mode=mode,
            uid=int(st["st_uid"]),
            gid=int(st["st_gid"]),
            size=int(st["st_size"]),
            atime_ns=ns("atime"),
            mtime_ns=ns("mtime"),
            ctime_ns=ns("ctime"),
            rdev=int(st["st_rdev"]),
            link_target=target if kind == "symlink" else None,
            xattrs=() if kind == "symlink" else xattrs,
            inode=(int(st["st_dev"]), int(st["st_ino"])),
            nlink=int(st["st_nlink"]),
        )

    def fetch(self, entry: TreeEntry, dest: Path) -> None:
        self.g.download(self._guest(entry.path), str(dest))
