"""The Linux kernel mounts our squashfs images (in the libguestfs appliance) and reads them back.

One appliance launch for every image: each is attached as its own read-only drive.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.writer import pack, pack_file
from tests import support

IMAGES = {
    "xz-bcj": SquashfsOptions(comp="xz", Xbcj=("x86",)),
    "xz-bcj-exhaustive": SquashfsOptions(comp="xz", Xbcj=("x86",), bcj_mode="exhaustive"),
    "xz-dict": SquashfsOptions(comp="xz", Xbcj=("x86", "arm"), Xdict_size=65536, block_size=1 << 20),
    "gzip": SquashfsOptions(comp="gzip", Xcompression_level=6, block_size=4096),
    "zstd": SquashfsOptions(comp="zstd", Xcompression_level=19, always_use_fragments=True),
    "lz4": SquashfsOptions(comp="lz4", Xhc=True, no_fragments=True),
}
IMAGES["lzo"] = SquashfsOptions(comp="lzo", Xcompression_level=9)  # python-lzo: the test extra


def _tree(src: Path) -> None:
    (src / "usr" / "bin").mkdir(parents=True)
    (src / "usr" / "bin" / "python3").write_bytes(Path("/usr/bin/python3").read_bytes())  # real x86 code
    (src / "etc").mkdir()
    (src / "etc" / "hostname").write_text("live\n")
    (src / "etc" / "setuid").write_bytes(b"s" * 5000)
    os.chown(src / "etc" / "setuid", 1000, 100)  # before chmod: chown clears setuid
    (src / "etc" / "setuid").chmod(0o4755)
    os.link(src / "etc" / "hostname", src / "etc" / "hostname.hard")
    (src / "etc" / "link").symlink_to("hostname")
    os.setxattr(src / "etc" / "hostname", "security.selinux", b"system_u:object_r:etc_t:s0\0")
    os.setxattr(src / "etc" / "hostname", "user.note", b"hello")
    os.mknod(src / "etc" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(src / "etc" / "fifo")
    big = src / "big"
    big.mkdir()
    for i in range(10_000):
        (big / f"file-{i:05d}").write_text(str(i))
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"middle")


def test_kernel_reads_our_images(tmp_path: Path) -> None:
    support.need_root()
    support.need_module("guestfs", "the Debian package python3-guestfs")
    support.need_module("lzo", "python-lzo, in the test extra (it builds against liblzo2-dev)")
    import guestfs

    src = tmp_path / "src"
    _tree(src)
    images = []
    for name, opts in IMAGES.items():
        image = tmp_path / f"{name}.sqfs"
        pack(src, image, opts)
        images.append(image)
    rootfs = tmp_path / "rootfs.img"
    with open(rootfs, "wb") as f:
        f.truncate(200 << 20)
        f.seek(10 << 20)
        f.write(Path("/usr/bin/python3").read_bytes())
    live = tmp_path / "live.sqfs"
    pack_file(rootfs, live, "LiveOS/rootfs.img", SquashfsOptions(comp="xz", Xbcj=("x86",)))

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(support.accel().libguestfs_settings())
    for image in [*images, live]:
        g.add_drive_opts(str(image), readonly=1, format="raw")
    g.launch()
    try:
        devices = g.list_devices()
        assert len(devices) == len(images) + 1
        python_sum = hashlib.sha256(Path("/usr/bin/python3").read_bytes()).hexdigest()
        for device, image in zip(devices, images, strict=False):
            g.mount_ro(device, "/")
            try:
                assert g.checksum("sha256", "/usr/bin/python3") == python_sum, image
                assert g.cat("/etc/hostname") == "live\n"
                st = g.lstatns("/etc/setuid")
                assert (st["st_mode"] & 0o7777, st["st_uid"], st["st_gid"]) == (0o4755, 1000, 100)
                assert g.lstatns("/etc/hostname")["st_nlink"] == 2
                assert g.lstatns("/etc/hostname")["st_ino"] == g.lstatns("/etc/hostname.hard")["st_ino"]
                assert g.readlink("/etc/link") == "hostname"
                xattrs = {x["attrname"]: x["attrval"] for x in g.lgetxattrs("/etc/hostname")}
                assert xattrs["user.note"] == b"hello"
                assert xattrs["security.selinux"].rstrip(b"\0") == b"system_u:object_r:etc_t:s0"
                assert stat.S_ISCHR(g.lstatns("/etc/null")["st_mode"])
                assert stat.S_ISFIFO(g.lstatns("/etc/fifo")["st_mode"])
                names = g.ls("/big")
                assert len(names) == 10_000
                # lookups by name go through the directory index
                for i in (0, 1, 4321, 9998, 9999):
                    assert g.cat(f"/big/file-{i:05d}") == str(i)
                assert not g.exists("/big/file-10000")
                assert g.filesize("/sparse") == 64 << 20
                assert g.pread("/sparse", 6, 32 << 20) == b"middle"
            finally:
                g.umount_all()
        g.mount_ro(devices[-1], "/")
        assert g.filesize("/LiveOS/rootfs.img") == 200 << 20
        assert g.pread("/LiveOS/rootfs.img", 16, 10 << 20) == Path("/usr/bin/python3").read_bytes()[:16]
        assert g.checksum("sha256", "/LiveOS/rootfs.img") == hashlib.sha256(rootfs.read_bytes()).hexdigest()
    finally:
        g.shutdown()
        g.close()


@pytest.fixture(autouse=True)
def _guestfs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in support.guestfs_env().items():
        monkeypatch.setenv(name, value)
