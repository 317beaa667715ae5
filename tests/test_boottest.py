"""The boot test's reading of the checker's console lines, its verdict, and the machine it
would boot with its TFTP root (no VM here)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from liveimg import boottest
from liveimg.boottest import BOOT_STEPS, CHECKS_DONE, BootTestOptions, _BootSteps, _machine, judge, parse_checks
from liveimg.errors import HostError
from liveimg.httpserve import HttpServer
from liveimg.progress import Event, Progress
from liveimg.pxe import SQUASHFS_NAME, LiveBoot, PxeOptions
from liveimg.qemu import NetworkBoot
from tests.bootparsers import ipxe_commands, pxelinux_directives
from tests.support import need_file

DEPLOYMENT = {"osname": "debian-atomic", "checksum": "ab" * 32, "serial": 0}

CONSOLE = f"""\
[  OK  ] Reached target multi-user.target.
\x1b[0mLIVEIMG-CHECK root=/dev/mapper/live-rw fstype=ext4
LIVEIMG-CHECK ostree-booted=yes
LIVEIMG-CHECK hostname=localhost
LIVEIMG-CHECK-OSTREE * debian-atomic {"ab" * 32}.0
LIVEIMG-CHECK-DMTABLE live-rw: 0 3145728 snapshot 7:1 7:2 P 8
LIVEIMG-CHECK-BLOCK loop0 7:0 400000000 loop
LIVEIMG-CHECK seed=ok seed-hostname=seeded
LIVEIMG-CHECK cloud-init=no
LIVEIMG-CHECK-END
"""


def _read(tmp_path: Path, text: str) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    log = tmp_path / "console.log"
    log.write_text(text)
    return parse_checks(log)


def test_a_good_ostree_boot_has_no_problems(tmp_path: Path) -> None:
    fields, status, table, blocks = _read(tmp_path, CONSOLE)
    assert fields["root"] == "/dev/mapper/live-rw" and fields["seed-hostname"] == "seeded"
    assert blocks == ["loop0 7:0 400000000 loop"]
    assert judge({"deployment": DEPLOYMENT}, fields, status, table) == []


def test_the_wrong_deployment_and_a_plain_root_are_problems(tmp_path: Path) -> None:
    text = CONSOLE.replace("live-rw fstype", "vda3 fstype").replace(f"{'ab' * 32}.0", f"{'cd' * 32}.0")
    fields, status, table, _ = _read(tmp_path, text.replace("live-rw:", "other:"))
    problems = judge({"deployment": DEPLOYMENT}, fields, status, table)
    assert any("not the live overlay" in p for p in problems)
    assert any("booted deployment is" in p for p in problems)
    assert any("no live-rw" in p for p in problems)


def test_an_unreachable_seed_is_a_problem(tmp_path: Path) -> None:
    fields, status, table, _ = _read(tmp_path, CONSOLE.replace("seed=ok seed-hostname=seeded", "seed=failed"))
    assert judge({"deployment": DEPLOYMENT}, fields, status, table) == [
        "the live system could not fetch the cloud-init seed (failed)"
    ]


def test_with_cloud_init_the_hostname_must_be_the_seeds(tmp_path: Path) -> None:
    fields, status, table, _ = _read(tmp_path, CONSOLE.replace("cloud-init=no", "cloud-init=yes"))
    assert judge({"deployment": DEPLOYMENT}, fields, status, table) == [
        "hostname is 'localhost', not the seed's 'seeded'"
    ]
    fields, status, table, _ = _read(tmp_path, CONSOLE.replace("cloud-init=no", "cloud-init=yes").replace(
        "hostname=localhost", "hostname=seeded"))  # fmt: skip
    assert judge({"deployment": DEPLOYMENT}, fields, status, table) == []


def test_without_a_seed_nothing_is_said_about_one(tmp_path: Path) -> None:
    text = CONSOLE.replace("LIVEIMG-CHECK seed=ok seed-hostname=seeded\nLIVEIMG-CHECK cloud-init=no\n", "")
    fields, status, table, _ = _read(tmp_path, text)
    assert "seed" not in fields
    assert judge({"deployment": None}, fields, status, table) == []


def test_an_erofs_live_image_must_show_as_a_block_device(tmp_path: Path) -> None:
    fields, status, table, _ = _read(tmp_path, CONSOLE)
    manifest = {"deployment": DEPLOYMENT, "rootfs": {"type": "erofs"}}
    squashfs_loop = ["loop0 7:0 300000000 loop squashfs", "loop1 7:1 4000000000 loop ext4"]
    erofs_loop = ["loop0 7:0 300000000 loop erofs", "loop1 7:1 4000000000 loop ext4"]
    assert judge(manifest, fields, status, table, erofs_loop) == []
    assert judge(manifest, fields, status, table, squashfs_loop) == [
        "no block device of the live system holds the erofs live image"
    ]
    assert judge({**manifest, "rootfs": {"type": "squashfs-ext4"}}, fields, status, table, squashfs_loop) == []


#: Lines of a real pxelinux boot of the atomic sample's live build (console.log, ANSI removed),
#: with the ones that could be mistaken for a later step.
BOOT_CONSOLE = """\
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1)
[    0.000000] Command line: BOOT_IMAGE=vmlinuz-6.1.0-50-amd64 root=live:http://10.0.2.100:8080/live-rootfs.squashfs.img
[   12.706293] Run /init as init process
[   13.197167] systemd[1]: Running in initrd.
[   15.498165] systemd[1]: Expecting device dev-mapper-live\\x2drw.device - /dev/mapper/live-rw...
[  OK  ] Found device dev-mapper-li….device - /dev/mapper/live-rw.
[  OK  ] Mounted sysroot.mount - /sysroot.
[  OK  ] Reached target initrd-root…get - Initrd Root File System.
[  OK  ] Reached target initrd-switch-root.target - Switch Root.
[   51.541575] systemd[1]: Stopped target initrd-switch-root.target - Switch Root.
[  OK  ] Reached target multi-user.target - Multi-User System.
LIVEIMG-CHECK root=/dev/mapper/live-rw fstype=ext4
LIVEIMG-CHECK-END
"""


def test_boot_steps_follow_the_console() -> None:
    events: list[Event] = []
    with Progress(events.append, rate=1e9).stage("boot", total=len(BOOT_STEPS), unit="steps") as stage:
        steps = _BootSteps(stage)
        seen = []
        for line in BOOT_CONSOLE.splitlines():
            steps(line)
            seen.append(steps.reached)
    assert seen == [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 6, 6]
    messages = [e.message.split(" after ")[0] for e in events if e.event == "message"]
    assert messages == [name for name, _ in BOOT_STEPS]
    assert events[-1].event == "end" and events[-1].done == len(BOOT_STEPS)


def test_a_later_step_implies_the_earlier_ones() -> None:
    with Progress().stage("boot", total=len(BOOT_STEPS)) as stage:
        steps = _BootSteps(stage)
        steps("[  OK  ] Reached target multi-user.target - Multi-User System.")
        steps("[    0.000000] Linux version 6.1.0-50-amd64")  # a reboot's kernel does not go back
    assert steps.reached == 5


# --- the network boot's TFTP root: the pxe stage's configs plus Debian's loaders ------------------

KERNEL, INITRAMFS = "vmlinuz-6.1.0-9-amd64", "initramfs-6.1.0-9-amd64.img"
LIVE = LiveBoot(kernel=KERNEL, initramfs=INITRAMFS, kver="6.1.0-9-amd64", title="Debian Atomic")
PXELINUX = "/usr/lib/PXELINUX/pxelinux.0"
LDLINUX = "/usr/lib/syslinux/modules/bios/ldlinux.c32"


def _served(tmp_path: Path) -> Path:
    serve = tmp_path / "srv"
    serve.mkdir()
    for name in (KERNEL, INITRAMFS, SQUASHFS_NAME):
        (serve / name).write_bytes(name.encode())
    return serve


def test_a_pxelinux_boot_gets_a_tftp_root_pxelinux_boots_from(tmp_path: Path) -> None:
    need_file(PXELINUX, "pxelinux")
    need_file(LDLINUX, "syslinux-common")
    serve = _served(tmp_path)
    with HttpServer(serve) as server:
        url = server.guest_url().rstrip("/")
        machine = _machine(BootTestOptions(via="pxelinux"), LIVE, serve, PxeOptions(url=url), server)
        assert machine.forwards == (server.forward(),)
    assert machine.netboot == NetworkBoot(serve, "pxelinux.0")
    assert machine.kernel is None and machine.network
    assert (serve / "pxelinux.0").read_bytes() == Path(PXELINUX).read_bytes()
    assert (serve / "ldlinux.c32").read_bytes() == Path(LDLINUX).read_bytes()
    # pxelinux.0 loads the kernel and initramfs over TFTP: named relative to the TFTP root, and there
    directives = dict(pxelinux_directives((serve / "pxelinux.cfg/default").read_text()))
    assert directives["kernel"] == KERNEL
    append = directives["append"].split()
    assert append[:2] == [f"initrd={INITRAMFS}", f"root=live:{url}/{SQUASHFS_NAME}"]
    assert (serve / KERNEL).is_file() and (serve / INITRAMFS).is_file()


def test_an_ipxe_boot_loads_kernel_and_initramfs_from_the_served_directory(tmp_path: Path) -> None:
    serve = _served(tmp_path)
    with HttpServer(serve) as server:
        url = server.guest_url().rstrip("/")
        machine = _machine(BootTestOptions(via="ipxe"), LIVE, serve, PxeOptions(url=url), server)
        commands = ipxe_commands((serve / "boot.ipxe").read_text())
        assert commands[1][:2] == ["kernel", f"{url}/{KERNEL}"]
        assert commands[2] == ["initrd", f"{url}/{INITRAMFS}"]
        # the guest's URLs are the host's files
        for name in (KERNEL, INITRAMFS):
            with urllib.request.urlopen(server.url(name)) as resp:
                assert resp.read() == name.encode()
    assert machine.netboot == NetworkBoot(serve, "boot.ipxe")
    assert not (serve / "pxelinux.0").exists()


def test_a_missing_pxe_loader_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boottest, "PXELINUX_DIR", tmp_path / "PXELINUX")
    serve = _served(tmp_path)
    with HttpServer(serve) as server, pytest.raises(HostError, match=r"PXELINUX/pxelinux\.0 is missing"):
        _machine(BootTestOptions(), LIVE, serve, PxeOptions(url=server.guest_url()), server)


def test_the_checks_end_also_after_a_login_prompt() -> None:
    # seen in a boot via usb: getty printed its prompt, and the checker's last line followed it
    assert CHECKS_DONE.search("LIVEIMG-CHECK-END")
    assert CHECKS_DONE.search("liveimg-sample login: LIVEIMG-CHECK-END")
    assert not CHECKS_DONE.search("LIVEIMG-CHECK-ENDED")
    assert not CHECKS_DONE.search("echo LIVEIMG-CHECK-END >/dev/console")
    assert not CHECKS_DONE.search("XLIVEIMG-CHECK-END")
