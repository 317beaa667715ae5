"""File trees as entries: the one model every source and sink of files shares.

An :class:`Entry` is what ``cp -a`` keeps of a file: type, permission bits
(setuid/setgid/sticky included), owner, times to the nanosecond, device numbers, link
target, extended attributes (``security.selinux`` and POSIX ACLs included, in their raw VFS
form), hard-link identity -- and, for a regular file, a way to read its bytes.  Its kind
comes from its ``st_mode`` in one place, :func:`kind_of`.

Sources: :class:`HostScan` walks a host directory through directory file descriptors (the
squashfs writer's :func:`~liveimg.squashfs.writer.pack`, and :class:`HostTree`);
:class:`ApplianceTree` lists a directory inside the libguestfs appliance in a few bulk calls
per directory; :func:`liveimg.squashfs.tar.tar_entries` reads a tar stream.  Sinks:
:meth:`liveimg.squashfs.writer.SquashfsWriter.add` and :func:`liveimg.rootfs.tree_commands`
(a debugfs script).  Each sink switches on :attr:`Entry.kind` once; a source that knows hard
links sets :attr:`Entry.hardlink` on every name of an inode after the first (:class:`HardLinks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import os
import stat
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Protocol

from liveimg.errors import HostError, InvalidImage


class Kind(enum.StrEnum):
    """What a file is; the values name it in messages and listings."""

    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"
    CHARDEV = "chardev"
    BLOCKDEV = "blockdev"
    FIFO = "fifo"
    SOCKET = "socket"


_KINDS: dict[int, Kind] = {
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFREG: Kind.FILE,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFCHR: Kind.CHARDEV,
    stat.S_IFBLK: Kind.BLOCKDEV,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFSOCK: Kind.SOCKET,
}


def file_kind(mode: int) -> Kind | None:
    """The kind of a file from its ``st_mode``; None for a type no Linux filesystem holds."""
    return _KINDS.get(stat.S_IFMT(mode))


def kind_of(mode: int, where: str) -> Kind:
    """:func:`file_kind`, or :class:`InvalidImage` naming ``where`` for an unknown type."""
    kind = _KINDS.get(stat.S_IFMT(mode))
    if kind is None:
        raise InvalidImage(f"{where}: unsupported file type {stat.S_IFMT(mode):#o}")
    return kind


def display(path: str | bytes) -> str:
    """``path`` for a one-line message: as it is when printable, else quoted with escapes.

    Names come from the guest: a newline or a terminal escape in one must not reach a log as is.
    """
    text = path if isinstance(path, str) else path.decode("utf-8", "surrogateescape")
    return text if text.isprintable() else repr(text)


class OpenFile(NamedTuple):
    """A regular file open as ``fd`` (read with pread; whoever opened it closes it)."""

    fd: int
    name: str  # for messages


class Readable(Protocol):
    """A stream of a file's bytes (a tar member's, a pipe's)."""

    def read(self, size: int = -1, /) -> bytes: ...


#: How a regular file's bytes can be read: an open file, or a stream.
Data = OpenFile | Readable


@dataclass(slots=True)
class Entry:
    """One entry of a tree; ``path`` is relative to the tree's top ("" is the top itself).

    ``kind`` is derived from ``mode`` (the whole ``st_mode``).  ``hardlink``, when set, is the
    path of an earlier entry this one is another name of: sinks then use nothing else.  ``data``
    reads a regular file's bytes while the entry is the current one of its source (an
    :class:`OpenFile` the host scan holds open, a tar member's stream); it is None where the
    source fetches contents on request (:meth:`TreeSource.fetch`).

    An entry is a value: nothing changes one once made (:func:`dataclasses.replace` makes
    another).  It is not a frozen dataclass only because freezing costs about a microsecond per
    entry, and the squashfs writer takes hundreds of thousands.
    """

    path: str
    mode: int  # st_mode, type bits included
    size: int = 0
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    link_target: str | None = None
    hardlink: str | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    inode: tuple[int, int] | None = None  # (st_dev, st_ino): the same for hard links
    nlink: int = 1
    data: Data | None = field(default=None, compare=False, repr=False)
    kind: Kind = field(init=False)

    def __post_init__(self) -> None:
        kind = _KINDS.get(stat.S_IFMT(self.mode))  # kind_of, with the message made only when needed
        self.kind = kind if kind is not None else kind_of(self.mode, display(self.path))

    @property
    def permissions(self) -> int:
        return stat.S_IMODE(self.mode)


