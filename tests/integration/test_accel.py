"""The probe guest really runs under QEMU (with TCG, which always works)."""

from __future__ import annotations

import time
from pathlib import Path

from liveimg import accel, guest, tcg
from liveimg import run as runner
from tests.support import need, need_module


def test_probe_guest_runs_under_tcg(tmp_path: Path) -> None:
    need("qemu-system-x86_64")
    disk = tmp_path / "probe.img"
    disk.write_bytes(accel.boot_sector())
    result = runner.run(
        ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "16", "-nodefaults", "-display", "none",
         "-no-reboot", "-serial", "stdio", "-monitor", "none",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
         "-drive", f"file={disk},format=raw,if=ide,index=0"],
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == accel.PROBE_EXIT_STATUS
    assert result.stdout == "K"


def test_probe_decides_within_its_bound(tmp_path: Path) -> None:
    need("qemu-system-x86_64")
    started = time.monotonic()
    choice = accel.choose_accel("auto", cache_dir=tmp_path, environ={})
    assert time.monotonic() - started < accel.PROBE_TIMEOUT + 10
    # Either answer can be right, depending on the machine; it must agree with a second,
    # uncached probe (on these machines KVM guests hang, and the answer is TCG).
    again = accel.probe_kvm("qemu-system-x86_64") if Path(accel.KVM_DEVICE).exists() else "no device"
    assert (choice.accel is accel.Accel.KVM) == (again is None)


def test_the_tcg_appliance_runs_with_a_bounded_translation_cache(tmp_path: Path) -> None:
    """The appliance's QEMU really got -accel tcg,tb-size through liveimg's wrapper, and runs."""
    need("qemu-system-x86_64", "mkfs.ext4")
    need_module("guestfs", "Debian package python3-guestfs")
    disk = tmp_path / "fs.raw"
    runner.run(["mkfs.ext4", "-q", disk, "64M"])
    with guest.open_guest(disk, accel="tcg") as opened:
        pid = opened.g.get_pid()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert opened.g.list_devices() == ["/dev/sda"]
    assert f"tcg,tb-size={tcg.DEFAULT_TB_SIZE_MIB}".encode() in argv, argv
    assert not any(b"accel=tcg" in a for a in argv), argv
