"""Read-only views of a guest's filesystems, with every path resolved inside the guest root.

Guest content is hostile: a symlink ``boot/loader -> ../../../../etc`` must not lead a reader out
of the image, and an absolute target such as ``/usr/lib/os-release`` means the *guest's* file,
not the host's.  So nothing here lets the backend follow a symlink.  A backend (a
:class:`ReadOnlyFS`) offers only primitives that never follow one (``lstat``, ``readlink``,
``listdir``, ``read``), and :class:`GuestTree` -- the one place where guest paths are resolved --
walks a path component by component:

* a symlink's relative target is interpreted from the directory holding the link;
* an absolute target is re-rooted at the tree's root (as inside a chroot of that root);
* ``..`` never climbs above the root: trying to is :class:`~liveimg.errors.GuestPathEscapes`,
  naming the path and the link that led there (clamping it, as the kernel does at ``/``, would
  hide a hostile image);
* at most :data:`MAX_SYMLINKS` links are followed per lookup (loops end as an error).

That walk is :func:`resolve`, the one symlink resolver; its ``escape`` policy says what ``..``
above the root means: refused (:class:`GuestTree`'s lookups), or clamped at the root as the
kernel does in a chroot (:func:`liveimg.dracut.tree.chroot_path`, where mount points are made).

Backends: :class:`HostFS` reads a directory on the host (unit tests with pyfakefs, trees
extracted on the host); :class:`MergedFS` stacks filesystems the way mounts do (the boot
partition over ``/boot`` of the physical root); :mod:`liveimg.guest` adds the libguestfs one,
:mod:`liveimg.extfs` the host's own ext reader.
Guest paths are POSIX strings, absolute, relative to the tree's root (``/boot/loader``), never
host :class:`~pathlib.Path` objects, so the two cannot be confused.
"""

from __future__ import annotations

import enum
import errno
import os
import posixpath
import stat as statmod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from liveimg.errors import GuestPathEscapes, InvalidImage
from liveimg.tree import Kind, file_kind

#: Symlinks followed in one lookup before giving up (Linux's limit as well).
MAX_SYMLINKS = 40
#: Largest text file :meth:`GuestTree.read_text` reads by default (BLS entries, os-release, .origin).
TEXT_LIMIT = 1 << 20
#: Most entries :meth:`GuestTree.listdir` accepts in one directory by default.
LISTDIR_LIMIT = 65536


#: What a guest file is: the entry model's kinds (only files, directories and symlinks are read).
FileType = Kind


@dataclass(frozen=True)
class FileStat:
    """What :meth:`ReadOnlyFS.lstat` tells about one path (the link itself for a symlink).

    ``type`` is None for a file type no Linux filesystem holds (never read, never followed).
    """

    type: Kind | None
    size: int
    mode: int = 0

    @classmethod
    def from_mode(cls, mode: int, size: int) -> FileStat:
        return cls(file_kind(mode), size, statmod.S_IMODE(mode))


class ReadOnlyFS(Protocol):
    """Primitive access to one read-only filesystem tree.

    Paths are absolute POSIX paths within this filesystem.  :class:`GuestTree` only passes paths
    whose every component but the last is a real directory (it resolved them), and no method
    may follow a symlink in the last component.
    """

    #: Names the filesystem in error messages, e.g. ``"disk.raw /dev/sda3"``.
    label: str

    def lstat(self, path: str) -> FileStat | None:
        """The path's type and size, or None if it does not exist."""
        ...

    def readlink(self, path: str) -> str:
        """A symlink's target, as stored."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (without ``.`` and ``..``), in any order."""
        ...

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        """Up to ``size`` bytes of a regular file from ``offset``."""
        ...


class Escape(enum.Enum):
    """What :func:`resolve` does with a path that climbs above its root."""

    #: Refuse it (:class:`GuestPathEscapes`); a name that does not exist ends the lookup (None).
    REFUSE = "refuse"
    #: Stay at the root, as the kernel does in a chroot; names that do not exist (and what
    #: follows them) are kept: the result is where ``mkdir -p`` would create the path.
    CLAMP = "clamp"