class HardLinks:
    """The first name of each inode with several names: a later name is a hard link to it."""

    def __init__(self) -> None:
        self._first: dict[tuple[int, int], str] = {}

    def first_name(self, inode: tuple[int, int], nlink: int, path: str) -> str | None:
        """The earlier name of ``inode`` when ``path`` is another one (a non-directory with ``nlink`` > 1)."""
        if nlink < 2:
            return None
        first = self._first.get(inode)
        if first is None:
            self._first[inode] = path
        return first


class TreeSource(Protocol):
    """A tree listed whole first: its entries, parents before children, and file contents on request."""

    def entries(self) -> list[Entry]: ...

    def fetch(self, entry: Entry, dest: Path) -> None:
        """Write the content of a regular file into the host file ``dest``."""


# --- a host directory, through directory file descriptors ------------------------------------

#: How file data is opened: never through a final symlink, and without blocking, so that a
#: FIFO or device put in a file's place cannot hang the open (the caller's fstat refuses it).
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
#: Directories are opened relative to their parent, never through a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
#: xattr errors that mean "none here": the filesystem has no xattrs, or one went away
#: between listing and reading it.
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA)

#: Handles one directory: yields its entries, returns the names of its subdirectories to enter.
Visit = Callable[[int, bytes, os.stat_result], Generator[Entry, None, list[bytes]]]


def read_xattrs(target: int | bytes, where: str, hint: str | None = None) -> tuple[tuple[str, bytes], ...]:
    """The extended attributes of an open file (an fd), or of a path's last component (not followed).

    Any failure but ENOTSUP/ENODATA is a :class:`HostError` naming the file (with ``hint``).
    mksquashfs 4.5 warns ("llistxattr for F failed ... Ignoring") and packs the file without any
    of its attributes; a live root cannot afford that: a file that silently lost its
    ``security.selinux`` label or ``security.capability`` fails only once booted (denials, a
    ping without its capability), far from the cause.
    """
    # An fd is the file itself; os refuses follow_symlinks with one.
    nofollow: dict[str, bool] = {} if isinstance(target, int) else {"follow_symlinks": False}
    pairs = []
    try:
        for name in os.listxattr(target, **nofollow):
            try:
                value = os.getxattr(target, name, **nofollow)
            except OSError as exc:
                if exc.errno != errno.ENODATA:  # removed since listed: gone, not unreadable
                    raise
                continue
            pairs.append((name, value))
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return ()
        raise HostError(f"cannot read the extended attributes of {where}: {exc.strerror}", hint=hint) from exc
    return tuple(sorted(pairs)) if len(pairs) > 1 else tuple(pairs)


class Excluded:
    """Files a scan leaves out (an image being written into its own source): by inode, and by
    name in one directory (the destination's: the inode of a file made later is not known yet)."""

    def __init__(self, dest: Path) -> None:
        self.inodes: set[tuple[int, int]] = set()
        self.names = {os.fsencode(dest.name)}
        self.directory: tuple[int, int] | None = None
        with contextlib.suppress(OSError):
            st = os.stat(dest.parent)
            self.directory = (st.st_dev, st.st_ino)
        self.add(dest)

    def add(self, path: Path) -> None:
        """Leave out the file at ``path`` (by name in the destination's directory, and by inode)."""
        self.names.add(os.fsencode(path.name))
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            self.inodes.add((st.st_dev, st.st_ino))

    def names_in(self, directory: os.stat_result) -> set[bytes] | frozenset[bytes]:
        return self.names if (directory.st_dev, directory.st_ino) == self.directory else frozenset()

    def __contains__(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) in self.inodes


