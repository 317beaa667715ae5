"""The initramfs stage appends liveimg's livenetroot, its no-network hook and the live file's size and sha256."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from liveimg.dracut import cpio
from liveimg.dracut.initramfs import Initramfs
from liveimg.errors import InvalidImage
from liveimg.liveverify import LIVENETROOT, TIMEOUT_HOOK, TIMEOUT_HOOK_NAME, VERIFY_FILE, initramfs_files
from liveimg.manifest import sha256_file
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from liveimg.ramfloor import BASE_MIB, RAM_FILE, RamFloor
from tests.stages import standins
from tests.stages.standins import DRACUT_FILES, KVER

TIMEOUT_DIR = "usr/lib/dracut/hooks/initqueue/timeout"


@pytest.mark.parametrize("verify", [True, False])
def test_the_live_initramfs_carries_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: bool) -> None:
    standins.use(monkeypatch, [])
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    out = tmp_path / "out"
    result = build(image, out, BuildOptions(verify=verify))
    live = out / result.manifest["rootfs"]["file"]
    with Initramfs(out / f"initramfs-{KVER}.img") as ird:
        assert ird.read("usr/sbin/livenetroot") == LIVENETROOT.encode()
        assert ird.read(f"{TIMEOUT_DIR}/{TIMEOUT_HOOK_NAME}") == TIMEOUT_HOOK.encode()
        if verify:
            assert ird.read(VERIFY_FILE.lstrip("/")) == f"{live.stat().st_size} {sha256_file(live)}\n".encode()
        else:
            assert not ird.find(VERIFY_FILE.lstrip("/"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["initramfs"]["verifies_live"] is verify
    # The RAM floor: the live file, dracut's files in whole pages, the base; in the initramfs, the manifest
    # and PXE_CONFIG.
    pages = sum(-(-len(e.data) // 4096) * 4096 for e in DRACUT_FILES if e.kind is cpio.Kind.FILE
                and isinstance(e.data, bytes))  # fmt: skip
    floor = RamFloor(live.stat().st_size, pages)
    assert floor.need_mib == -(-(live.stat().st_size + pages) // (1 << 20)) + BASE_MIB
    with Initramfs(out / f"initramfs-{KVER}.img") as ird:
        assert ird.read(RAM_FILE.lstrip("/")).decode() == f"{floor.need_mib} {floor.live_ram_mib}\n"
    assert manifest["initramfs"]["ram_floor_mib"] == floor.need_mib
    assert manifest["initramfs"]["ram_floor"] == floor.manifest()
    assert manifest["initramfs"]["all_drivers"] is False
    assert f"# RAM: this build needs at least {floor.need_mib} MiB of RAM over HTTP" in (out / "PXE_CONFIG").read_text()


def _initramfs(path: Path, leave_out: str) -> Path:
    path.write_bytes(cpio.newc_bytes([e for e in DRACUT_FILES if e.name != leave_out], mtime=0))
    return path


@pytest.mark.parametrize(
    ("leave_out", "verify", "message"),
    [
        ("usr/sbin/livenetroot", False, "has no livenetroot: the image's dracut lacks its livenet module"),
        ("usr/bin/sha256sum", True, "lacks sha256sum, which the live image's check needs"),
    ],
)
def test_an_initramfs_that_cannot_run_the_check_is_refused(
    tmp_path: Path, leave_out: str, verify: bool, message: str
) -> None:
    initramfs = _initramfs(tmp_path / "initramfs.img", leave_out)
    with pytest.raises(InvalidImage, match=message):
        initramfs_files(initramfs, tmp_path / "work", (5, "a" * 64) if verify else None)


def test_without_the_check_its_tools_are_not_needed(tmp_path: Path) -> None:
    initramfs = _initramfs(tmp_path / "initramfs.img", "usr/bin/sha256sum")
    files = initramfs_files(initramfs, tmp_path / "work", None)
    assert sorted(f.dest for f in files) == ["/usr/lib/dracut/hooks/initqueue/timeout/" + TIMEOUT_HOOK_NAME,
                                             "/usr/sbin/livenetroot"]  # fmt: skip


def test_the_live_file_is_hashed_once_and_the_manifest_agrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standins.use(monkeypatch, [])
    hashed: list[str] = []

    def counting(path: Path) -> str:
        hashed.append(Path(path).name)
        return sha256_file(path)

    monkeypatch.setattr("liveimg.stages.initramfs.sha256_file", counting)
    monkeypatch.setattr("liveimg.manifest.sha256_file", counting)
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    out = tmp_path / "out"
    result = build(image, out, BuildOptions())
    name = result.manifest["rootfs"]["file"]
    assert hashed.count(name) == 1, hashed
    assert result.manifest["artifacts"][name]["sha256"] == sha256_file(out / name)


def test_the_stage_reads_the_initramfs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reader of the initramfs stage shares one scan: each scan decompresses the whole file."""
    standins.use(monkeypatch, [])
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    scanned: list[str] = []
    scan = Initramfs._scan

    def counting(self: Initramfs) -> Any:
        scanned.append(self.path.name)
        return scan(self)

    monkeypatch.setattr(Initramfs, "_scan", counting)
    build(image, tmp_path / "out", BuildOptions())
    assert scanned.count(f"initramfs-{KVER}.img") == 1, scanned
