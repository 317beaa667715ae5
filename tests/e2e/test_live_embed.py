"""atomic sample -> `liveimg build --embed-rootfs` -> pxelinux over TFTP alone, no HTTP server.

One build (fast codecs) whose live file is also in ``live-rootfs.cpio``, a second initrd: the
archive read back holds exactly that file, the manifest records it, and every boot
configuration loads both initrds with ``root=live:/live-rootfs.squashfs.img``.  One boot: the
NIC's iPXE ROM loads pxelinux from QEMU's TFTP server, pxelinux the kernel and both initrds
over TFTP; the image's dracut mounts the file the kernel unpacked.  boot-test starts no HTTP
server (nothing forwarded into the guest), and the live system's checks pass.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import libarchive  # type: ignore[import-untyped]
import pytest

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.manifest import sha256_file
from tests.e2e.live import FAST_ARGS
from tests.samples import sample_image
from tests.support import need, need_root

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 1500.0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    need_root()
    need("qemu-system-x86_64", "socat")
    image = sample_image("atomic")
    out = tmp_path_factory.mktemp("embed") / "out"
    argv = [sys.executable, "-m", "liveimg", "--progress", "none", "build", str(image), "-o", str(out),
            "--embed-rootfs", *FAST_ARGS]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    print(f"build --embed-rootfs: {time.monotonic() - started:.0f} s, stages {manifest['stages']}")
    # The size limits are said at build time, on stderr, as they are recorded.
    assert manifest["embed"]["warnings"]
    for warning in manifest["embed"]["warnings"]:
        assert f"embed: {warning}" in done.stderr
    return out, manifest


def test_the_second_initrd_holds_the_live_file(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    embed = manifest["embed"]
    live = manifest["rootfs"]["file"]
    assert embed["file"] == "live-rootfs.cpio" and embed["path"] == f"/{live}"
    cpio = out / embed["file"]
    assert embed["size"] == cpio.stat().st_size and embed["sha256"] == sha256_file(cpio)
    assert embed["size"] % 4 == 0
    entries = []
    with libarchive.file_reader(str(cpio)) as archive:
        for entry in archive:
            digest = hashlib.sha256()
            for block in entry.get_blocks():
                digest.update(block)
            entries.append((entry.pathname, entry.size, digest.hexdigest()))
        assert archive.format_name == b"ASCII cpio (SVR4 with no CRC)"  # newc
    assert entries == [(live, (out / live).stat().st_size, manifest["artifacts"][live]["sha256"])]
    root = f"root=live:/{live}"
    assert root in manifest["kernel_args"] and not any("://" in a for a in manifest["kernel_args"])
    initramfs = manifest["initramfs"]["file"]
    assert f"APPEND initrd={initramfs},live-rootfs.cpio {root} " in (out / "pxelinux.cfg/default").read_text()
    ipxe = (out / "boot.ipxe").read_text()
    assert f"initrd {initramfs}\ninitrd live-rootfs.cpio\n" in ipxe and "initrd=live-rootfs.cpio" in ipxe


def test_pxelinux_boots_it_over_tftp_with_no_http_server(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, manifest = built
    result = boot_test(out, BootTestOptions(via="pxelinux", timeout=TIMEOUT, workdir=tmp_path))
    assert result.ok, result.summary() + "\n" + result.boot.explain()
    assert not result.http_server
    assert not (result.workdir / "http.log").exists()
    assert result.checks["ostree-booted"] == "yes"
    log = result.boot.console_log.read_text(errors="replace")
    # pxelinux was told to load both (its APPEND line reached the kernel), and the kernel unpacked them.
    live, initramfs = manifest["rootfs"]["file"], manifest["initramfs"]["file"]
    assert f"initrd={initramfs},live-rootfs.cpio root=live:/{live} " in log
    assert "Trying to unpack rootfs image as initramfs" in log and "Initramfs unpacking failed" not in log
    # The live device is the loop device on the file the kernel unpacked, not a download.
    assert any(line.startswith("live-rw:") for line in result.dm_table)
    assert " checked: " not in log  # liveimg's livenetroot never ran (it says so when it has checked a download)
    print(f"pxelinux, embedded: {result.boot.seconds:.0f} s")
