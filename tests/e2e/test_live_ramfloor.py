"""The live initramfs says, before downloading, that the machine has too little RAM (liveimg.ramfloor).

One build of the atomic sample (fast codecs: the floor is computed from this build's own live
file, whatever its codec), booted once with the kernel given to QEMU at 64 MiB under the
computed floor: the boot ends with liveimg's RAM line naming the build's floor and the guest's
MemTotal (below QEMU's ``-m``), and the live file was never requested.  The build's initramfs is
the slim one: the live filesystems in it, the drivers a live boot never needs left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from liveimg.boottest import BootTestOptions, boot_test
from liveimg.console import Outcome
from liveimg.dracut.initramfs import Initramfs
from liveimg.liveverify import MESSAGES
from liveimg.ramfloor import BASE_MIB, RAM_FILE, unpacked_bytes
from tests.e2e.live import build_sample

MiB = 1 << 20


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("ramfloor") / "out"
    return out, build_sample("atomic", out)


def test_below_the_floor_the_initramfs_says_so_before_downloading(
    built: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    out, manifest = built
    initramfs_info = manifest["initramfs"]
    assert isinstance(initramfs_info, dict)
    floor = initramfs_info["ram_floor_mib"]
    ram = initramfs_info["ram_floor"]
    assert isinstance(ram, dict) and ram["need_mib"] == floor
    live = out / str(manifest["rootfs"]["file"])  # type: ignore[index]
    initramfs = out / str(initramfs_info["file"])

    # The floor is this build's live file + its unpacked initramfs + the base (the few KiB liveimg
    # appends after measuring may round up by one MiB), in the initramfs, the manifest and PXE_CONFIG.
    unpacked = -(-(live.stat().st_size + unpacked_bytes(initramfs)) // MiB)
    assert floor - BASE_MIB in (unpacked - 1, unpacked)
    with Initramfs(initramfs) as ird:
        assert ird.read(RAM_FILE.lstrip("/")).decode().split() == [str(floor), str(ram["live_ram_mib"])]
        modules = [m.path for m in ird.files().values() if m.path.endswith(".ko") or ".ko." in m.path]
    assert f"needs at least {floor} MiB of RAM over HTTP" in (out / "PXE_CONFIG").read_text()
    # Slim: the live filesystems are there, the rest of the kernel's and the SAN/InfiniBand drivers are not.
    names = {Path(m).name.split(".ko")[0].replace("-", "_") for m in modules}
    assert {"squashfs", "overlay", "isofs", "virtio_net", "e1000", "ahci", "usb_storage", "sr_mod"} <= names
    assert not names & {"xfs", "btrfs", "ocfs2", "gfs2", "f2fs", "lpfc", "qla2xxx", "bfa", "ib_core", "cfg80211"}
    assert initramfs_info["all_drivers"] is False

    memory = floor - 64
    options = BootTestOptions(via="kernel", memory_mib=memory, workdir=tmp_path / "boot", checks=False, timeout=900)
    result = boot_test(out, options)
    print(f"-m {memory}: {result.boot.summary()}")
    assert result.boot.outcome is Outcome.FAILURE, result.boot.explain()
    assert result.boot.reason == "image-verify", result.boot.explain()
    assert result.boot.line is not None
    match = re.search(MESSAGES["ram"], result.boot.line)
    assert match, result.boot.line
    need, have = int(match.group(1)), int(match.group(2))
    assert need == floor
    # MemTotal: what Linux manages, below QEMU's -m by what the firmware and the kernel keep.
    assert memory - 256 < have < memory, (have, memory)
    # Stopped before the download: the server never saw a request for the live file.
    requests = (result.workdir / "http.log").read_text()
    assert live.name not in requests, requests
