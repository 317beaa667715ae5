"""The initramfs cache: skip dracut when nothing that goes into the initramfs changed.

The cached value is dracut's initramfs as the stage leaves it, compressed, before the build
appends its own segments (the layout's hooks, the live file's size and sha256, the RAM floor:
:mod:`liveimg.stages.initramfs`).  It lives in the build cache (:mod:`liveimg.cache`) as a file
entry of the ``initramfs-packed`` namespace, named by :func:`packed_key`; a byte entry of the
``initramfs`` namespace, named by :func:`cache_key`, holds its record and that name.

The contract.  An entry is reused only when both hold:

* **The key is equal.**  :func:`cache_key` is the sha256 of: this format's tag and liveimg's
  version; the source of liveimg's dracut code (``liveimg/dracut/*.py``: the command line it
  makes, the device nodes it adds, the compression); the kernel version; dracut's command line
  (the module list, liveimg's arguments and the layout's, the tools liveimg asks for, ``--add``,
  ``--omit``, ``--dracut-arg``); the compression, its level, the command that does it and its version; where
  dracut runs; ``$SOURCE_DATE_EPOCH``; and the content (names, types, modes, symlink targets,
  bytes) of the guest's ``/usr/lib/modules/<kver>`` (or ``/lib/modules``), ``/usr/lib/dracut``
  (its modules and ``dracut.conf.d``), ``/etc/dracut.conf`` and ``/etc/dracut.conf.d`` (with the
  ``--dracut-conf`` copy liveimg writes there), all read in the tree dracut runs in.
* **The root still holds what dracut copied.**  dracut copies from the whole root (libraries,
  programs, configuration): the entry's *record* (:func:`root_record`) is, for every path the
  initramfs holds as a regular file, a hard link or a symbolic link, what the root has at that
  path (a file's sha256, a link's target, a directory, nothing), and for every directory of the
  initramfs (and every parent of such a path), the list of names the root's directory has.  A hit needs
  the same record computed from the new root (:func:`record_holds`): a changed file, a new file
  beside one dracut copied (a new library, a new udev rule), a removed one, is a miss.

When the record does not hold, dracut runs; but an upgrade seldom changes what it copies, and
its archive is then the same bytes as before.  The compressed form of an archive is therefore
cached too, under :func:`packed_key` (the archive's sha256 and the compressor's
:func:`liveimg.dracut.compress.fingerprint`): that entry needs no record, and the compression,
most of the stage's time with xz, is skipped (:func:`lookup_packed`, :func:`store_packed`).

What dracut reads but does not copy and no key part covers (a setting in a file elsewhere that
changes what a module installs, a program's output at build time, the build host's ``/sys``
that a ``--hostonly`` given with ``--dracut-arg`` reads) is outside the contract.
The guest is read only through :class:`liveimg.fsview.GuestTree` (the extracted tree, never
followed out of it).  Only the sandbox path uses the cache: the appliance has no host tree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveimg._version import __version__
from liveimg.cache import Cache
from liveimg.dracut.cpio import Kind
from liveimg.dracut.initramfs import Initramfs
from liveimg.errors import InvalidImage
from liveimg.fsview import FileType, GuestTree

log = logging.getLogger(__name__)

NAMESPACE = "initramfs"
#: The format of the key and the record: a new tag makes every old entry a miss.
FORMAT = "liveimg-initramfs-cache-2"
#: The namespace and format of the compressed forms of dracut's archives (:func:`packed_key`).
PACKED_NAMESPACE = "initramfs-packed"
PACKED_FORMAT = "liveimg-initramfs-packed-1"
#: The guest directories whose whole content is in the key (besides ``<modules>/<kver>``).
CONFIG_PATHS = ("/usr/lib/dracut", "/etc/dracut.conf", "/etc/dracut.conf.d")
MODULE_BASES = ("/usr/lib/modules", "/lib/modules")
#: The largest guest file hashed (a bigger one is recorded by its size alone, and never matches).
_FILE_LIMIT = 1 << 30


@dataclass(frozen=True)
class KeyParts:
    """What decides dracut's initramfs apart from the guest's files (see the module doc)."""

    kver: str
    argv: tuple[str, ...]
    compression: str
    level: int | None
    compress_command: str
    where: str
    source_date_epoch: str | None


def code_digest() -> str:
    """The sha256 of liveimg's dracut code: every ``liveimg/dracut/*.py``, by name."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_digest(tree: GuestTree, path: str) -> str:
    try:
        return hashlib.sha256(tree.read_bytes(path, limit=_FILE_LIMIT)).hexdigest()
    except InvalidImage as exc:
        return f"unreadable: {exc}"


def state(tree: GuestTree, path: str) -> str:
    """What the root has at ``path`` (its last component not followed): ``f:<sha256>``, ``l:<target>``,
    ``d``, ``-`` (nothing), ``o`` (another type) or ``!`` (not reachable in the tree)."""
    try:
        st = tree.stat(path, follow=False)
        if st is None:
            return "-"
        if st.type is FileType.SYMLINK:
            return "l:" + tree.readlink(path)
        if st.type is FileType.FILE:
            return "f:" + _file_digest(tree, path)
        return "d" if st.type is FileType.DIR else "o"
    except InvalidImage:
        return "!"


def names(tree: GuestTree, path: str) -> list[str] | None:
    """The names in the root's directory ``path`` (None when it is not one)."""
    try:
        return tree.listdir(path) if tree.is_dir(path) else None
    except InvalidImage:
        return None


