"""The live initramfs checks the live image it downloads (liveimg.liveverify), booted for real.

One build of the atomic sample (fast codecs), booted four times with the kernel given to QEMU:
a URL the server answers with 404, a file cut short, the file with one byte flipped, and no
interface coming online.  Each failure ends the boot with its own line (boot-test's
``image-verify``); the download's within 2 minutes of its start, by the guest's clock: the
kernel's timestamps of liveimg's ``fetching`` line and of the failure's.  The good case -- this
build's live file checked, then the system comes up -- is booted by every boot of
``tests/e2e/test_live_serve.py`` (its ``checked`` line asserted there); here, the file it checks
against is read back from the initramfs.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liveimg.boottest import BootTestOptions, BootTestResult, boot_test
from liveimg.console import Outcome
from liveimg.dracut.initramfs import Initramfs
from liveimg.liveverify import MESSAGES, VERIFY_FILE
from liveimg.qemu import GUEST_FORWARD_ADDR
from tests.e2e.live import build_sample

#: A kernel log line as the serial console shows it: ``[  12.345678] text``.
_STAMPED = re.compile(r"\[\s*(\d+\.\d+)\]\s+(liveimg: .*)")


@dataclass(frozen=True)
class Built:
    out: Path
    manifest: dict[str, Any]

    @property
    def live(self) -> Path:
        return self.out / str(self.manifest["rootfs"]["file"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("verify") / "out"
    return Built(out, build_sample("atomic", out))


def _variant(built: Built, where: Path, edit: str) -> Path:
    """A copy of OUTDIR (hard links) whose live file is ``edit``-ed: ``short`` (its first half) or ``flipped``."""
    where.mkdir()
    for name in os.listdir(built.out):
        src = built.out / name
        if src.is_dir():
            shutil.copytree(src, where / name)
        elif src != built.live:
            os.link(src, where / name)
    data = bytearray(built.live.read_bytes())
    if edit == "short":
        del data[len(data) // 2 :]
    else:
        data[len(data) // 3] ^= 0x01
    (where / built.live.name).write_bytes(data)
    return where


def _boot(out: Path, work: Path, *kernel_args: str) -> tuple[BootTestResult, list[tuple[float, str]]]:
    # loglevel=6: liveimg's "fetching" line (notice) on the console too, to time the failure from it.
    options = BootTestOptions(
        via="kernel", workdir=work, checks=False, timeout=900, kernel_args=("loglevel=6", *kernel_args)
    )
    result = boot_test(out, options)
    lines = []
    for line in result.boot.console_log.read_text(errors="replace").splitlines():
        match = _STAMPED.search(line)
        if match:
            lines.append((float(match.group(1)), match.group(2).rstrip()))
    print(f"{out.name}: {result.boot.summary()}")
    return result, lines


def _failed_within_2_minutes(result: BootTestResult, lines: list[tuple[float, str]], kind: str) -> re.Match[str]:
    assert result.boot.outcome is Outcome.FAILURE, result.boot.explain()
    assert result.boot.reason == "image-verify", result.boot.explain()
    assert result.boot.line is not None
    match = re.search(MESSAGES[kind], result.boot.line)
    assert match, result.boot.line
    started = [t for t, text in lines if text.startswith("liveimg: fetching ")]
    failed = [t for t, text in lines if re.match(MESSAGES[kind], text)]
    assert len(started) == 1 and len(failed) == 1, lines
    print(f"{kind}: failed {failed[0] - started[0]:.1f} s after the download began, {result.boot.seconds} s after boot")
    assert failed[0] - started[0] < 120
    return match


def test_the_initramfs_knows_this_build_s_live_file(built: Built) -> None:
    assert built.manifest["initramfs"]["verifies_live"] is True
    artifact = built.manifest["artifacts"][built.live.name]
    with Initramfs(built.out / built.manifest["boot"]["initramfs"]) as ird:
        assert ird.read(VERIFY_FILE.lstrip("/")).decode() == f"{artifact['size']} {artifact['sha256']}\n"


def test_a_404_names_the_url(built: Built, tmp_path: Path) -> None:
    url = f"http://{GUEST_FORWARD_ADDR}:8080/not-{built.live.name}"
    result, lines = _boot(built.out, tmp_path / "boot", f"root=live:{url}")
    match = _failed_within_2_minutes(result, lines, "not-found")
    assert match.groups() == ("404", url)


def test_a_short_file_says_got_and_expected(built: Built, tmp_path: Path) -> None:
    out = _variant(built, tmp_path / "short", "short")
    result, lines = _boot(out, tmp_path / "boot")
    match = _failed_within_2_minutes(result, lines, "short")
    size = built.live.stat().st_size
    assert match.groups()[1:] == (str(size // 2), str(size))


def test_a_flipped_byte_is_another_build(built: Built, tmp_path: Path) -> None:
    out = _variant(built, tmp_path / "flipped", "flipped")
    result, lines = _boot(out, tmp_path / "boot")
    match = _failed_within_2_minutes(result, lines, "mismatch")
    expected = built.manifest["artifacts"][built.live.name]["sha256"]
    assert match.group(2) == expected
    assert match.group(3) != expected and re.fullmatch(r"[0-9a-f]{64}", match.group(3))


def test_no_network_says_so_at_dracut_s_timeout(built: Built, tmp_path: Path) -> None:
    # An interface that does not exist: none comes online; rd.retry=20 brings dracut's timeout near.
    result, lines = _boot(built.out, tmp_path / "boot", "ip=eth9:dhcp", "rd.retry=20")
    assert result.boot.reason == "image-verify", result.boot.explain()
    assert result.boot.line is not None and re.search(MESSAGES["no-network"], result.boot.line)
    assert not [text for _, text in lines if text.startswith("liveimg: fetching ")]
