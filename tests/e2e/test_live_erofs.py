"""The erofs rootfs type, booted over iPXE: LiveOS/rootfs.img inside an EROFS image the image's kernel reads.

The samples' dracut (Debian's 059) mounts only squashfs, and liveimg refuses erofs for it
(tests/integration/test_pipeline.py).  dracut-ng mounts EROFS.  To boot one here, the test
gives a copy of the atomic sample (never the cached sample itself) a
dmsquash-live-root.sh with dracut-ng's two changes for EROFS: an erofs live image is taken
where a squashfs is, and it is mounted without ``-t squashfs``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.erofs import EROFS_NAME
from liveimg.manifest import sha256_file
from liveimg.options import BuildOptions, RootfsType
from liveimg.pipeline import build
from liveimg.pxe import PxeOptions
from tests.e2e.live import FAST, edited_copy
from tests.samples import sample_image
from tests.support import need, need_module, need_root

URL = "http://192.0.2.1/live"  # where a user would serve it; the boot test uses its own loopback URL
SCRIPT = "/ostree/deploy/*/deploy/*/usr/lib/dracut/modules.d/90dmsquash-live/dmsquash-live-root.sh"
#: dracut 059's lines, and what dracut-ng has in their place.
NG_CHANGES = (
    ("squashfs) SQUASHED=$livedev ;;", "squashfs | erofs) SQUASHED=$livedev ;;"),
    ('mount -n -t squashfs -o ro "$SQUASHED_LOOPDEV"', 'mount -n -o ro "$SQUASHED_LOOPDEV"'),
)


def _dracut_ng(g: Any, path: str) -> None:
    """dmsquash-live-root.sh at ``path`` with dracut-ng's changes for EROFS."""
    text = g.read_file(path).decode()
    for old, new in NG_CHANGES:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    g.rm(path)  # a new file: the old one is a hard link into the ostree repository
    g.write(path, text.encode())
    g.chmod(0o755, path)


def test_erofs_live_image_boots_where_dracut_mounts_erofs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    need("qemu-system-x86_64", "mkfs.erofs", "blkid")
    need_module("guestfs", "Debian package python3-guestfs")
    image = tmp_path / "atomic-dracut-ng.raw"
    edited_copy(sample_image("atomic"), image, monkeypatch, SCRIPT, _dracut_ng)
    before = sha256_file(image)
    out = tmp_path / "out"
    result = build(image, out, BuildOptions(**{**FAST, "rootfs_type": RootfsType.EROFS, "pxe": PxeOptions(url=URL)}))
    assert sha256_file(image) == before, "the input image changed"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rootfs"] == {**manifest["rootfs"], "type": "erofs", "file": EROFS_NAME,
                                  "image": "LiveOS/rootfs.img"}  # fmt: skip
    assert manifest["erofs"]["compressor"] == "lz4hc" and "squashfs" not in manifest
    assert manifest["kernel_args"][0] == f"root=live:{URL}/{EROFS_NAME}"
    assert f"root=live:{URL}/{EROFS_NAME}" in (out / "boot.ipxe").read_text()
    assert "-mkfs.erofs" not in manifest["artifacts"]
    assert sorted(p.name for p in out.glob("live-rootfs.*")) == [EROFS_NAME]
    fstype = subprocess.run(["blkid", "-s", "TYPE", "-o", "value", str(out / EROFS_NAME)],
                            check=True, capture_output=True, text=True)  # fmt: skip
    assert fstype.stdout.strip() == "erofs"
    assert f"root=live:<URL>/{EROFS_NAME}" in (out / "PXE_CONFIG").read_text()
    assert result.timings.get("erofs", 0) > 0 and "squashfs" not in result.timings

    # iPXE over HTTP, and rd.writable.fsimg=1: rootfs.img is copied out of the EROFS into RAM.
    options = BootTestOptions(via="ipxe", kernel_args=("rd.writable.fsimg=1",), memory_mib=6144,
                              workdir=tmp_path / "boot")  # fmt: skip
    booted = boot_test(out, options)
    assert booted.ok, booted.summary() + "\n" + booted.boot.explain()
    assert booted.checks["ostree-booted"] == "yes"
    assert any(line.split()[4:5] == ["erofs"] for line in booted.block_devices), booted.block_devices
    live_rw = [line for line in booted.dm_table if line.startswith("live-rw:")]
    assert live_rw and " linear " in live_rw[0], booted.dm_table  # no snapshot: the image itself is writable
    http = (booted.workdir / "http.log").read_text()
    assert "GET /vmlinuz-" in http and "GET /initramfs-" in http  # iPXE fetched them over HTTP
    assert f"GET /{EROFS_NAME}" in http  # and dracut's livenet the live image