def tree_digest(tree: GuestTree, top: str) -> str:
    """The sha256 of everything below ``top`` (included): names, types, modes, link targets, bytes."""
    digest = hashlib.sha256()
    pending = [top]
    while pending:
        path = pending.pop()
        try:
            st = tree.stat(path, follow=False)
        except InvalidImage:
            st = None
        mode = st.mode if st is not None else 0
        digest.update(f"{path}\0{mode:o}\0{state(tree, path)}\n".encode())
        if st is not None and st.type is FileType.DIR:
            pending.extend(posixpath.join(path, n) for n in reversed(names(tree, path) or []))
    return digest.hexdigest()


def cache_key(tree: GuestTree, parts: KeyParts) -> str:
    """The hex sha256 that names the initramfs of ``parts`` built in ``tree`` (see the module doc)."""
    base = next((b for b in MODULE_BASES if tree.is_dir(f"{b}/{parts.kver}")), MODULE_BASES[0])
    key: dict[str, Any] = {
        "format": FORMAT,
        "liveimg": __version__,
        "code": code_digest(),
        "parts": {**parts.__dict__, "argv": list(parts.argv)},
        "trees": {p: tree_digest(tree, p) for p in (f"{base}/{parts.kver}", *CONFIG_PATHS)},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def root_record(tree: GuestTree, initramfs_paths: Iterable[str], initramfs_dirs: Iterable[str] = ()) -> dict[str, Any]:
    """The record of the root behind an initramfs that holds ``initramfs_paths`` (files and links)
    and ``initramfs_dirs`` (directories): what the root has at each path, and the names in the
    root's directory of each of those directories and of each path's parent."""
    paths = sorted({"/" + p.strip("/") for p in initramfs_paths})
    dirs = sorted({posixpath.dirname(p) for p in paths} | {"/" + d.strip("/") for d in initramfs_dirs})
    return {"paths": {p: state(tree, p) for p in paths}, "dirs": {d: names(tree, d) for d in dirs}}


def copied_paths(raw: Path) -> tuple[list[str], list[str]]:
    """The paths dracut's uncompressed archive ``raw`` holds as files, hard links and symbolic
    links, and those it holds as directories (an empty one too: a glob that matched nothing)."""
    with Initramfs(raw) as ird:
        members = ird.files().values()
        kinds = (Kind.FILE, Kind.HARDLINK, Kind.SYMLINK)
        return [m.path for m in members if m.kind in kinds], [m.path for m in members if m.kind is Kind.DIR]


def record_holds(tree: GuestTree, record: dict[str, Any]) -> str | None:
    """None if ``tree`` still has what ``record`` says; else the first path that changed."""
    for path, was in record["paths"].items():
        if state(tree, path) != was:
            return str(path)
    for path, was in record["dirs"].items():
        if names(tree, path) != was:
            return f"{path}/"
    return None


@dataclass(frozen=True)
class Entry:
    """A hit's metadata: dracut's module decisions as the cold build made them."""

    modules: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]
    unpacked: int | None = None  # liveimg.ramfloor.unpacked_bytes of the initramfs (None: not recorded)


def lookup(cache: Cache, key: str, tree: GuestTree, dest: Path) -> Entry | None:
    """Copy the initramfs cached under ``key`` to ``dest`` if its record holds in ``tree``; its entry, or None."""
    raw = cache.get(NAMESPACE, key)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        changed = record_holds(tree, meta["record"])
        unpacked = meta.get("unpacked")
        entry = Entry(tuple(meta["modules"]), tuple((m, w) for m, w in meta["left_out"]),
                      int(unpacked) if unpacked is not None else None)  # fmt: skip
        packed = str(meta["packed"])
    except (ValueError, KeyError, TypeError) as exc:
        log.info("initramfs cache: entry %s unreadable (%s): not reused", key[:12], exc)
        return None
    if changed is not None:
        log.info("initramfs cache: %s changed in the root since entry %s: dracut runs", changed, key[:12])
        return None
    if not lookup_packed(cache, packed, dest):
        return None
    return entry


def packed_key(raw: Path, compressor: str) -> str:
    """The hex sha256 that names the compressed form of the archive ``raw`` written by ``compressor``
    (a :func:`liveimg.dracut.compress.fingerprint`)."""
    digest = hashlib.sha256()
    with open(raw, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    key = {"format": PACKED_FORMAT, "archive": digest.hexdigest(), "compressor": compressor}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def lookup_packed(cache: Cache, key: str, dest: Path) -> bool:
    """Copy the compressed archive cached under ``key`` (a :func:`packed_key`) to ``dest``; whether it was there."""
    return cache.copy_file(PACKED_NAMESPACE, key, dest)


def store_packed(cache: Cache, key: str, packed: Path) -> bool:
    """Cache ``packed``, the compressed archive named by ``key`` (a :func:`packed_key`)."""
    return cache.put_file(PACKED_NAMESPACE, key, packed)


def store(cache: Cache, key: str, *, tree: GuestTree, raw: Path, packed_key: str, entry: Entry) -> bool:
    """Cache the record of dracut's archive ``raw`` under ``key``: the entry whose compressed form
    :func:`store_packed` stored under ``packed_key``."""
    meta = {
        "record": root_record(tree, *copied_paths(raw)),
        "modules": list(entry.modules),
        "left_out": [list(pair) for pair in entry.left_out],
        "unpacked": entry.unpacked,
        "packed": packed_key,
    }
    return cache.put(NAMESPACE, key, json.dumps(meta).encode())


__all__ = [
    "NAMESPACE",
    "PACKED_NAMESPACE",
    "Entry",
    "KeyParts",
    "cache_key",
    "code_digest",
    "copied_paths",
    "lookup",
    "lookup_packed",
    "packed_key",
    "record_holds",
    "root_record",
    "store",
    "store_packed",
    "tree_digest",
]
