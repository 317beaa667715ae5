"""`liveimg write` on fake devices: what it refuses, each in one line naming the device, and how
it names the one it would write.

The devices are umockdev's (`tests/devices/*.umockdev`, see its README): `umockdev-run` makes
them the only block devices the command sees through udev (pyudev), `/sys` and `/dev`.  The
command runs as users run it (`liveimg.cli.main`), in that testbed, with one thing changed:
`/proc/self/mountinfo` and `/proc/swaps` are read from fakes, so that each test says what is
mounted, whatever this machine has mounted.  Nothing is ever written: every run ends in a
refusal, or in the question a script cannot answer.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import need

REPO = Path(__file__).resolve().parents[1]
DEVICES = Path(__file__).parent / "devices"
MIB = 1 << 20

#: Runs the command line with /proc's mount and swap tables read from the directory argv[1].
RUNNER = """
import sys
from pathlib import Path
import liveimg.write
liveimg.write.PROC = Path(sys.argv[1])
from liveimg.cli import main
sys.exit(main(sys.argv[2:]))
"""

SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
STICK = "/dev/sdb (SanDisk Cruzer Blade, 14.9 GiB, usb, removable)"
SSD = "/dev/sda (ATA Samsung SSD 860 EVO 500GB, 465.8 GiB, ata, not removable)"


def liveimg_write(
    tmp_path: Path,
    device: str,
    *args: str,
    mountinfo: str = "",
    swaps: str = "",
    image_size: int = 100 * MIB,
    stdin: int = subprocess.DEVNULL,
) -> tuple[int, str, Path]:
    """``liveimg write IMAGE DEVICE ARGS`` among the fake devices: (exit status, stderr, IMAGE)."""
    need("umockdev-run")
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    (proc / "self/mountinfo").write_text(mountinfo)
    (proc / "swaps").write_text(SWAPS_HEADER + swaps)
    image = tmp_path / "live.iso"
    with image.open("wb") as f:
        f.truncate(image_size)
    devices = [arg for path in sorted(DEVICES.glob("*.umockdev")) for arg in ("-d", str(path))]
    argv = ["umockdev-run", *devices, "--", sys.executable, "-c", RUNNER, str(proc), "write", str(image), device]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*argv, *args], check=False, stdin=stdin, capture_output=True, text=True, env=env, timeout=120
    )
    assert not done.stdout, done.stdout
    return done.returncode, done.stderr, image


def refused(tmp_path: Path, device: str, *args: str, mountinfo: str = "", swaps: str = "") -> str:
    """The one line of a refusal."""
    code, err, _image = liveimg_write(tmp_path, device, *args, mountinfo=mountinfo, swaps=swaps)
    assert code == 1, err
    assert err.count("\n") == 1, err
    assert err.startswith("liveimg: error: "), err
    return err[len("liveimg: error: ") : -1]


def named_then_asked(
    tmp_path: Path, device: str, description: str, *args: str, mountinfo: str = "", swaps: str = ""
) -> None:
    """Not refused: the device is named on one line, then a script without --yes is stopped."""
    code, err, image = liveimg_write(tmp_path, device, *args, mountinfo=mountinfo, swaps=swaps)
    assert code == 1
    assert err == (
        f"liveimg: writing {image} (100.0 MiB) to {description}\n"
        f"liveimg: error: not writing to {device}: standard input is not a terminal to ask on "
        "(add --yes to write without asking)\n"
    )


def mount(number: str, where: str, source: str, fstype: str = "vfat") -> str:
    """One line of /proc/self/mountinfo."""
    return f"36 25 {number} / {where} rw,nosuid,nodev,relatime shared:1 - {fstype} {source} rw\n"


# --- what is accepted, and how it is named -------------------------------------------------------


def test_a_usb_stick_is_named_in_one_line(tmp_path: Path) -> None:
    named_then_asked(tmp_path, "/dev/sdb", STICK)


def test_what_is_mounted_from_other_disks_does_not_matter(tmp_path: Path) -> None:
    root = mount("8:1", "/", "/dev/sda1", "ext4") + mount("0:22", "/sys", "sysfs", "sysfs")
    named_then_asked(tmp_path, "/dev/sdb", STICK, mountinfo=root, swaps="/dev/sda2 partition 8388604 0 -2\n")


def test_a_usb_hard_disk_counts_as_removable(tmp_path: Path) -> None:
    """The kernel's removable flag is 0 for it, but it is plugged in over USB."""
    named_then_asked(tmp_path, "/dev/sdd", "/dev/sdd (WD Elements 25A2, 931.5 GiB, usb, removable)")


def test_a_fixed_disk_with_yes_this_disk(tmp_path: Path) -> None:
    named_then_asked(tmp_path, "/dev/sda", SSD, "--yes-this-disk")


