"""The live ISO's media check: the implanted MD5 verified at boot by dracut's rd.live.check.

dracut's dmsquash-live runs ``checkisomd5`` on the live CD when the kernel has ``rd.live.check``
and the initramfs has the program, which it takes from the image.  The atomic sample has no
isomd5sum, so the test gives a copy of it (never the cached sample itself) Debian 12's
``checkisomd5`` and its ``libpopt.so.0`` -- the files the package would install, from this
Debian 12 host -- and builds it with ``--iso`` and ``rd.live.check`` on the command line.  The
ISO as written passes the check and boots to the live system's checks; the same ISO with one
bit of its squashfs changed is refused by the check, with its message, not left to hang.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from liveimg import console, qemu
from liveimg.boottest import BootTestOptions, boot_test
from liveimg.dracut.initramfs import Initramfs
from liveimg.iso import IsoOptions
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from liveimg.pxe import PxeOptions
from tests.e2e.live import FAST, edited_copy
from tests.samples import sample_image
from tests.support import need, need_file, need_module, need_root

CHECKISOMD5 = Path("/usr/bin/checkisomd5")
LIBPOPT = Path("/usr/lib/x86_64-linux-gnu/libpopt.so.0")
DEPLOYMENT = "/ostree/deploy/*/deploy/*/usr/bin"
MEDIA_CHECK_FAILED = console.Pattern("media-check", r"CD check failed|the result is: FAIL")


def _with_checkisomd5(g: Any, usr_bin: str) -> None:
    """The deployment whose /usr/bin is ``usr_bin`` given checkisomd5 and the library it needs."""
    root = usr_bin.rstrip("/").removesuffix("/usr/bin")
    assert not g.exists(f"{root}{CHECKISOMD5}"), "the sample has checkisomd5 already: this copy is not needed"
    for host in (CHECKISOMD5, LIBPOPT):
        if not g.exists(f"{root}{host}"):
            g.upload(str(host), f"{root}{host}")
            g.chmod(0o755, f"{root}{host}")


def test_media_check_passes_the_iso_and_refuses_it_with_one_changed_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root()
    need("qemu-system-x86_64", "socat", "implantisomd5")
    need_module("guestfs", "Debian package python3-guestfs")
    need_file(str(CHECKISOMD5), "isomd5sum")
    need_file(str(LIBPOPT), "libpopt0")
    image = tmp_path / "atomic-isomd5sum.raw"
    edited_copy(sample_image("atomic"), image, monkeypatch, DEPLOYMENT, _with_checkisomd5)
    out = tmp_path / "out"
    args = ("console=ttyS0,115200", "rd.live.check")
    result = build(image, out, BuildOptions(**{**FAST, "iso": IsoOptions(), "pxe": PxeOptions(kernel_args=args)}))
    with Initramfs(out / result.manifest["initramfs"]["file"]) as initramfs:
        assert initramfs.find("usr/bin/checkisomd5"), "dracut left checkisomd5 out"
    iso = out / "live.iso"
    assert "rd.live.check" in result.manifest["iso"]["kernel_args"]
    assert result.manifest["iso"]["media_check"] is True

    # The ISO as written (made again with the checker by boot-test): the check passes, the system boots.
    good = boot_test(out, BootTestOptions(via="iso-bios"))
    assert good.ok, good.summary() + "\n" + good.boot.explain()
    assert "the result is: PASS" in good.boot.console_log.read_text(errors="replace")

    # The ISO itself with one bit of its squashfs changed: refused by the check, with its message.
    bad = tmp_path / "bad.iso"
    shutil.copyfile(iso, bad)
    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    try:
        offset = reader.get_record(rr_path="/LiveOS/squashfs.img").extent_location() * 2048 + 4096
    finally:
        reader.close()
    with open(bad, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))
    machine = qemu.Machine(memory_mib=3072, disks=(qemu.Disk(bad, mode="readonly", bus="cdrom"),))
    refused = qemu.boot(machine, tmp_path / "bad-boot", timeout=1200,
                        failures=(MEDIA_CHECK_FAILED, *console.DEFAULT_FAILURES))  # fmt: skip
    text = refused.console_log.read_text(errors="replace")
    assert refused.outcome is console.Outcome.FAILURE, refused.summary()
    assert refused.reason == "media-check", refused.summary()
    assert "the result is: FAIL" in text or "CD check failed" in text
    assert "Switching root" not in text
