"""The rootfs stage on the real samples: the tree in rootfs.img equals the source root plus /boot.

The source is read by the Linux kernel (the libguestfs appliance mounts the sample's
filesystems); rootfs.img is read by an independent ext4 implementation (dissect.extfs)
on the host.  Compared for every entry: type, mode, owner, size, mtime (to the
nanosecond), xattrs, link target, content hash, and hard-link structure.

One test file per sample (test_rootfs_*.py), so that the slow tier's workers share them out.
"""

from __future__ import annotations

import hashlib
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liveimg import e2fs, rootfs
from liveimg.guest import open_guest
from liveimg.manifest import sha256_file
from liveimg.rootfs import GiB, Method, RootfsOptions, SizeMode
from liveimg.tree import ApplianceTree, kind_of
from tests.samples import sample_image
from tests.support import need, need_module

Record = tuple[str, int, int, int, int, int, tuple[tuple[str, bytes], ...], str | None, str | None]


def _guest_records(g: Any, top: str, scratch: Path) -> tuple[dict[str, Record], list[frozenset[str]]]:
    entries = ApplianceTree(g, top, scratch).entries()
    sums: dict[str, str] = {}
    out = scratch / "sums"
    g.checksums_out("sha256", top, str(out))
    for line in out.read_text(errors="surrogateescape").splitlines():
        digest, _, name = line.partition(" ")
        name = name[1:] if name.startswith((" ", "*")) else name
        if digest.startswith("\\"):  # sha256sum escapes names holding a backslash or a newline
            digest = digest[1:]
            name = name.replace("\\\\", "\0").replace("\\n", "\n").replace("\0", "\\")
        sums[name.removeprefix("./")] = digest
    records: dict[str, Record] = {}
    groups: dict[tuple[int, int], set[str]] = {}
    for e in entries:
        records[e.path] = (
            e.kind, e.mode, e.uid, e.gid, e.size if e.kind == "file" else 0, e.mtime_ns, e.xattrs,
            e.link_target, sums.get(e.path) if e.kind == "file" else None,
        )  # fmt: skip
        if e.kind == "file" and e.inode is not None:
            groups.setdefault(e.inode, set()).add(e.path)
    return records, sorted((frozenset(v) for v in groups.values() if len(v) > 1), key=sorted)


_ACL_SHORT_TAGS = (0x01, 0x04, 0x10, 0x20)  # USER_OBJ, GROUP_OBJ, MASK, OTHER: no id on disk


def _vfs_acl(name: str, value: bytes) -> bytes:
    """ext4 stores POSIX ACLs in a compact form of its own; the kernel shows them to getxattr as version 2."""
    if not name.startswith("system.posix_acl_") or value[:4] != b"\x01\x00\x00\x00":
        return value
    out, pos = bytearray(b"\x02\x00\x00\x00"), 4
    while pos < len(value):
        tag, perm = struct.unpack_from("<HH", value, pos)
        if tag in _ACL_SHORT_TAGS:
            ident, pos = 0xFFFFFFFF, pos + 4
        else:
            (ident,) = struct.unpack_from("<I", value, pos + 4)
            pos += 8
        out += struct.pack("<HHI", tag, perm, ident)
    return bytes(out)


def _extfs_records(image: Path) -> tuple[dict[str, Record], list[frozenset[str]]]:
    from dissect.extfs import ExtFS

    records: dict[str, Record] = {}
    groups: dict[int, set[str]] = {}
    with open(image, "rb") as fh:
        fs = ExtFS(fh)

        def walk(node: Any, rel: str) -> Iterator[tuple[str, Any]]:
            yield rel, node
            if stat.S_ISDIR(node.inode.i_mode):
                for child in sorted(node.iterdir(), key=lambda n: n.filename):
                    if child.filename in (".", ".."):
                        continue
                    yield from walk(child, f"{rel}/{child.filename}" if rel else child.filename)

        for rel, node in walk(fs.get("/"), ""):
            raw = node.inode
            mode = int(raw.i_mode)
            kind = kind_of(mode, rel)
            uid = int(raw.i_uid) | (int(raw.i_uid_high) << 16)
            gid = int(raw.i_gid) | (int(raw.i_gid_high) << 16)
            xattrs = tuple(sorted((x.name, _vfs_acl(x.name, bytes(x.value))) for x in node.xattr))
            digest = None
            if kind == "file":
                h = hashlib.sha256()
                stream = node.open()
                while chunk := stream.read(1 << 20):
                    h.update(chunk)
                digest = h.hexdigest()
                groups.setdefault(node.inum, set()).add(rel)
            records[rel] = (
                kind, mode, uid, gid, node.size if kind == "file" else 0, node.mtime_ns, xattrs,
                node.link if kind == "symlink" else None, digest,
            )  # fmt: skip
    return records, sorted((frozenset(v) for v in groups.values() if len(v) > 1), key=sorted)


