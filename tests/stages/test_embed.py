"""The embed stage: with --embed-rootfs a build writes live-rootfs.cpio, configs that load it, and its limits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from liveimg.dracut.initramfs import Initramfs
from liveimg.embed import CPIO_NAME
from liveimg.manifest import sha256_file
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from liveimg.progress import Event, Progress
from tests.stages import standins
from tests.stages.standins import KVER


def test_a_build_with_embed_rootfs_writes_the_second_initrd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    standins.use(monkeypatch, [])
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    out = tmp_path / "out"
    events: list[Event] = []
    with caplog.at_level(logging.WARNING):
        result = build(image, out, BuildOptions(embed_rootfs=True), Progress(events.append))
    live = result.manifest["rootfs"]["file"]
    # The archive holds the live file, byte for byte, at /<its name>.
    with Initramfs(out / CPIO_NAME) as archive:
        assert archive.read(live) == (out / live).read_bytes()
        assert sorted(archive.files()) == [live]
    manifest = json.loads((out / "manifest.json").read_text())
    embed = manifest["embed"]
    assert embed["file"] == CPIO_NAME and embed["path"] == f"/{live}"
    assert (embed["size"], embed["sha256"]) == ((out / CPIO_NAME).stat().st_size, sha256_file(out / CPIO_NAME))
    assert manifest["boot"]["embedded"] == CPIO_NAME
    assert manifest["kernel_args"][0] == f"root=live:/{live}" and "ip=dhcp" not in manifest["kernel_args"]
    # Without --url the ready configs are written all the same: nothing in them needs a server.
    initrds = f"initrd=initramfs-{KVER}.img,{CPIO_NAME}"
    assert f"APPEND {initrds} root=live:/{live} " in (out / "pxelinux.cfg/default").read_text()
    assert f"    initrd /initramfs-{KVER}.img /{CPIO_NAME}\n" in (out / "grub.cfg").read_text()
    # The limits it passes are said as warnings (a toy file passes only the RAM one) and as the stage's messages.
    assert len(embed["warnings"]) == 1 and "the live file twice" in embed["warnings"][0]
    assert f"embed: {embed['warnings'][0]}" in caplog.messages
    assert [e.message for e in events if e.stage == "embed" and e.event == "message"] == embed["warnings"]


def test_without_embed_rootfs_there_is_no_second_initrd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standins.use(monkeypatch, [])
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    result = build(image, tmp_path / "out", BuildOptions())
    assert result.manifest["embed"] is None and result.manifest["boot"]["embedded"] is None
    assert not (tmp_path / "out" / CPIO_NAME).exists()
