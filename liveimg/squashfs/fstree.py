"""The in-memory tree a squashfs image is built from: nodes, hard links, paths.

Entries arrive one by one (from a directory scan or the writer's ``add_*`` calls);
:class:`FsTree` files them under their parents, creating missing parents with default
attributes.  :meth:`FsTree.walk` yields every distinct inode in the order the writer
stores them: depth first, names in strcmp order, each directory after its contents (as
mksquashfs does, so the root comes last), a hard-linked inode at its first name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.squashfs.constants import MAX_NAME_LEN, InodeType
from liveimg.squashfs.xattr import XattrSet
from liveimg.tree import display

if TYPE_CHECKING:
    from liveimg.squashfs.block_writer import FileData

# display is liveimg.tree's, named here too for the modules that import it from here.
__all__ = ["FsTree", "Node", "check_name", "display", "split_path"]


@dataclass(slots=True, eq=False)
class Node:
    """One inode: shared by every name of a hard link."""

    kind: InodeType
    mode: int  # permission bits, including setuid, setgid and sticky
    uid: int
    gid: int
    mtime: int
    xattrs: XattrSet = ()
    nlink: int = 0  # names pointing here (directories: counted when serialized)
    children: dict[bytes, Node] | None = None
    target: bytes = b""
    rdev: int = 0
    data: FileData | None = None
    implicit: bool = False  # a parent made up because a child was added first
    # Set when serialized:
    number: int = 0
    ref: int = -1
    sorted_children: list[tuple[bytes, Node]] = field(default_factory=list)


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


class FsTree:
    def __init__(self, root_mtime: int) -> None:
        self.root = Node(InodeType.DIR, 0o755, 0, 0, root_mtime, children={}, nlink=1)
        self._default_mtime = root_mtime

    def lookup(self, parts: list[bytes]) -> Node | None:
        node = self.root
        for part in parts:
            if node.children is None:
                return None
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node

    def _parent(self, parts: list[bytes], where: str) -> Node:
        node = self.root
        for part in parts[:-1]:
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                child = Node(InodeType.DIR, 0o755, 0, 0, self._default_mtime, children={}, nlink=1, implicit=True)
                node.children[part] = child
            elif child.children is None:
                raise InvalidOptions(f"{where}: {part.decode(errors='replace')!r} is not a directory")
            node = child
        return node

    def add(self, path: str | bytes, node: Node) -> Node:
        """File ``node`` under ``path``; a directory added over an implicit one takes its place."""
        where = display(path)
        parts = split_path(path)
        if not parts:
            if node.kind != InodeType.DIR:
                raise InvalidOptions("the image root must be a directory")
            node.children = self.root.children
            node.nlink = 1
            self.root = node
            return node
        name = parts[-1]
        parent = self._parent(parts, where)
        assert parent.children is not None
        old = parent.children.get(name)
        if old is not None:
            if old.implicit and node.kind == InodeType.DIR:
                node.children = old.children
            else:
                raise InvalidOptions(f"{where}: added twice")
        parent.children[name] = node
        node.nlink += 1
        return node

    def link(self, path: str | bytes, existing: Node) -> None:
        """Another name for a non-directory inode (a hard link)."""
        where = display(path)
        if existing.kind == InodeType.DIR:
            raise InvalidOptions(f"{where}: hard links to directories are not allowed")
        parts = split_path(path)
        if not parts:
            raise InvalidOptions("the image root cannot be a hard link")
        parent = self._parent(parts, where)
        assert parent.children is not None
        if parts[-1] in parent.children:
            raise InvalidOptions(f"{where}: added twice")
        parent.children[parts[-1]] = existing
        existing.nlink += 1

    def walk(self) -> Iterator[tuple[Node, Node | None]]:
        """Every distinct inode with its parent directory, contents before their directory."""
        seen: set[int] = set()

        def kids(d: Node) -> Iterator[tuple[bytes, Node]]:
            assert d.children is not None
            d.sorted_children = sorted(d.children.items())
            return iter(d.sorted_children)

        stack: list[tuple[Node, Iterator[tuple[bytes, Node]]]] = [(self.root, kids(self.root))]
        while stack:
            directory, it = stack[-1]
            for _name, child in it:
                if child.kind == InodeType.DIR:
                    stack.append((child, kids(child)))
                    break
                if id(child) not in seen:
                    seen.add(id(child))
                    yield child, directory
            else:
                stack.pop()
                yield directory, stack[-1][0] if stack else None