def test_no_on_the_terminal_writes_nothing(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    try:
        os.write(main, b"no\n")
        code, err, image = liveimg_write(tmp_path, "/dev/sdb", stdin=terminal)
    finally:
        os.close(main)
        os.close(terminal)
    assert code == 1
    asked = "Overwrite /dev/sdb? [y/N] "
    assert err == f"liveimg: writing {image} (100.0 MiB) to {STICK}\n{asked}liveimg: nothing written\n"


# --- what is refused --------------------------------------------------------------------------------


REFUSALS = {
    "partition": (
        ["/dev/sdb1"],
        {},
        "refusing /dev/sdb1 (SanDisk Cruzer Blade, 14.9 GiB, usb, removable): it is a partition of /dev/sdb "
        "(write to the whole disk: liveimg write IMAGE /dev/sdb)",
    ),
    "partition-of-a-fixed-disk": (
        ["/dev/sda2", "--yes-this-disk"],
        {},
        "refusing /dev/sda2 (ATA Samsung SSD 860 EVO 500GB, 457.8 GiB, ata, not removable): it is a partition of "
        "/dev/sda (write to the whole disk: liveimg write IMAGE /dev/sda)",
    ),
    "fixed-sata": (
        ["/dev/sda"],
        {},
        f"refusing {SSD}: it is not a removable disk (if it really is the disk to overwrite, add --yes-this-disk)",
    ),
    "fixed-nvme": (
        ["/dev/nvme0n1"],
        {},
        "refusing /dev/nvme0n1 (Samsung SSD 970 EVO Plus 500GB, 465.8 GiB, nvme, not removable): it is not a "
        "removable disk (if it really is the disk to overwrite, add --yes-this-disk)",
    ),
    "lvm-volume": (
        ["/dev/dm-7"],
        {},
        "refusing /dev/dm-7 (device-mapper vg-home, 457.8 GiB, virtual, not removable): it is not a removable disk "
        "(if it really is the disk to overwrite, add --yes-this-disk)",
    ),
    "too-small": (
        ["/dev/sdc"],
        {},
        "refusing /dev/sdc (Generic Flash Disk, 64.0 MiB, usb, removable): the image is larger than it "
        "(100.0 MiB, 104857600 bytes)",
    ),
    "no-medium": (
        ["/dev/sde"],
        {},
        "refusing /dev/sde (Generic- SD/MMC, 0 B, usb, removable): it has no medium (insert the card or stick)",
    ),
    "read-only": (
        ["/dev/mmcblk0"],
        {},
        "refusing /dev/mmcblk0 (SU16G, 14.8 GiB, mmc, removable): it is read-only "
        "(a stick or SD card may have a write-protect switch)",
    ),
    "optical": (
        ["/dev/sr0"],
        {},
        "refusing /dev/sr0 (HL-DT-ST DVD+-RW GU90N, 1024.0 MiB, ata, removable): it is an optical drive",
    ),
    # What a device calls itself reaches the terminal as one line without control characters.
    "hostile-names": (
        ["/dev/sdf"],
        {},
        "refusing /dev/sdf (]0;pwned Kingston DataTraveler [2Jrm -rf, 64.0 MiB, usb, removable): it is read-only "
        "(a stick or SD card may have a write-protect switch)",
    ),
    "no-such-device": (
        ["/dev/sdx"],
        {},
        "/dev/sdx: no such device (name a whole disk such as /dev/sdb; lsblk lists them)",
    ),
    "partition-mounted": (
        ["/dev/sdb"],
        {"mountinfo": mount("8:17", "/media/stick", "/dev/sdb1")},
        f"refusing {STICK}: /dev/sdb1 is mounted on /media/stick (unmount it first, or pick another device)",
    ),
    "whole-disk-mounted": (
        ["/dev/sdb"],
        {"mountinfo": mount("8:16", "/mnt", "/dev/sdb", "iso9660")},
        f"refusing {STICK}: /dev/sdb is mounted on /mnt (unmount it first, or pick another device)",
    ),
    "mount-point-with-a-space": (
        ["/dev/sdb"],
        {"mountinfo": mount("8:17", "/run/media/me/My\\040Stick", "/dev/sdb1")},
        f"refusing {STICK}: /dev/sdb1 is mounted on /run/media/me/My Stick (unmount it first, or pick another device)",
    ),
    # btrfs gives its mounts an anonymous device number: the source names the device.
    "btrfs-mounted": (
        ["/dev/sdb"],
        {"mountinfo": mount("0:52", "/srv", "/dev/sdb1", "btrfs")},
        f"refusing {STICK}: /dev/sdb1 is mounted on /srv (unmount it first, or pick another device)",
    ),
    "lvm-on-a-partition-mounted": (
        ["/dev/sda", "--yes-this-disk"],
        {"mountinfo": mount("253:7", "/home", "/dev/mapper/vg-home", "ext4")},
        f"refusing {SSD}: /dev/dm-7 (on /dev/sda2) is mounted on /home (unmount it first, or pick another device)",
    ),
    "swap-partition": (
        ["/dev/sda", "--yes-this-disk"],
        {"swaps": "/dev/sda1                               partition\t8388604\t\t0\t\t-2\n"},
        f"refusing {SSD}: /dev/sda1 is active swap (swapoff it first, or pick another device)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_in_one_line_naming_the_device(tmp_path: Path, case: str) -> None:
    args, tables, message = REFUSALS[case]
    assert refused(tmp_path, *args, **tables) == message


def test_not_a_block_device(tmp_path: Path) -> None:
    other = tmp_path / "file"
    other.write_bytes(b"x")
    hint = "name a whole disk such as /dev/sdb; lsblk lists them"
    assert refused(tmp_path, str(other)) == f"{other}: not a block device ({hint})"


AGREED = """
import sys
import liveimg
agreed = liveimg.probe_target("/dev/sdb", 1 << 20)
try:
    liveimg.write_image(sys.argv[1], "/dev/sdd", expect=agreed)
except liveimg.DeviceRefused as exc:
    print(exc)
"""


def test_a_device_other_than_the_one_agreed_to_is_refused(tmp_path: Path) -> None:
    """The library's guard for a caller that asked first: the device it writes is the one it named."""
    need("umockdev-run")
    image = tmp_path / "live.iso"
    image.write_bytes(bytes(MIB))
    devices = [arg for path in sorted(DEVICES.glob("*.umockdev")) for arg in ("-d", str(path))]
    argv = ["umockdev-run", *devices, "--", sys.executable, "-c", AGREED, str(image)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=120)
    assert done.stdout == (
        f"refusing /dev/sdd (WD Elements 25A2, 931.5 GiB, usb, removable): it is not the device agreed to, {STICK}\n"
    )