def _merged(root: dict[str, Record], boot: dict[str, Record] | None) -> dict[str, Record]:
    if boot is None:
        return dict(root)
    merged = {k: v for k, v in root.items() if k != "boot" and not k.startswith("boot/")}
    for rel, rec in boot.items():
        merged[f"boot/{rel}" if rel else "boot"] = rec
    return merged


def _diff(expected: dict[str, Record], got: dict[str, Record], ignore: set[str]) -> list[str]:
    problems = []
    for path in sorted(set(expected) | set(got)):
        if path in ignore or path.split("/", 1)[0] in ignore:
            continue
        if path not in got:
            problems.append(f"missing: {path}")
        elif path not in expected:
            problems.append(f"extra: {path}")
        elif expected[path] != got[path]:
            problems.append(f"differs: {path}: {expected[path]!r} != {got[path]!r}")
    return problems


def build_and_compare(variant: str, tmp_path: Path, method: Method, *, modes: bool) -> None:
    need("debugfs", "e2fsck", "resize2fs", "qemu-img")
    need_module("dissect.extfs", "PyPI dissect.extfs (the test extra)")
    image = sample_image(variant)
    before = sha256_file(image)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    drive = tmp_path / "drive.img"
    with open(drive, "wb") as f:
        f.truncate(rootfs.work_drive_size(image.stat().st_size, RootfsOptions()))
    built: dict[str, rootfs.RootfsImage] = {}
    with open_guest(image, work_drives=[drive]) as guest:
        info = guest.inspect()
        dest = tmp_path / "rootfs.img"
        built["auto"] = rootfs.build_rootfs(
            guest, info, dest, RootfsOptions(), workdir=scratch, work_drive=(drive, guest.work_devices[0])
        )
        if modes:
            for name, options in (
                ("fixed", RootfsOptions(size_mode=SizeMode.FIXED, size=3 * GiB)),
                ("keep", RootfsOptions(size_mode=SizeMode.KEEP)),
            ):
                built[name] = rootfs.build_rootfs(guest, info, tmp_path / f"{name}.img", options, workdir=scratch)
        root_records, root_links = _guest_records(guest.g, guest.root_mountpoint, scratch)
        boot_mp = guest.boot_mountpoint
        boot_records = _guest_records(guest.g, boot_mp, scratch)[0] if boot_mp else None
        root_length = info.root.length or info.root.size
    assert sha256_file(image) == before, "the input image changed"
    result = built["auto"]
    assert result.method is method
    assert result.label == "LiveOS"
    sb = e2fs.superblock(result.path)
    assert sb.block_size == 4096 and sb.reserved_blocks == 0 and sb.label == "LiveOS"
    assert e2fs.fsck(result.path, repair=False).clean
    # sparse: the file holds about its data, not its size; auto leaves honest room
    assert result.allocated < result.size * 0.85
    assert result.size - result.content >= 256 * 1024**2
    got, got_links = _extfs_records(result.path)
    expected = _merged(root_records, boot_records)
    # mke2fs makes a lost+found of its own on the copy path; the partition path keeps the source's
    problems = _diff(expected, got, ignore={"lost+found"} if method is Method.COPY else set())
    assert not problems, "\n".join(problems[:40])
    assert got_links == root_links, "hard links differ"
    if modes:
        assert built["fixed"].size == 3 * GiB
        assert built["keep"].size == root_length
        for name in ("fixed", "keep"):
            assert e2fs.fsck(built[name].path, repair=False).clean
