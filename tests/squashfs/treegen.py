"""Generated directory trees for the squashfs tests, and an entry-by-entry comparison.

A tree is described by a list of :class:`Spec` (path, kind, attributes, content) that
hypothesis draws; :func:`build` makes it on disk (devices, fifos, other owners and
``trusted.``/``security.`` xattrs need root) and :func:`snapshot` reads any tree back into
comparable records, so a source tree and an ``unsquashfs`` extraction can be compared.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

BLOCK = 4096  # the generated trees are packed with small blocks, so n blocks +- 1 stays cheap


@dataclass
class Spec:
    path: bytes
    kind: str  # "dir", "file", "sparse", "symlink", "hardlink", "fifo", "chr", "blk"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_600_000_000
    size: int = 0
    seed: int = 0
    target: bytes = b""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


_name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")


@st.composite
def names(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["short", "short", "unicode", "long"]))
    if kind == "long":
        stem = draw(st.sampled_from(["a", "é", "日"]))
        raw = (stem * 255).encode()
        raw = raw[: 255 - (255 % len(stem.encode()))]
        return raw[:255]
    if kind == "unicode":
        text = draw(st.text(_name_chars, min_size=1, max_size=20))
    else:
        text = draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12))
    raw = text.encode()[:255]
    if raw in (b".", b".."):
        raw += b"x"
    return raw


_sizes = st.one_of(
    st.sampled_from([0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK - 1, 3 * BLOCK + 1]),
    st.integers(0, 5 * BLOCK),
)
_modes = st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o7777, 0o000, 0o444])
_ids = st.sampled_from([0, 0, 1, 1000, 65534, 100000])
_xattr_sets = st.dictionaries(
    st.sampled_from([b"user.a", b"user.comment", b"trusted.t", b"security.selinux"]),
    st.binary(min_size=0, max_size=40),
    max_size=3,
)


@st.composite
def trees(draw: st.DrawFn, *, root: bool = True) -> list[Spec]:
    """A list of specs whose directories come before their contents."""
    specs: list[Spec] = []
    dirs: list[bytes] = [b""]
    files: list[bytes] = []
    used: set[bytes] = set()
    for _ in range(draw(st.integers(1, 25))):
        parent = draw(st.sampled_from(dirs))
        name = draw(names())
        path = parent + b"/" + name if parent else name
        if path in used or len(path) > 3000:
            continue
        used.add(path)
        kinds = ["dir", "file", "file", "sparse", "symlink"]
        if files:
            kinds.append("hardlink")
        if root:
            kinds += ["fifo", "chr", "blk"]
        kind = draw(st.sampled_from(kinds))
        spec = Spec(path, kind, mtime=draw(st.integers(0, 2**31)))
        if root:
            spec.uid, spec.gid = draw(_ids), draw(_ids)
        if kind == "dir":
            spec.mode = draw(st.sampled_from([0o755, 0o700, 0o1777, 0o2755]))
            dirs.append(path)
            # deep nesting now and then
            if draw(st.booleans()) and len(dirs) < 40:
                deep = path
                for i in range(draw(st.integers(1, 30))):
                    deep += b"/d%d" % i
                    used.add(deep)
                    specs.append(spec)
                    spec = Spec(deep, "dir", mode=0o755, mtime=spec.mtime)
                dirs.append(deep)
        elif kind in ("file", "sparse"):
            spec.mode = draw(_modes)
            spec.size = draw(_sizes) if kind == "file" else draw(st.integers(1, 40)) * BLOCK + draw(st.integers(0, 9))
            spec.seed = draw(st.integers(0, 3))
            files.append(path)
        elif kind == "symlink":
            spec.target = draw(st.sampled_from([b"../x", b"/etc/passwd", b"a" * 300, "ü/ñ".encode()]))
        elif kind == "hardlink":
            spec.target = draw(st.sampled_from(files))
        elif kind in ("chr", "blk"):
            spec.mode = draw(st.sampled_from([0o600, 0o666]))
            spec.size = draw(st.sampled_from([(1, 3), (8, 1), (259, 70000), (4095, 1)]))  # type: ignore[assignment]
        if kind in ("dir", "file", "sparse") and root:
            spec.xattrs = draw(_xattr_sets)
        elif kind in ("fifo", "chr", "blk", "symlink") and root:
            # Linux allows user. xattrs only on regular files and directories.
            spec.xattrs = {k: v for k, v in draw(_xattr_sets).items() if not k.startswith(b"user.")}
        elif kind in ("dir", "file", "sparse"):
            spec.xattrs = {k: v for k, v in draw(_xattr_sets).items() if k.startswith(b"user.")}
        specs.append(spec)
    return specs


def content(spec: Spec) -> bytes:
    size = spec.size
    if spec.seed == 0:
        return os.urandom(0) + bytes((i * 7 + 3) % 251 for i in range(min(size, 64))) * (size // 64 + 1)
    if spec.seed == 1:
        return b"\0" * size
    if spec.seed == 2:
        return (b"squashfs test line %d\n" % spec.size) * (size // 20 + 1)
    return os.urandom(size)


def build(root: Path, specs: list[Spec]) -> None:
    base = os.fsencode(root)
    root.mkdir(parents=True, exist_ok=True)
    dir_times: list[tuple[bytes, int]] = []
    for spec in specs:
        p = os.path.join(base, spec.path)
        if spec.kind == "dir":
            os.mkdir(p)
            dir_times.append((p, spec.mtime))
        elif spec.kind == "file":
            with open(p, "wb") as f:
                f.write(content(spec)[: spec.size])
        elif spec.kind == "sparse":
            with open(p, "wb") as f:
                f.truncate(spec.size)
                f.seek(spec.size // 2)
                f.write(b"data in the middle")
        elif spec.kind == "symlink":
            os.symlink(spec.target, p)
        elif spec.kind == "hardlink":
            os.link(os.path.join(base, spec.target), p)
            continue
        elif spec.kind == "fifo":
            os.mkfifo(p)
        elif spec.kind in ("chr", "blk"):
            major, minor = spec.size  # type: ignore[misc]
            os.mknod(p, (stat.S_IFCHR if spec.kind == "chr" else stat.S_IFBLK) | spec.mode, os.makedev(major, minor))
        for name, value in spec.xattrs.items():
            os.setxattr(p, name, value, follow_symlinks=False)
        if spec.uid or spec.gid:
            os.chown(p, spec.uid, spec.gid, follow_symlinks=False)
        if spec.kind != "symlink":
            os.chmod(p, spec.mode)
        if spec.kind != "dir":
            os.utime(p, (spec.mtime, spec.mtime), follow_symlinks=False)
    os.chmod(base, 0o755)
    for p, mtime in reversed(dir_times):
        os.utime(p, (mtime, mtime))
    os.utime(base, (1_700_000_000, 1_700_000_000))


@dataclass(frozen=True)
class Record:
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    digest: bytes
    target: bytes
    rdev: int
    xattrs: tuple[tuple[bytes, bytes], ...]


def _read_xattrs(path: bytes) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for name in os.listxattr(path, follow_symlinks=False):
        out.append((os.fsencode(name), os.getxattr(path, name, follow_symlinks=False)))
    return tuple(sorted(out))


def snapshot(root: Path) -> tuple[dict[bytes, Record], list[frozenset[bytes]]]:
    """Every entry under ``root`` as a :class:`Record`, and the groups of hard-linked names."""
    import hashlib

    base = os.fsencode(root)
    records: dict[bytes, Record] = {}
    inodes: dict[int, set[bytes]] = {}
    for top, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = os.path.join(top, name)
            rel = os.path.relpath(p, base)
            s = os.lstat(p)
            kind = stat.S_IFMT(s.st_mode)
            digest, target = b"", b""
            if stat.S_ISREG(s.st_mode):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).digest()
                inodes.setdefault(s.st_ino, set()).add(rel)
            elif stat.S_ISLNK(s.st_mode):
                target = os.readlink(p)
            records[rel] = Record(
                kind=oct(kind),
                mode=stat.S_IMODE(s.st_mode),
                uid=s.st_uid,
                gid=s.st_gid,
                mtime=int(s.st_mtime),
                size=s.st_size if not stat.S_ISDIR(s.st_mode) else 0,
                digest=digest,
                target=target,
                rdev=s.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0,
                xattrs=_read_xattrs(p),
            )
    links = [frozenset(v) for v in inodes.values() if len(v) > 1]
    return records, sorted(links, key=sorted)
