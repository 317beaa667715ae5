"""The in-memory tree a squashfs image is built from: compact inode records, names, hard links.

Entries arrive one by one (from a directory scan or the writer's ``add_*`` calls);
:class:`FsTree` files them under their parents, creating missing parents with default
attributes.  :meth:`FsTree.walk` yields every distinct inode in the order the writer
stores them: depth first, names in strcmp order, each directory after its contents (as
mksquashfs does, so the root comes last), a hard-linked inode at its first name.

An image can hold millions of entries, so nothing here is a Python object per entry: an
inode is a number indexing typed arrays (kind, mode, ids, time, link count, xattr set, one
type-specific slot), a directory keeps its names in one bytes arena with arrays of end
offsets and child numbers (names usually arrive in order, as a scan gives them, and are then
looked up by bisection; a directory whose names come out of order switches to a dict), and a
regular file's data record (:class:`Files`) lives in arrays too, with its block sizes in one
shared array.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING

from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.squashfs.constants import MAX_NAME_LEN, InodeType
from liveimg.squashfs.xattr import XattrSet
from liveimg.tree import display

if TYPE_CHECKING:
    from liveimg.squashfs.block_writer import FileData

# display is liveimg.tree's, named here too for the modules that import it from here.
__all__ = ["Directory", "Files", "FsTree", "check_name", "display", "split_path"]

#: The parent of the root, for :meth:`FsTree.walk`.
NO_PARENT = -1


def split_path(path: str | bytes) -> list[bytes]:
    """The names in an image path: ``""`` is the root, anything else names joined by single slashes.

    Every name is checked by :func:`check_name`: a path with an empty name (a leading,
    trailing or doubled ``/``), ``.``, ``..``, a NUL byte or a name over 255 bytes is refused
    with :class:`InvalidImage` naming it, so nothing a reader would reject enters the tree.
    """
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    if not raw:
        return []
    parts = raw.split(b"/")
    for part in parts:
        check_name(part, raw)
    return parts


def check_name(name: bytes, path: str | bytes) -> None:
    """:class:`InvalidImage` naming ``path`` unless ``name`` can be a squashfs directory entry."""
    problem = None
    if not name:
        problem = "empty name in the path (a leading, trailing or doubled '/')"
    elif name in (b".", b".."):
        problem = f"{name.decode()!r} cannot be a name in the image"
    elif b"\0" in name:
        problem = "name contains a NUL byte"
    elif len(name) > MAX_NAME_LEN:
        problem = f"name is {len(name)} bytes long, squashfs allows at most {MAX_NAME_LEN}"
    if problem is not None:
        raise InvalidImage(f"{display(path)}: {problem}")


class Directory:
    """A directory's entries: name -> inode number, listed in strcmp order.

    While names arrive in increasing order they are appended to ``names`` (one arena, ``ends``
    the end offset of each) and found by bisection; the first name out of order moves them all
    into ``index``, a dict, sorted when listed.
    """

    __slots__ = ("ends", "ids", "implicit", "index", "names")

    def __init__(self, *, implicit: bool = False) -> None:
        self.names = bytearray()
        self.ends = array("I")
        self.ids = array("I")
        self.index: dict[bytes, int] | None = None
        self.implicit = implicit  # made up because a child was added first

    def _name(self, i: int) -> bytes:
        return bytes(self.names[self.ends[i - 1] if i else 0 : self.ends[i]])

    def _find(self, name: bytes) -> int:
        """The position of ``name`` in the arena, or -1."""
        lo, hi = 0, len(self.ends)
        if not hi or self._name(hi - 1) < name:
            return -1  # the common case: a new name after the last one
        while lo < hi:
            mid = (lo + hi) // 2
            if self._name(mid) < name:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(self.ends) and self._name(lo) == name else -1

    def get(self, name: bytes) -> int | None:
        if self.index is not None:
            return self.index.get(name)
        at = self._find(name)
        return None if at < 0 else self.ids[at]

    def put(self, name: bytes, node: int) -> None:
        """Add ``name`` (the caller checked it is not there yet) or point it at another inode."""
        if self.index is None:
            if not self.ends or self._name(len(self.ends) - 1) < name:
                self.names += name
                self.ends.append(len(self.names))
                self.ids.append(node)
                return
            at = self._find(name)
            if at >= 0:
                self.ids[at] = node
                return
            self.index = dict(self.items())
            self.names, self.ends, self.ids = bytearray(), array("I"), array("I")
        self.index[name] = node

    def items(self) -> list[tuple[bytes, int]]:
        """Every (name, inode number), sorted by name."""
        if self.index is not None:
            return sorted(self.index.items())
        names, ends = self.names, self.ends
        if not ends:
            return []
        starts = [0, *ends[:-1]]
        return [(bytes(names[s:e]), node) for s, e, node in zip(starts, ends, self.ids, strict=True)]


class Files:
    """Where each regular file's data went (a :class:`FileData`, kept in arrays once it is complete)."""

    def __init__(self) -> None:
        self.start = array("Q")
        self.size = array("Q")
        self.fragment = array("I")
        self.offset = array("I")
        self.first_block = array("Q")  # index of the file's first entry in ``blocks``
        self.blocks = array("I")  # every file's block sizes, one after the other
        self.sparse: dict[int, int] = {}  # files with holes: bytes in them

    def add(self, data: FileData) -> int:
        """Record a complete file's data; its index."""
        index = len(self.start)
        self.start.append(data.start_block)
        self.size.append(data.size)
        self.fragment.append(data.fragment)
        self.offset.append(data.offset)
        self.first_block.append(len(self.blocks))
        self.blocks.extend(data.block_sizes)
        if data.sparse:
            self.sparse[index] = data.sparse
        return index

    def block_sizes(self, index: int) -> array[int]:
        first = self.first_block[index]
        end = self.first_block[index + 1] if index + 1 < len(self.first_block) else len(self.blocks)
        return self.blocks[first:end]


