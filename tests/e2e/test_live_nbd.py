"""The live image read over NBD as a block device (liveimg.livenbd), booted for real.

One build of the atomic sample (fast codecs) for ``--url nbd://...``; boot-test exports its
squashfs with a real NBD server (qemu-nbd, liveimg.nbdserve) and boots the kernel given to QEMU
with :data:`MEMORY_MIB` of RAM: less than the squashfs's size + 256 MiB, and less than the
squashfs plus the unpacked initramfs, which the HTTP way holds in RAM together.  The initramfs
attaches the export as /dev/nbd0, checks its size and sha256 against the build's, and the live
system comes up to boot-test's checks on the snapshot of the squashfs read over the network;
nothing fetched the squashfs over HTTP.
"""

from __future__ import annotations

import re
from pathlib import Path

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.dracut.initramfs import Initramfs
from liveimg.pxe import PxeOptions
from tests.e2e.live import build_sample

#: The RAM of the boot: the floor of the NBD way does not grow with the image.
MEMORY_MIB = 512
MIB = 1024 * 1024


def test_the_live_image_is_read_over_nbd_in_less_ram_than_it_takes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = build_sample("atomic", out, pxe=PxeOptions(url="nbd://192.0.2.1:10809/live"))
    name = manifest["rootfs"]["file"]
    size = manifest["artifacts"][name]["size"]
    assert manifest["kernel_args"][0] == f"root=live:nbd://192.0.2.1:10809/live/{name}"
    assert not (out / "boot.ipxe").exists()
    assert f"--export-name live/{name}" in (out / "PXE_CONFIG").read_text()
    initramfs = out / manifest["boot"]["initramfs"]
    with Initramfs(initramfs) as ird:
        names = {m.path.rsplit("/", 1)[-1] for m in ird.files().values()}
        unpacked = sum(m.size for m in ird.files().values())
    assert {"nbd-client", "livenbdroot", "31-liveimg-nbd.sh", "liveimg-nbd-generator"} <= names
    assert size + 256 * MIB > MEMORY_MIB * MIB
    assert size + unpacked > MEMORY_MIB * MIB, (size, unpacked)

    result = boot_test(out, BootTestOptions(via="kernel", workdir=tmp_path / "boot", memory_mib=MEMORY_MIB))
    print(
        f"nbd: {result.summary()}; {MEMORY_MIB} MiB of RAM, squashfs {size / MIB:.0f} MiB, "
        f"initramfs unpacked {unpacked / MIB:.0f} MiB"
    )
    assert result.ok, result.boot.explain()
    log = result.boot.console_log.read_text(errors="replace")
    assert re.search(rf"liveimg: nbd://\S+/{re.escape(name)} checked: {size} bytes, sha256 ", log), log[-3000:]
    assert result.checks["root"].split("[", 1)[0] == "/dev/mapper/live-rw", result.checks
    assert any(line.split()[:1] == ["nbd0"] for line in result.block_devices), result.block_devices
    assert name not in (result.workdir / "http.log").read_text()
