"""The boot test's reading of the checker's console lines, its verdict, and the machine it
would boot with its TFTP root (no VM here)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from liveimg import boottest
from liveimg import run as runner
from liveimg.boottest import BOOT_STEPS, CHECKS_DONE, BootTestOptions, _BootSteps, _machine, judge, parse_checks
from liveimg.errors import HostError, InvalidOptions
from liveimg.httpserve import HttpServer
from liveimg.progress import Event, Progress
from liveimg.pxe import SQUASHFS_NAME, EfiBoot, LiveBoot, PxeOptions
from liveimg.qemu import NetworkBoot, Uefi
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


# --- BIOS GRUB network boot -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("efi", "config", "prefix"), [(None, "grub.cfg", "(tftp)"), ("chain", "grub/grub.cfg", "(tftp)/grub")]
)
def test_a_grub_bios_boot_offers_a_bios_grub_whose_prefix_reads_the_written_grub_cfg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, efi: str | None, config: str, prefix: str
) -> None:
    need_file(str(boottest.GRUB_BIOS_DIR / "linux.mod"), "grub-pc-bin")
    calls: list[list[str]] = []

    def spy(argv: list[str], **kwargs: Any) -> runner.Completed:
        calls.append([os.fspath(a) for a in argv])
        return real_run(argv, **kwargs)

    real_run = runner.run
    monkeypatch.setattr(runner, "run", spy)
    serve = _served(tmp_path)
    live = LiveBoot(kernel=KERNEL, initramfs=INITRAMFS, kver="6.1.0-9-amd64", title="Debian Atomic",
                    efi=EFI if efi else None)  # fmt: skip
    with HttpServer(serve) as server:
        machine = _machine(BootTestOptions(via="grub-bios"), live, serve, PxeOptions(url=server.guest_url()), server)
    assert machine.netboot == NetworkBoot(serve, boottest.GRUB_BIOS_IMAGE)
    assert machine.uefi is None and machine.network  # SeaBIOS, the NIC's PXE ROM
    # a PXE image (pxeboot.img first, then GRUB's core) in the TFTP root, made in the test's work dir
    image = (serve / boottest.GRUB_BIOS_IMAGE).read_bytes()
    assert image.startswith((boottest.GRUB_BIOS_DIR / "pxeboot.img").read_bytes())
    [argv] = calls
    assert argv[argv.index("-O") + 1] == "i386-pc-pxe" and argv[argv.index("-p") + 1] == prefix
    assert {"pxe", "tftp", "normal", "linux", "serial"} <= set(argv)
    assert "terminal_output serial console" in Path(argv[argv.index("-c") + 1]).read_text()
    assert Path(argv[argv.index("-c") + 1]).parent == tmp_path
    # GRUB reads $prefix/grub.cfg, the one write_pxe wrote: the kernel and initramfs from the TFTP root
    assert f"linux /{KERNEL} " in (serve / config).read_text()
    assert f"initrd /{INITRAMFS}" in (serve / config).read_text()


def test_grubs_prefix_is_the_directory_of_its_grub_cfg() -> None:
    assert boottest.grub_bios_prefix("grub.cfg") == "(tftp)"
    assert boottest.grub_bios_prefix("grub/grub.cfg") == "(tftp)/grub"
    assert boottest.grub_bios_prefix("boot/grub2/grub.cfg") == "(tftp)/boot/grub2"


def test_a_missing_bios_grub_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boottest, "GRUB_BIOS_DIR", tmp_path / "i386-pc")
    serve = _served(tmp_path)
    with HttpServer(serve) as server, pytest.raises(HostError, match="i386-pc has no BIOS GRUB") as caught:
        _machine(BootTestOptions(via="grub-bios"), LIVE, serve, PxeOptions(url=server.guest_url()), server)
    assert "grub-pc-bin" in str(caught.value)


def test_the_checks_end_also_after_a_login_prompt() -> None:
    # seen in a boot via usb: getty printed its prompt, and the checker's last line followed it
    assert CHECKS_DONE.search("LIVEIMG-CHECK-END")
    assert CHECKS_DONE.search("liveimg-sample login: LIVEIMG-CHECK-END")
    assert not CHECKS_DONE.search("LIVEIMG-CHECK-ENDED")
    assert not CHECKS_DONE.search("echo LIVEIMG-CHECK-END >/dev/console")
    assert not CHECKS_DONE.search("XLIVEIMG-CHECK-END")


# --- UEFI network boot, Secure Boot ---------------------------------------------------------------

EFI = EfiBoot(grub="grubx64.efi", shim="shimx64.efi", configs=("grub/grub.cfg", "grub.cfg"))


def test_a_uefi_pxe_boot_offers_shim_from_a_tftp_root_with_grubs_configs(tmp_path: Path) -> None:
    need_file(str(boottest.OVMF_CODE), "ovmf")
    serve = _served(tmp_path)
    live = LiveBoot(kernel=KERNEL, initramfs=INITRAMFS, kver="6.1.0-9-amd64", title="Debian Atomic", efi=EFI)
    with HttpServer(serve) as server:
        machine = _machine(BootTestOptions(via="uefi-pxe"), live, serve, PxeOptions(url=server.guest_url()), server)
    assert machine.netboot == NetworkBoot(serve, "shimx64.efi")
    assert machine.uefi == Uefi(boottest.OVMF_CODE, tmp_path / boottest.OVMF_VARS.name)
    assert (tmp_path / boottest.OVMF_VARS.name).read_bytes() == boottest.OVMF_VARS.read_bytes()
    # GRUB reads its grub.cfg where its prefix says: the kernel and initramfs from the TFTP root
    for config in EFI.configs:
        assert f"linux /{KERNEL} " in (serve / config).read_text()


def test_a_secure_uefi_pxe_boot_has_ovmfs_secure_build_with_microsofts_keys(tmp_path: Path) -> None:
    need_file(str(boottest.OVMF_SECURE_CODE), "ovmf")
    serve = _served(tmp_path)
    live = LiveBoot(kernel=KERNEL, initramfs=INITRAMFS, kver="6.1.0-9-amd64", title="Debian Atomic", efi=EFI)
    options = BootTestOptions(via="uefi-pxe", secure_boot=True)
    with HttpServer(serve) as server:
        machine = _machine(options, live, serve, PxeOptions(url=server.guest_url()), server)
    variables = tmp_path / boottest.OVMF_SECURE_VARS.name
    assert machine.uefi == Uefi(boottest.OVMF_SECURE_CODE, variables, secure=True)
    assert variables.read_bytes() == boottest.OVMF_SECURE_VARS.read_bytes()


@pytest.mark.parametrize(
    "via", ["pxelinux", "ipxe", "kernel", "disk", "iso-bios", "usb", "iso-uefi", "usb-uefi", "grub-bios"]
)
def test_secure_boot_needs_the_uefi_network_boot(via: boottest.Via) -> None:
    with pytest.raises(InvalidOptions, match=f"--secure-boot does not apply to --via {via}"):
        BootTestOptions(via=via, secure_boot=True)


def test_a_build_without_the_uefi_chain_cannot_boot_via_uefi_pxe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in (KERNEL, INITRAMFS, SQUASHFS_NAME):
        (out / name).write_bytes(b"x")
    boot = {"kernel": KERNEL, "initramfs": INITRAMFS, "kver": "6.1.0-9-amd64", "title": "Debian Atomic"}
    files = {"kernel": {"file": KERNEL}, "initramfs": {"file": INITRAMFS}, "rootfs": {"file": SQUASHFS_NAME}}
    (out / "manifest.json").write_text(json.dumps({"boot": boot, **files}))
    with pytest.raises(InvalidOptions, match="has no UEFI network boot chain") as raised:
        boottest.boot_test(out, BootTestOptions(via="uefi-pxe"))
    assert raised.value.hint == "rebuild it with --efi"
    assert not (tmp_path / "out.boot-test").exists()


UEFI_CONSOLE = CONSOLE.replace(
    "LIVEIMG-CHECK ostree-booted=yes\n",
    "LIVEIMG-CHECK firmware=uefi secure-boot=enabled\nLIVEIMG-CHECK mokutil-sb=enabled\n"
    "LIVEIMG-CHECK ostree-booted=yes\n",
)


def test_the_firmware_and_secure_boot_state_are_read(tmp_path: Path) -> None:
    fields, status, table, _ = _read(tmp_path, UEFI_CONSOLE)
    assert (fields["firmware"], fields["secure-boot"], fields["mokutil-sb"]) == ("uefi", "enabled", "enabled")
    manifest = {"deployment": DEPLOYMENT}
    assert judge(manifest, fields, status, table, uefi=True, secure_boot=True) == []


def test_a_uefi_way_must_boot_through_uefi(tmp_path: Path) -> None:
    fields, status, table, _ = _read(tmp_path, CONSOLE.replace("ostree-booted=yes", "firmware=bios ostree-booted=yes"))
    manifest = {"deployment": DEPLOYMENT}
    assert judge(manifest, fields, status, table) == []  # a BIOS way says nothing of it
    assert judge(manifest, fields, status, table, uefi=True) == [
        "the firmware is bios, not UEFI (no /sys/firmware/efi)"
    ]
    fields, status, table, _ = _read(tmp_path, CONSOLE)  # an image too old to say
    assert judge(manifest, fields, status, table, uefi=True) == ["the firmware is ?, not UEFI (no /sys/firmware/efi)"]


def test_a_bios_way_must_not_boot_through_uefi(tmp_path: Path) -> None:
    console = CONSOLE.replace("ostree-booted=yes", "firmware=uefi secure-boot=disabled ostree-booted=yes")
    fields, status, table, _ = _read(tmp_path, console)
    manifest = {"deployment": DEPLOYMENT}
    assert judge(manifest, fields, status, table, uefi=True) == []
    assert judge(manifest, fields, status, table) == ["the firmware is uefi, not BIOS (/sys/firmware/efi exists)"]


def test_a_secure_boot_run_must_have_secure_boot_on(tmp_path: Path) -> None:
    manifest = {"deployment": DEPLOYMENT}
    off = UEFI_CONSOLE.replace("secure-boot=enabled", "secure-boot=disabled").replace("sb=enabled", "sb=disabled")
    fields, status, table, _ = _read(tmp_path, off)
    assert judge(manifest, fields, status, table, uefi=True) == []  # off is fine when not asked for
    assert judge(manifest, fields, status, table, uefi=True, secure_boot=True) == [
        "Secure Boot is disabled, not enabled (the SecureBoot variable)",
        "mokutil --sb-state says disabled, not enabled",
    ]
    fields, status, table, _ = _read(tmp_path, UEFI_CONSOLE.replace("mokutil-sb=enabled", "mokutil-sb=disabled"))
    assert judge(manifest, fields, status, table, uefi=True, secure_boot=True) == [
        "mokutil --sb-state says disabled, not enabled"
    ]


def test_the_checker_reads_the_secure_boot_variables_last_byte(tmp_path: Path) -> None:
    # The checker's own shell lines, run here against SecureBoot variables as efivarfs shows them.
    script = boottest.CHECK_SCRIPT
    start = script.index("    sb=/sys/firmware")
    block = script[start : script.index('    say "firmware=uefi', start)]
    for value, state in ((b"\x01", "enabled"), (b"\x00", "disabled"), (b"", "unknown")):
        variable = tmp_path / "SecureBoot"
        variable.write_bytes(b"\x06\x00\x00\x00" + value)
        shell = block.replace("sb=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
                              f"sb={variable}")  # fmt: skip
        out = subprocess.run(["sh", "-c", shell + 'echo "$state"'], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == state


# --- an embedded live file (--embed-rootfs): no HTTP server ----------------------------------------

EMBEDDED = dataclasses.replace(LIVE, embedded="live-rootfs.cpio")


def _served_embedded(tmp_path: Path) -> Path:
    serve = _served(tmp_path)
    (serve / INITRAMFS).write_bytes(b"initramfs")  # 9 bytes: the next initrd starts at 12
    (serve / "live-rootfs.cpio").write_bytes(b"070701 the live file")
    return serve


def test_an_embedded_pxelinux_boot_has_no_server_and_nothing_forwarded(tmp_path: Path) -> None:
    need_file(PXELINUX, "pxelinux")
    need_file(LDLINUX, "syslinux-common")
    serve = _served_embedded(tmp_path)
    machine = _machine(BootTestOptions(via="pxelinux"), EMBEDDED, serve, PxeOptions(), None)
    assert machine.forwards == () and machine.netboot == NetworkBoot(serve, "pxelinux.0")
    append = dict(pxelinux_directives((serve / "pxelinux.cfg/default").read_text()))["append"].split()
    assert append[:2] == [f"initrd={INITRAMFS},live-rootfs.cpio", f"root=live:/{SQUASHFS_NAME}"]
    assert not any("://" in arg for arg in append)


def test_an_embedded_ipxe_boot_loads_both_initrds_from_where_its_script_came(tmp_path: Path) -> None:
    serve = _served_embedded(tmp_path)
    machine = _machine(BootTestOptions(via="ipxe"), EMBEDDED, serve, PxeOptions(), None)
    assert machine.forwards == () and machine.netboot == NetworkBoot(serve, "boot.ipxe")
    commands = ipxe_commands((serve / "boot.ipxe").read_text())
    assert commands[2:4] == [["initrd", INITRAMFS], ["initrd", "live-rootfs.cpio"]]


def test_an_embedded_kernel_boot_gives_qemu_both_initrds_in_one_file(tmp_path: Path) -> None:
    serve = _served_embedded(tmp_path)
    machine = _machine(BootTestOptions(via="kernel"), EMBEDDED, serve, PxeOptions(), None)
    assert machine.forwards == () and machine.kernel is not None and machine.kernel.initrd is not None
    assert machine.kernel.initrd.read_bytes() == b"initramfs" + b"\0" * 3 + b"070701 the live file"
    assert machine.kernel.append.startswith(f"root=live:/{SQUASHFS_NAME} rd.live.image")


# -- cloud-init, iSCSI and the container storage in the checker's report ---------------------

ISCSI_CONSOLE = CONSOLE.replace(
    "LIVEIMG-CHECK cloud-init=no\n",
    """\