def walk(root_fd: int, visit: Visit, refused: Callable[[bytes, OSError], None]) -> Iterator[Entry]:
    """Depth first below the open directory ``root_fd``, through directory file descriptors.

    ``visit(fd, rel, st)`` handles one directory (``rel`` is b"" for the top): it yields its
    entries and returns the names of the subdirectories to enter, in order; each is opened
    relative to its parent with ``O_DIRECTORY | O_NOFOLLOW``, so a symlink put in a directory's
    place is never followed: the open fails and ``refused(rel, error)`` decides (raise, or
    return to skip it).  One descriptor per level is open at a time; all are closed when the
    walk ends, however it ends (close the iterator when not reading it to its end).
    """
    subdirs = yield from visit(root_fd, b"", os.fstat(root_fd))
    stack: list[tuple[int, bytes, Iterator[bytes]]] = [(root_fd, b"", iter(subdirs))]
    try:
        while stack:
            fd, rel, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if fd != root_fd:
                    os.close(fd)
                continue
            child_rel = rel + b"/" + name if rel else name
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                refused(child_rel, exc)
                continue
            try:
                subdirs = yield from visit(child, child_rel, os.fstat(child))
            except BaseException:
                os.close(child)
                raise
            stack.append((child, child_rel, iter(subdirs)))
    finally:
        for fd, _rel, _names in stack:
            if fd != root_fd:
                os.close(fd)


def tree_size(root_fd: int, excluded: Excluded) -> int:
    """Bytes in the regular files below ``root_fd``, for progress (what cannot be read is left out)."""
    total = 0

    def visit(fd: int, _rel: bytes, st: os.stat_result) -> Generator[Entry, None, list[bytes]]:
        nonlocal total
        yield from ()  # a visit that gives no entries
        skip = excluded.names_in(st)
        subdirs = []
        with contextlib.suppress(OSError), os.scandir(fd) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(os.fsencode(entry.name))
                    elif entry.is_file(follow_symlinks=False) and os.fsencode(entry.name) not in skip:
                        total += entry.stat(follow_symlinks=False).st_size
        return subdirs

    for _ in walk(root_fd, visit, lambda _rel, _exc: None):
        pass
    return total