class FsTree:
    """Inodes by number (from 0, in the order they were made; not the image's inode numbers).

    ``kind``, ``mode``, ``uid``, ``gid``, ``mtime`` and ``nlink`` are arrays indexed by it;
    ``xattr`` indexes :attr:`xattr_sets` (-1: none); ``extra`` is the type's own value: a
    directory's index in :attr:`dirs`, a regular file's in :attr:`files` (once its data is
    complete), a symlink's in :attr:`targets`, a device's ``rdev``.
    """

    def __init__(self, root_mtime: int) -> None:
        self.kind = array("B")
        self.mode = array("H")
        self.uid = array("I")
        self.gid = array("I")
        self.mtime = array("I")
        self.nlink = array("I")  # names pointing here (directories: counted when serialized)
        self.xattr = array("i")
        self.extra = array("I")
        self.dirs: list[Directory] = []
        self.files = Files()
        self.targets: list[bytes] = []
        self.xattr_sets: list[XattrSet] = []
        self._xattr_index: dict[XattrSet, int] = {}
        self._default_mtime = root_mtime
        self.root = self._directory(0o755, root_mtime, implicit=False)
        self.nlink[self.root] = 1
        # The last parent directory found, by its path: entries usually arrive directory by directory.
        self._last_parent: tuple[list[bytes], int] = ([], self.root)

    def __len__(self) -> int:
        return len(self.kind)

    def new(  # noqa: PLR0917
        self, kind: InodeType, mode: int, uid: int, gid: int, mtime: int, xattrs: XattrSet = (), extra: int = 0
    ) -> int:
        """A new inode, not yet named; its number.  A directory gets its (empty) listing."""
        node = len(self.kind)
        self.kind.append(kind)
        self.mode.append(mode & 0o7777)
        self.uid.append(uid)
        self.gid.append(gid)
        self.mtime.append(mtime)
        self.nlink.append(0)
        if xattrs:
            at = self._xattr_index.get(xattrs)
            if at is None:
                at = self._xattr_index[xattrs] = len(self.xattr_sets)
                self.xattr_sets.append(xattrs)
            self.xattr.append(at)
        else:
            self.xattr.append(-1)
        if kind == InodeType.DIR:
            extra = len(self.dirs)
            self.dirs.append(Directory())
        self.extra.append(extra)
        return node

    def _directory(self, mode: int, mtime: int, *, implicit: bool) -> int:
        node = self.new(InodeType.DIR, mode, 0, 0, mtime)
        self.dirs[self.extra[node]].implicit = implicit
        return node

    def directory(self, node: int) -> Directory | None:
        """The listing of ``node``, None unless it is a directory."""
        return self.dirs[self.extra[node]] if self.kind[node] == InodeType.DIR else None

    def add_target(self, target: bytes) -> int:
        self.targets.append(target)
        return len(self.targets) - 1

    def set_file(self, node: int, data: FileData) -> None:
        """The data of the regular file ``node``, now that it is all written."""
        self.extra[node] = self.files.add(data)

    def lookup(self, parts: list[bytes]) -> int | None:
        node = self.root
        for part in parts:
            listing = self.directory(node)
            if listing is None:
                return None
            child = listing.get(part)
            if child is None:
                return None
            node = child
        return node

    def _parent(self, parts: list[bytes], where: str) -> int:
        dirs = parts[:-1]
        last_parts, last = self._last_parent
        if dirs == last_parts:
            return last
        node = self.root
        for part in dirs:
            listing = self.dirs[self.extra[node]]
            child = listing.get(part)
            if child is None:
                child = self._directory(0o755, self._default_mtime, implicit=True)
                self.nlink[child] = 1
                listing.put(part, child)
            elif self.kind[child] != InodeType.DIR:
                raise InvalidOptions(f"{where}: {part.decode(errors='replace')!r} is not a directory")
            node = child
        self._last_parent = (dirs, node)
        return node

    def add(self, path: str | bytes, node: int) -> int:
        """File ``node`` under ``path``; a directory added over an implicit one takes its place."""
        where = display(path)
        parts = split_path(path)
        is_dir = self.kind[node] == InodeType.DIR
        if not parts:
            if not is_dir:
                raise InvalidOptions("the image root must be a directory")
            self._take_listing(node, self.root)
            self.nlink[node] = 1
            self.root = node
            self._last_parent = ([], node)
            return node
        name = parts[-1]
        parent = self._parent(parts, where)
        listing = self.dirs[self.extra[parent]]
        old = listing.get(name)
        if old is not None:
            old_listing = self.directory(old)
            if not (old_listing is not None and old_listing.implicit and is_dir):
                raise InvalidOptions(f"{where}: added twice")
            self._take_listing(node, old)
            if self._last_parent[1] == old:
                self._last_parent = ([], self.root)
        listing.put(name, node)
        self.nlink[node] += 1
        return node

    def _take_listing(self, node: int, old: int) -> None:
        """Directory ``node`` replaces ``old``: it takes over its entries."""
        self.dirs[self.extra[node]] = self.dirs[self.extra[old]]
        self.dirs[self.extra[node]].implicit = False

    def link(self, path: str | bytes, existing: int) -> None:
        """Another name for a non-directory inode (a hard link)."""
        where = display(path)
        if self.kind[existing] == InodeType.DIR:
            raise InvalidOptions(f"{where}: hard links to directories are not allowed")
        parts = split_path(path)
        if not parts:
            raise InvalidOptions("the image root cannot be a hard link")
        parent = self._parent(parts, where)
        listing = self.dirs[self.extra[parent]]
        if listing.get(parts[-1]) is not None:
            raise InvalidOptions(f"{where}: added twice")
        listing.put(parts[-1], existing)
        self.nlink[existing] += 1

    def walk(self) -> Iterator[tuple[int, int, list[tuple[bytes, int]] | None]]:
        """Every distinct inode, its parent directory (``NO_PARENT`` for the root) and, for a
        directory, its entries in name order; contents before their directory.

        Only the directories on the current path are listed at any time.
        """
        seen: set[int] = set()  # inodes with more than one name, once yielded
        kind, nlink, dirs, extra = self.kind, self.nlink, self.dirs, self.extra
        is_dir = InodeType.DIR

        def frame(node: int) -> tuple[int, list[tuple[bytes, int]], Iterator[tuple[bytes, int]]]:
            entries = dirs[extra[node]].items()
            return node, entries, iter(entries)

        stack = [frame(self.root)]
        while stack:
            directory, entries, it = stack[-1]
            for _name, child in it:
                if kind[child] == is_dir:
                    stack.append(frame(child))
                    break
                if nlink[child] > 1:
                    if child in seen:
                        continue
                    seen.add(child)
                yield child, directory, None
            else:
                stack.pop()
                yield directory, stack[-1][0] if stack else NO_PARENT, entries