LIVEIMG-CHECK cloud-init=yes
LIVEIMG-CHECK cloud-init-status=done cloud-init-errors=0 cloud-init-seconds=41.5 cloud-init-done-at=150.2 \
cloud-init-stages=init-local:5.0,init:12.5,modules-config:4.0,modules-final:20.0
LIVEIMG-CHECK-ISCSI tcp: [1] 10.0.2.100:3260,1 iqn.2026-12.invalid.liveimg:e2e (non-flash)
LIVEIMG-CHECK-LUN ip-10.0.2.100:3260-iscsi-iqn.2026-12.invalid.liveimg:e2e-lun-1 /dev/sda
LIVEIMG-CHECK container-engine=podman container-storage=/var/lib/containers/storage \
container-device=/dev/sda container-fstype=ext4
LIVEIMG-CHECK-IMAGES localhost/liveimg-hello:1 sha256:0123
""",
).replace("hostname=localhost", "hostname=seeded")


def test_the_iscsi_lun_and_the_container_storage_are_read(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(ISCSI_CONSOLE)
    fields, groups = boottest.read_checks(log)
    assert groups["ISCSI"] == ["tcp: [1] 10.0.2.100:3260,1 iqn.2026-12.invalid.liveimg:e2e (non-flash)"]
    assert groups["LUN"] == ["ip-10.0.2.100:3260-iscsi-iqn.2026-12.invalid.liveimg:e2e-lun-1 /dev/sda"]
    assert groups["IMAGES"] == ["localhost/liveimg-hello:1 sha256:0123"]
    assert fields["container-device"] == "/dev/sda" and fields["container-storage"] == "/var/lib/containers/storage"
    assert fields["cloud-init-status"] == "done" and fields["cloud-init-seconds"] == "41.5"
    assert fields["cloud-init-stages"].split(",")[-1] == "modules-final:20.0"
    _, status, table, _ = parse_checks(log)
    assert judge({"deployment": DEPLOYMENT}, fields, status, table) == []


def test_a_cloud_init_that_failed_is_a_problem(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(ISCSI_CONSOLE.replace("status=done cloud-init-errors=0", "status=error cloud-init-errors=2"))
    fields, groups = boottest.read_checks(log)
    assert judge({"deployment": DEPLOYMENT}, fields, groups["OSTREE"], groups["DMTABLE"]) == [
        "cloud-init's status is error (2 errors in /run/cloud-init/status.json)"
    ]


def _cloud_init_report(tmp_path: Path, status: dict[str, Any], *, result: bool = True) -> str:
    """The checker's cloud-init report, run on the host against files standing in for the guest's."""
    script = boottest.CHECK_SCRIPT
    code = script[script.index("CLOUD_INIT_REPORT='") + len("CLOUD_INIT_REPORT='") :]
    code = code[: code.index("\n'\n")]
    assert "'" not in code  # it is a single-quoted shell word
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "status.json").write_text(json.dumps({"v1": status}))
    (run / "result.json").unlink(missing_ok=True)
    if result:
        (run / "result.json").write_text("{}")
    (tmp_path / "stat").write_text("cpu  1 2 3\nbtime 1000\n")
    code = code.replace("/run/cloud-init/", f"{run}/").replace("/proc/stat", str(tmp_path / "stat"))
    return subprocess.run(["python3", "-c", code], capture_output=True, text=True, check=True).stdout


def test_the_cloud_init_report_times_the_stages(tmp_path: Path) -> None:
    stages = {
        "init-local": {"start": 1010.0, "finished": 1012.5, "errors": []},
        "init": {"start": 1020.0, "finished": 1030.0, "errors": []},
        "modules-config": {"start": 1040.0, "finished": 1044.0, "errors": []},
        "modules-final": {"start": 1050.0, "finished": 1070.25, "errors": []},
        "datasource": "DataSourceNoCloudNet", "stage": None,
    }  # fmt: skip
    out = _cloud_init_report(tmp_path, stages)
    assert out == (
        "LIVEIMG-CHECK cloud-init-status=done cloud-init-errors=0 cloud-init-seconds=36.8 cloud-init-done-at=70.2 "
        "cloud-init-stages=init-local:2.5,init:10.0,modules-config:4.0,modules-final:20.2\n"
    )
    stages["modules-final"] = {"start": 1050.0, "finished": 1060.0, "errors": ["runcmd failed:\n exit 1"]}
    out = _cloud_init_report(tmp_path, stages).splitlines()
    assert out[0] == "LIVEIMG-CHECK-CLOUDINIT error modules-final runcmd failed: exit 1"
    assert "cloud-init-status=error cloud-init-errors=1 " in out[1]
    stages["modules-final"] = {"start": 1050.0, "finished": None, "errors": []}
    assert "cloud-init-status=running " in _cloud_init_report(tmp_path, stages, result=False)


def test_guest_forwards_reach_qemu_beside_the_server(tmp_path: Path) -> None:
    from liveimg.qemu import GuestForward

    serve = _served(tmp_path)
    iscsi = GuestForward(43260, 3260)
    with HttpServer(serve) as server:
        url = server.guest_url().rstrip("/")
        machine = _machine(BootTestOptions(via="kernel", forwards=(iscsi,)), LIVE, serve, PxeOptions(url=url), server)
        assert machine.forwards == (server.forward(), iscsi)
    for ports in ((3260, 3260), (8080,), (10809,)):
        with pytest.raises(InvalidOptions, match="repeat, or take the artifacts' servers'"):
            BootTestOptions(forwards=tuple(GuestForward(40000 + i, p) for i, p in enumerate(ports)))


def test_the_checker_reports_cloud_init_iscsi_and_podman(tmp_path: Path) -> None:
    """CHECK_SCRIPT run on the host, its guest paths moved into ``tmp_path`` and the guest's tools
    stubbed (cloud-init, curl, iscsiadm, podman, findmnt): what it prints reads back as the
    guest's state, after it waited for cloud-init's result."""
    run, by_path, bin_dir = tmp_path / "run", tmp_path / "by-path", tmp_path / "bin"
    for d in (run, by_path, bin_dir):
        d.mkdir()
    (run / "enabled").write_text("")
    stages = {n: {"start": 1.0e9, "finished": 1.0e9 + 2, "errors": []}
              for n in ("init-local", "init", "modules-config", "modules-final")}  # fmt: skip
    (run / "status.json").write_text(json.dumps({"v1": stages}))
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 ds=nocloud-net;s=http://10.0.2.100:8080/cloud-init/ ip=dhcp\n")
    disk = tmp_path / "sda"
    disk.write_text("")
    (by_path / "ip-10.0.2.100:3260-iscsi-iqn.2026-12.invalid.liveimg:t-lun-1").symlink_to(disk)
    (by_path / "ip-10.0.2.100:3260-iscsi-iqn.2026-12.invalid.liveimg:t-lun-1-part1").symlink_to(disk)
    stubs = {
        "cloud-init": "exit 0",
        "curl": 'printf "instance-id: x\\nlocal-hostname: node1\\n"',
        "iscsiadm": 'echo "tcp: [1] 10.0.2.100:3260,1 iqn.2026-12.invalid.liveimg:t (non-flash)"',
        "podman": 'case "$1" in info) echo /var/lib/containers/storage ;; '
                  'images) echo "localhost/hello:1 sha256:ab" ;; esac',
        "findmnt": 'case "$*" in *FSTYPE*) echo ext4 ;; *) echo /dev/sda ;; esac',
    }  # fmt: skip
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = boottest.CHECK_SCRIPT.replace("exec >/dev/console 2>&1\n", "")
    for old, new in (("/run/cloud-init/", f"{run}/"), ("/proc/cmdline", str(cmdline)),
                     ("/dev/disk/by-path/", f"{by_path}/")):  # fmt: skip
        assert old in script
        script = script.replace(old, new)

    def finish() -> None:
        time.sleep(3)  # cloud-init's last stage ends while the checker waits
        (run / "result.json").write_text("{}")

    finisher = threading.Thread(target=finish)
    finisher.start()
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False)
    finisher.join()
    assert done.returncode == 0, done.stderr
    log = tmp_path / "console.log"
    log.write_text(done.stdout)
    fields, groups = boottest.read_checks(log)
    assert fields["seed"] == "ok" and fields["seed-hostname"] == "node1" and fields["cloud-init"] == "yes"
    assert fields["cloud-init-status"] == "done" and fields["cloud-init-seconds"] == "8.0"
    assert groups["ISCSI"] == ["tcp: [1] 10.0.2.100:3260,1 iqn.2026-12.invalid.liveimg:t (non-flash)"]
    assert groups["LUN"] == [f"ip-10.0.2.100:3260-iscsi-iqn.2026-12.invalid.liveimg:t-lun-1 {disk}"]
    assert fields["container-storage"] == "/var/lib/containers/storage"
    assert fields["container-device"] == "/dev/sda" and fields["container-fstype"] == "ext4"
    assert groups["IMAGES"] == ["localhost/hello:1 sha256:ab"]
    assert done.stdout.rstrip().endswith(boottest.CHECK_END)
