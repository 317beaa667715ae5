"""The classic sample (no ostree) through the pipeline, booted from the squashfs attached as a disk (no network)."""

from __future__ import annotations

from pathlib import Path

from liveimg.boottest import BootTestOptions, boot_test
from tests.e2e.live import build_sample


def test_classic_boots_from_the_squashfs_disk(tmp_path: Path) -> None:
    manifest = build_sample("classic", tmp_path / "out")
    assert manifest["deployment"] is None
    assert "ostree=" not in (tmp_path / "out/PXE_CONFIG").read_text()
    result = boot_test(tmp_path / "out", BootTestOptions(via="disk", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    assert result.checks["ostree-booted"] == "no"
    assert result.checks["root"].startswith("/dev/mapper/live-rw")