def _rel(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


class HostScan:
    """Every entry below a host directory, in the order the squashfs writer stores file data.

    Each directory comes first, then its entries but subdirectories (names in strcmp order),
    then its subdirectories one by one, depth first.  Only regular files and directories are
    opened, relative to their directory and without following a symlink; FIFOs, sockets and
    devices are recorded from their lstat; symlinks are read with readlinkat.  An entry that
    turns into something else between its lstat and its open (a directory swapped for a
    symlink, a file for a FIFO) is an :class:`InvalidImage` naming it: the scan never reads what
    it did not see.  A regular file's :attr:`Entry.data` is an :class:`OpenFile`, open until
    the scan moves on (with ``open_files=False`` files are not opened: no data).  Later names
    of an inode come as :attr:`Entry.hardlink`; ``excluded`` files are left out.
    """

    def __init__(
        self,
        src: bytes,
        *,
        xattrs: bool = True,
        excluded: Excluded | None = None,
        open_files: bool = True,
        xattr_hint: str | None = None,
    ) -> None:
        self.src = src
        self.xattrs = xattrs
        self.excluded = excluded
        self.open_files = open_files
        self.xattr_hint = xattr_hint
        self.links = HardLinks()

    def where(self, rel: bytes) -> str:
        return display(os.path.join(self.src, rel) if rel else self.src)

    def entries(self, root_fd: int) -> Iterator[Entry]:
        """The entries below the open directory ``root_fd`` (which the caller closes)."""
        return walk(root_fd, self.directory, self.refused)

    def refused(self, rel: bytes, exc: OSError) -> None:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InvalidImage(f"{self.where(rel)}: changed while being packed (no longer a directory)") from exc
        if exc.errno == errno.ENOENT:
            raise InvalidImage(f"{self.where(rel)}: changed while being packed (removed)") from exc
        raise HostError(f"cannot read directory {self.where(rel)}: {exc.strerror}") from exc

    def _xattrs(self, target: int | bytes, rel: bytes) -> tuple[tuple[str, bytes], ...]:
        return read_xattrs(target, self.where(rel), self.xattr_hint) if self.xattrs else ()

    @staticmethod
    def _entry(
        rel: bytes,
        st: os.stat_result,
        *,
        xattrs: tuple[tuple[str, bytes], ...] = (),
        data: Data | None = None,
        link_target: str | None = None,
        hardlink: str | None = None,
    ) -> Entry:
        rdev = st.st_rdev
        return Entry(
            os.fsdecode(rel), st.st_mode, st.st_size, (os.major(rdev), os.minor(rdev)) if rdev else (0, 0),
            st.st_uid, st.st_gid, st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns, link_target, hardlink, xattrs,
            (st.st_dev, st.st_ino), st.st_nlink, data,
        )  # fmt: skip

    def _hardlink(self, rel: bytes, st: os.stat_result) -> Entry | None:
        """The entry for ``rel`` as another name of an inode already given, else None."""
        if st.st_nlink < 2:
            return None
        first = self.links.first_name((st.st_dev, st.st_ino), st.st_nlink, os.fsdecode(rel))
        return None if first is None else self._entry(rel, st, hardlink=first)

    def directory(self, fd: int, rel: bytes, st: os.stat_result) -> Generator[Entry, None, list[bytes]]:
        """The directory open as ``fd`` and its entries but subdirectories; returns those."""
        yield self._entry(rel, st, xattrs=self._xattrs(fd, rel))
        skip = self.excluded.names_in(st) if self.excluded is not None else frozenset()
        try:
            with os.scandir(fd) as it:
                names = sorted(os.fsencode(entry.name) for entry in it)
        except OSError as exc:
            raise HostError(f"cannot read directory {self.where(rel)}: {exc.strerror}") from exc
        # Every entry's lstat first, then the entries: what each is was decided before any is read.
        listed = []
        for name in names:
            if name in skip:
                continue
            try:
                lst = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as exc:
                raise HostError(f"cannot stat {self.where(_rel(rel, name))}: {exc.strerror}") from exc
            if self.excluded is None or lst not in self.excluded:
                listed.append((name, lst))
        subdirs = []
        for name, lst in listed:
            kind = file_kind(lst.st_mode)
            if kind is Kind.DIR:
                subdirs.append(name)
            elif kind is Kind.FILE and self.open_files:
                file_rel = _rel(rel, name)
                where = self.where(file_rel)
                file_fd = self.open_file(fd, name, where)
                try:
                    yield self.file(file_fd, file_rel, where)  # the consumer reads it now
                finally:
                    os.close(file_fd)
            else:
                yield self.other(fd, name, _rel(rel, name), lst)
        return subdirs

    @staticmethod
    def open_file(dir_fd: int, name: bytes, where: str) -> int:
        """Open a regular file of the directory ``dir_fd`` (the caller closes it)."""
        try:
            return os.open(name, OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidImage(f"{where}: changed while being packed (now a symlink)") from exc
            if exc.errno == errno.ENOENT:
                raise InvalidImage(f"{where}: changed while being packed (removed)") from exc
            raise HostError(f"cannot read {where}: {exc.strerror}") from exc

    def file(self, fd: int, rel: bytes, where: str) -> Entry:
        """A regular file open as ``fd``: its entry holds the open file, for the consumer to read."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImage(f"{where}: changed while being packed (no longer a regular file)")
        linked = self._hardlink(rel, st)
        return linked or self._entry(rel, st, xattrs=self._xattrs(fd, rel), data=OpenFile(fd, where))

    def other(self, dir_fd: int, name: bytes, rel: bytes, st: os.stat_result) -> Entry:
        """A symlink, device, FIFO or socket (or, not opening files, a regular file): from its lstat."""
        where = self.where(rel)
        kind = kind_of(st.st_mode, where)
        linked = self._hardlink(rel, st)
        if linked is not None:
            return linked
        # The entry itself, found through the directory we hold open: not through a path.
        xattrs = self._xattrs(b"/proc/self/fd/%d/%s" % (dir_fd, name), rel)
        target = None
        if kind is Kind.SYMLINK:
            try:
                target = os.fsdecode(os.readlink(name, dir_fd=dir_fd))
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):
                    raise InvalidImage(f"{where}: changed while being packed (no longer a symlink)") from exc
                raise HostError(f"cannot read symlink {where}: {exc.strerror}") from exc
        return self._entry(rel, st, xattrs=xattrs, link_target=target)


class HostTree:
    """A tree in a host directory (tests, and inputs already on the host), listed by :class:`HostScan`."""

    def __init__(self, top: Path) -> None:
        self.top = top

    def entries(self) -> list[Entry]:
        fd = os.open(self.top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return list(HostScan(os.fsencode(self.top), open_files=False).entries(fd))
        finally:
            os.close(fd)

    def fetch(self, entry: Entry, dest: Path) -> None:
        fd = os.open(self.top / entry.path, OPEN_FLAGS & ~os.O_NONBLOCK)
        with open(fd, "rb") as fin, open(dest, "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)


# --- a directory inside the libguestfs appliance ---------------------------------------------


def _check_name(path: str, where: str) -> None:
    if any(part in ("", ".", "..") for part in PurePosixPath(path).parts) or path.startswith("/"):
        raise InvalidImage(f"{where}: unexpected path {path!r} in a listing")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # libguestfs carries names as UTF-8 strings: a name that is not cannot be asked about.
        shown = path.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise InvalidImage(
            f"{where}: the file name '{shown}' is not UTF-8, which libguestfs cannot read",
            hint="rename it in the image",
        ) from None


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
        raw = header["attrval"]
        n = int((raw.decode() if isinstance(raw, bytes) else str(raw)).rstrip("\0"))
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

    def _stat_many(self, directory: str, rels: list[str]) -> list[Entry]:
        out: list[Entry] = []
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

    def entries(self) -> list[Entry]:
        listing = self.scratch / "find0.out"
        self.g.find0(self.top, str(listing))
        # find0 names entries relative to the directory, but with a leading "/" when the
        # directory is a mount point made with mkmountpoint (outside /sysroot).
        names = listing.read_bytes().decode("utf-8", "surrogateescape").split("\0")
        rels = sorted(p[1:] if p.startswith("/") else p for p in names if p)
        listing.unlink()
        by_dir: dict[str, list[str]] = {}
        for rel in rels:
            _check_name(rel, self.top)
            parent = str(PurePosixPath(rel).parent)
            by_dir.setdefault("" if parent == "." else parent, []).append(rel)
        stats: dict[str, Entry] = {}
        for directory, children in by_dir.items():
            for entry in self._stat_many(directory, children):
                stats[entry.path] = entry
        links = HardLinks()
        out = [self._top_entry()]
        for rel in rels:
            entry = stats[rel]
            if entry.kind is not Kind.DIR and entry.inode is not None:
                first = links.first_name(entry.inode, entry.nlink, rel)
                if first is not None:
                    entry = dataclasses.replace(entry, hardlink=first)
            out.append(entry)
        return out

    def _top_entry(self) -> Entry:
        xattrs = tuple(sorted((str(x["attrname"]), bytes(x["attrval"])) for x in self.g.lgetxattrs(self.top)))
        return self._from_stat("", self.g.lstatns(self.top), xattrs, "")

    def _from_stat(self, rel: str, st: dict[str, Any], xattrs: tuple[tuple[str, bytes], ...], target: str) -> Entry:
        mode = int(st["st_mode"])
        kind = kind_of(mode, self._guest(rel))

        def ns(which: str) -> int:
            return int(st[f"st_{which}_sec"]) * 10**9 + int(st[f"st_{which}_nsec"])

        rdev = int(st["st_rdev"])
        return Entry(
            path=rel,
            mode=mode,
            uid=int(st["st_uid"]),
            gid=int(st["st_gid"]),
            size=int(st["st_size"]),
            mtime_ns=ns("mtime"),
            atime_ns=ns("atime"),
            ctime_ns=ns("ctime"),
            rdev=(os.major(rdev), os.minor(rdev)),
            link_target=target if kind is Kind.SYMLINK else None,
            xattrs=() if kind is Kind.SYMLINK else xattrs,
            inode=(int(st["st_dev"]), int(st["st_ino"])),
            nlink=int(st["st_nlink"]),
        )

    def fetch(self, entry: Entry, dest: Path) -> None:
        self.g.download(self._guest(entry.path), str(dest))
