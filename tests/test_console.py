"""Unit tests of liveimg.console: the console watcher, on real and made-up console logs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from liveimg import console
from liveimg.console import Outcome, watch_console

# A trimmed but real console log of the atomic sample booting under QEMU (kernel, dracut, systemd).
BOOT_LOG = (
    "SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
    "Booting from ROM..\r\n"
    "[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\r\n"
    "[    0.000000] Command line: root=UUID=0d3c ostree=/ostree/boot.1/debian-atomic/5f1e/0 rw console=ttyS0,115200\r\n"
    "[    4.882121] systemd[1]: Detected virtualization qemu.\r\n"
    "[  \x1b[0;32mOK\x1b[0m  ] Reached target \x1b[0;1;39mInitrd Root File System\x1b[0m.\r\n"
    "[   21.034410] ostree-prepare-root[212]: preparing sysroot at /sysroot\r\n"
    "[  \x1b[0;32mOK\x1b[0m  ] Reached target \x1b[0;1;39mMulti-User System\x1b[0m.\r\n"
    "\r\n"
    "Debian GNU/Linux 12 liveimg-sample ttyS0\r\n"
    "\r\n"
    "liveimg-sample login: \r\n"
    "LIVEIMG-SAMPLE-READY ostree-booted=yes root=/dev/vda3[/ostree/deploy/debian-atomic/deploy/ab12.0] "
    "fstype=ext4 hostname=liveimg-sample\r\n"
)


def write(tmp_path: Path, text: str) -> Path:
    log = tmp_path / "console.log"
    log.write_bytes(text.encode())
    return log


def test_marker_line_is_success_with_fields(tmp_path: Path) -> None:
    result = watch_console(write(tmp_path, BOOT_LOG), timeout=5)
    assert result.ok, result.explain()
    assert result.reason == "marker"
    assert result.marker == {
        "ostree-booted": "yes",
        "root": "/dev/vda3[/ostree/deploy/debian-atomic/deploy/ab12.0]",
        "fstype": "ext4",
        "hostname": "liveimg-sample",
    }
    assert result.last_lines[-1].startswith("LIVEIMG-SAMPLE-READY")
    assert "\x1b" not in "".join(result.last_lines)
    assert result.seconds < 5


def test_parse_marker() -> None:
    assert console.parse_marker("[  OK  ] LIVEIMG-SAMPLE-READY a=1 b= c=x=y junk") == {"a": "1", "b": "", "c": "x=y"}
    assert console.parse_marker("no marker here a=1") == {}


FAILURES = {
    "kernel-panic": "[    2.101] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
    "emergency-mode": "Entering emergency mode. Exit the shell to continue.",
    "dracut-could-not-boot": "[  190.5] dracut-initqueue[312]: Warning: Could not boot.",
    "dracut-fatal": "[    3.2] dracut: FATAL: Don't know how to handle 'root=live:nfs:x'",
    "no-root-filesystem": "[ 40.0] dracut-pre-mount[401]: Failed to find a root filesystem in /run/initramfs/squashfs.",
    "ostree-root-missing": "[   9.1] ostree-prepare-root[400]: ostree-prepare-root: "
    "Couldn't find specified OSTree root '/sysroot//ostree/boot.1/x/y/0': No such file or directory",
    "download-failed": "[   50.1] dracut-initqueue[350]: curl: (7) Failed to connect to 10.0.2.100 port 8080",
    # Debian's GRUB, given a kernel that shim cannot verify (Secure Boot on)
    "secure-boot": "error: bad shim signature.",
    # GRUB with no configuration read (once: an ISO whose backup GPT overwrote its data)
    "grub-prompt": "   Minimal BASH-like line editing is supported. For the first word, TAB   ",
}


@pytest.mark.parametrize("reason", sorted(FAILURES))
def test_known_failures_stop_the_watch(tmp_path: Path, reason: str) -> None:
    head = BOOT_LOG.split("[  \x1b[0;32mOK", maxsplit=1)[0]
    log = write(tmp_path, head + FAILURES[reason] + "\r\nmore noise after it\r\n")
    started = time.monotonic()
    result = watch_console(log, timeout=30)
    assert time.monotonic() - started < 5  # fails fast, not at the timeout
    assert result.outcome is Outcome.FAILURE
    assert result.reason == reason
    assert result.line == console.clean_line(FAILURES[reason])


def test_livenet_download_warning_is_a_failure(tmp_path: Path) -> None:
    log = write(tmp_path, "dracut-initqueue[350]: Warning: failed to download live image: error 22\n")
    assert watch_console(log, timeout=5).reason == "download-failed"


def test_timeout_reports_where_the_boot_stopped(tmp_path: Path) -> None:
    log = write(tmp_path, "[    1.0] line one\n\n[    2.0] dracut-initqueue[1]: still waiting\n")
    result = watch_console(log, timeout=0.6, poll=0.05)
    assert result.outcome is Outcome.TIMEOUT
    assert not result.ok
    assert result.seconds >= 0.6
    assert result.last_lines == ("[    1.0] line one", "[    2.0] dracut-initqueue[1]: still waiting")
    assert "still waiting" in result.explain()


def test_missing_log_waits_for_it(tmp_path: Path) -> None:
    result = watch_console(tmp_path / "not-yet.log", timeout=0.3, poll=0.05)
    assert result.outcome is Outcome.TIMEOUT
    assert result.last_lines == ()


def test_follows_a_growing_log(tmp_path: Path) -> None:
    log = write(tmp_path, "[    0.1] booting\n")

    def later() -> None:
        time.sleep(0.5)
        with open(log, "ab") as f:
            f.write(b"LIVEIMG-SAMPLE-READY ostree-bo")  # a line written in two pieces
            f.flush()
            time.sleep(0.3)
            f.write(b"oted=no root=/dev/vda2 fstype=ext4 hostname=h\r\n")

    writer = threading.Thread(target=later)
    writer.start()
    result = watch_console(log, timeout=10, poll=0.05)
    writer.join()
    assert result.ok, result.explain()
    assert result.seconds >= 0.7
    assert result.marker["ostree-booted"] == "no"
    assert result.marker["root"] == "/dev/vda2"


def test_login_prompt_counts_after_the_grace_period(tmp_path: Path) -> None:
    # No marker ever comes: the unterminated login prompt is success, once the grace period is over.
    log = write(tmp_path, "Debian GNU/Linux 12 host ttyS0\r\n\r\nhost login: ")
    result = watch_console(log, timeout=10, grace=0.4, poll=0.05)
    assert result.ok
    assert result.reason == "login-prompt"
    assert result.line == "host login:"
    assert result.marker == {}


def test_marker_after_login_prompt_wins_within_grace(tmp_path: Path) -> None:
    log = write(tmp_path, "host login: \r\n")

    def later() -> None:
        time.sleep(0.3)
        with open(log, "ab") as f:
            f.write(b"LIVEIMG-SAMPLE-READY ostree-booted=yes root=r fstype=xfs hostname=host\n")

    writer = threading.Thread(target=later)
    writer.start()
    result = watch_console(log, timeout=10, grace=5, poll=0.05)
    writer.join()
    assert result.reason == "marker"
    assert result.marker["fstype"] == "xfs"


def test_custom_success_pattern(tmp_path: Path) -> None:
    log = write(tmp_path, BOOT_LOG)
    result = watch_console(log, timeout=5, success=(console.MULTI_USER_PATTERN,))
    assert result.reason == "multi-user"
    assert result.line == "[  OK  ] Reached target Multi-User System."


def test_qemu_exit_ends_the_watch(tmp_path: Path) -> None:
    log = write(tmp_path, "[    1.0] something\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    result = watch_console(log, timeout=30, process=proc)
    assert result.outcome is Outcome.EXITED
    assert result.exit_status == 3
    assert result.last_lines == ("[    1.0] something",)


# The real serial console of OVMF (Secure Boot on) refusing an unsigned shim over PXE, trimmed.
FIRMWARE_REFUSES_SHIM = (
    b"  NBP file downloaded successfully.\r\n"
    b'BdsDxe: loading Boot0001 "UEFI PXEv4 (MAC:525400123456)" from PciRoot(0x0)/Pci(0x2,0x0)/MAC(525400123456,0x1)'
    b"/IPv4(0.0.0.0,0x0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0)\r\n"
    b'BdsDxe: failed to load Boot0001 "UEFI PXEv4 (MAC:525400123456)" from PciRoot(0x0)/Pci(0x2,0x0)/MAC(525400123456,'
    b"0x1)/IPv4(0.0.0.0,0x0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0): Access Denied\r\n"
    b">>Start PXE over IPv6.\r\n"
)
# The real serial console of shim refusing an unsigned GRUB: a dialog box drawn by cursor moves,
# no newline after the message, and it waits for a key (trimmed to its first rows).
SHIM_REFUSES_GRUB = (
    b"Fetching Netboot Image grubx64.efi\r\n\x1b[0m\x1b[37m\x1b[44m\x1b[01;01H\xd9\x1b[01;01H\xda"
    + b"\xc4" * 78
    + b"\xbf\x1b[02;01H\xb3"
    + b"ERROR".center(78)
    + b"\xb3\x1b[03;01H\xb3"
    + b" " * 78
    + b"\xb3\x1b[04;01H\xb3"
    + b"Verification failed: (0x1A) Security Violation".center(78)
    + b"\xb3\x1b[05;01H\xb3"
    + b" " * 48
)


@pytest.mark.parametrize(
    ("log", "message"),
    [
        (FIRMWARE_REFUSES_SHIM, "Access Denied"),
        (SHIM_REFUSES_GRUB, "Verification failed: (0x1A) Security Violation"),
    ],
)
def test_secure_boot_refusals_stop_the_watch(tmp_path: Path, log: bytes, message: str) -> None:
    path = tmp_path / "console.log"
    path.write_bytes(log)
    started = time.monotonic()
    result = watch_console(path, timeout=30)
    assert time.monotonic() - started < 5  # fails fast, not at the timeout
    assert (result.outcome, result.reason) == (Outcome.FAILURE, "secure-boot")
    assert result.line is not None and message in result.line
    assert "\ufffd" not in result.line  # no box drawing


def test_a_dialog_box_line_is_its_text() -> None:
    assert console.clean_line("\ufffd   Verification failed: (0x1A) Security Violation   \ufffd") == (
        "Verification failed: (0x1A) Security Violation"
    )


def test_a_cursor_move_split_across_reads_still_ends_a_line(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    path.write_bytes(b"\x1b[02;01HERROR\x1b[04;0")
    reader = console.ConsoleReader(path)
    try:
        assert reader.read_lines() == [""]  # "ERROR" may go on: the move is not complete
        with open(path, "ab") as log:
            log.write(b"1HVerification failed\x1b[05;01H")
        assert reader.read_lines() == ["ERROR", "Verification failed"]
    finally:
        reader.close()