def resolve(
    fs: ReadOnlyFS, root: str, path: str, *, escape: Escape, follow_last: bool = True, label: str
) -> list[str] | None:
    """The names of ``path`` below ``root`` of ``fs`` once every symlink is resolved: the one resolver.

    ``root`` is a resolved directory of ``fs`` (no symlinks in it).  The walk goes component by
    component, never letting ``fs`` follow a link: a relative target is read from the link's
    directory, an absolute one from ``root``; ``..`` at the root is refused or clamped as
    ``escape`` says.  ``follow_last=False`` leaves a symlink in the last component as it is.
    With :attr:`Escape.REFUSE` the result is None when a name does not exist or a non-directory
    is used as one.  More than :data:`MAX_SYMLINKS` links, or a link with an empty target, are an
    :class:`InvalidImage` naming ``path`` with ``label`` (the filesystem, for messages).
    """
    base = root.rstrip("/")
    pending: deque[tuple[str, str | None]] = deque((name, None) for name in _components(path))
    resolved: list[str] = []
    links = 0
    while pending:
        name, via = pending.popleft()
        if name == "..":
            if resolved:
                resolved.pop()
            elif escape is Escape.REFUSE:
                if via:
                    raise GuestPathEscapes(f"{label}: {path}: symlink {via} points outside the guest root")
                raise GuestPathEscapes(f"{label}: {path}: the path climbs above the guest root")
            continue
        candidate = [*resolved, name]
        where = base + _join(candidate)
        st = fs.lstat(where)
        if st is None:
            if escape is Escape.REFUSE:
                return None
        elif st.type is FileType.SYMLINK and (pending or follow_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise InvalidImage(
                    f"{label}: {path}: too many symbolic links (more than {MAX_SYMLINKS} symlinks: a loop?)"
                )
            target = fs.readlink(where)
            if not target:
                raise InvalidImage(f"{label}: {path}: symlink {_join(candidate)} has an empty target")
            if target.startswith("/"):
                resolved = []
            via = f"{_join(candidate)} -> {target}"
            pending.extendleft(reversed([(part, via) for part in _components(target)]))
            continue
        elif pending and st.type is not FileType.DIR and escape is Escape.REFUSE:
            return None  # a file used as a directory: ENOTDIR, i.e. it does not exist
        resolved = candidate
    return resolved


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def _join(parts: Sequence[str]) -> str:
    return "/" + "/".join(parts)


class GuestTree:
    """A read-only tree rooted at ``root`` of a :class:`ReadOnlyFS`, with safe path resolution.

    ``root`` is a path of the filesystem that is itself already resolved (no symlinks in it);
    :meth:`subtree` makes one for a deployment directory.  Every method takes a guest path
    relative to this root and resolves it first; ``read_*`` methods refuse anything but regular
    files and anything larger than their limit.
    """

    def __init__(self, fs: ReadOnlyFS, root: str = "/") -> None:
        self.fs = fs
        self.root = posixpath.normpath("/" + root.strip("/")) if root.strip("/") else "/"

    def __repr__(self) -> str:
        return f"GuestTree({self.fs.label!r}, root={self.root!r})"

    @property
    def label(self) -> str:
        return self.fs.label if self.root == "/" else f"{self.fs.label} {self.root}"

    def _fs_path(self, parts: Sequence[str]) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def _lstat(self, parts: Sequence[str]) -> FileStat | None:
        return self.fs.lstat(self._fs_path(parts))

    def resolve(self, path: str, *, follow: bool = True) -> str | None:
        """The path with every symlink resolved, relative to this root; None if it does not exist.

        With ``follow=False`` a symlink in the last component is not followed (``lstat``
        semantics).  Raises :class:`GuestPathEscapes` if resolution would leave the root and
        :class:`InvalidImage` for symlink loops.
        """
        parts = resolve(self.fs, self.root, path, escape=Escape.REFUSE, follow_last=follow, label=self.label)
        return None if parts is None else _join(parts)

    def stat(self, path: str, *, follow: bool = True) -> FileStat | None:
        """The stat of the resolved path, or None if it does not exist."""
        resolved = self.resolve(path, follow=follow)
        if resolved is None:
            return None
        return self._lstat(_components(resolved))

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def lexists(self, path: str) -> bool:
        return self.stat(path, follow=False) is not None

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and st.type is FileType.DIR

    def is_file(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and st.type is FileType.FILE

    def is_symlink(self, path: str) -> bool:
        st = self.stat(path, follow=False)
        return st is not None and st.type is FileType.SYMLINK

    def readlink(self, path: str) -> str:
        """The stored target of the symlink at ``path`` (its parents resolved)."""
        resolved = self.resolve(path, follow=False)
        st = None if resolved is None else self._lstat(_components(resolved))
        if resolved is None or st is None or st.type is not FileType.SYMLINK:
            raise InvalidImage(f"{self.label}: {path} is not a symlink")
        return self.fs.readlink(self._fs_path(_components(resolved)))

    def size(self, path: str) -> int:
        st = self.stat(path)
        if st is None:
            raise InvalidImage(f"{self.label}: {path} does not exist")
        return st.size

    def listdir(self, path: str, *, limit: int = LISTDIR_LIMIT) -> list[str]:
        """Sorted names in the directory ``path``; [] if it does not exist or is not a directory."""
        resolved = self.resolve(path)
        if resolved is None:
            return []
        parts = _components(resolved)
        st = self._lstat(parts)
        if st is None or st.type is not FileType.DIR:
            return []
        names = self.fs.listdir(self._fs_path(parts))
        if len(names) > limit:
            raise InvalidImage(f"{self.label}: {path} holds {len(names)} entries, more than the {limit} accepted")
        return sorted(n for n in names if n not in (".", "..") and "/" not in n)

    def _regular_file(self, path: str, limit: int) -> tuple[str, int]:
        resolved = self.resolve(path)
        st = None if resolved is None else self._lstat(_components(resolved))
        if resolved is None or st is None:
            raise InvalidImage(f"{self.label}: {path} does not exist")
        if st.type is not FileType.FILE:
            raise InvalidImage(f"{self.label}: {path} is not a regular file ({st.type or 'of an unknown type'})")
        if st.size > limit:
            raise InvalidImage(f"{self.label}: {path} is {st.size} bytes, more than the {limit} accepted")
        return self._fs_path(_components(resolved)), st.size

    def read_bytes(self, path: str, *, limit: int = TEXT_LIMIT) -> bytes:
        """The whole regular file at ``path``; :class:`InvalidImage` if larger than ``limit``."""
        fs_path, size = self._regular_file(path, limit)
        return self.fs.read(fs_path, size, 0) if size else b""

    def read_head(self, path: str, size: int) -> bytes:
        """The first ``size`` bytes (or fewer) of the regular file at ``path``, whatever its length."""
        fs_path, _ = self._regular_file(path, 1 << 62)
        return self.fs.read(fs_path, size, 0)

    def read_text(self, path: str, *, limit: int = TEXT_LIMIT) -> str:
        """The regular file at ``path`` decoded as UTF-8 (undecodable bytes replaced)."""
        return self.read_bytes(path, limit=limit).decode("utf-8", "replace")

    def subtree(self, path: str) -> GuestTree:
        """A tree rooted at the directory ``path`` (resolved here); absolute links then stay inside it."""
        resolved = self.resolve(path)
        if resolved is None or not self.is_dir(resolved):
            raise InvalidImage(f"{self.label}: {path} is not a directory")
        return GuestTree(self.fs, self._fs_path(_components(resolved)))


class HostFS:
    """A directory of the host seen as a read-only guest filesystem (never follows a symlink).

    Every path is opened relative to ``base`` with ``O_NOFOLLOW`` on the last component; parents
    were resolved by :class:`GuestTree`, so no guest symlink is ever followed by the host kernel.
    """

    def __init__(self, base: str | os.PathLike[str], label: str | None = None) -> None:
        self.base = Path(base)
        self.label = label or str(base)

    def _host(self, path: str) -> str:
        return os.path.join(self.base, path.lstrip("/"))

    def lstat(self, path: str) -> FileStat | None:
        try:
            st = os.lstat(self._host(path))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        return FileStat.from_mode(st.st_mode, st.st_size)

    def readlink(self, path: str) -> str:
        return os.readlink(self._host(path))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._host(path))

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        try:
            fd = os.open(self._host(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidImage(f"{self.label}: {path} became a symlink while being read") from None
            raise
        try:
            if not statmod.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidImage(f"{self.label}: {path} is not a regular file")
            # lseek + read rather than pread: the same code then runs under pyfakefs
            os.lseek(fd, offset, os.SEEK_SET)
            chunks = []
            while size > 0:
                chunk = os.read(fd, min(size, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                size -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


class MergedFS:
    """Several filesystems stacked like mounts: ``{"/": root_fs, "/boot": boot_fs}``.

    A path belongs to the filesystem mounted at its longest matching prefix, and the mount
    point itself is that filesystem's root directory, whatever the underlying filesystem holds
    there (a hostile ``/boot`` symlink in the root partition is hidden by the boot mount, as
    it would be by a real mount).
    """

    def __init__(self, mounts: Mapping[str, ReadOnlyFS], label: str | None = None) -> None:
        if "/" not in mounts:
            raise ValueError("MergedFS needs a filesystem at /")
        self.mounts = {posixpath.normpath(k): v for k, v in mounts.items()}
        self._order = sorted(self.mounts, key=len, reverse=True)
        self.label = label or self.mounts["/"].label

    def _route(self, path: str) -> tuple[ReadOnlyFS, str]:
        for point in self._order:
            if point in ("/", path) or path.startswith(point + "/"):
                inner = "/" + path[len(point) :].lstrip("/") if point != "/" else path
                return self.mounts[point], inner
        raise AssertionError(path)

    def lstat(self, path: str) -> FileStat | None:
        fs, inner = self._route(path)
        return fs.lstat(inner)

    def readlink(self, path: str) -> str:
        fs, inner = self._route(path)
        return fs.readlink(inner)

    def listdir(self, path: str) -> list[str]:
        fs, inner = self._route(path)
        names = set(fs.listdir(inner))
        prefix = path.rstrip("/") + "/"
        for point in self.mounts:
            if point != "/" and point.startswith(prefix) and "/" not in point[len(prefix) :]:
                names.add(point[len(prefix) :])
        return sorted(names)

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        fs, inner = self._route(path)
        return fs.read(inner, size, offset)
