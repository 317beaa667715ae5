"""Two deployments (where lorax stops with "Too many deployment roots"): the one chosen is the one that boots."""

from __future__ import annotations

from pathlib import Path

from liveimg.boottest import BootTestOptions, boot_test
from tests.e2e.live import build_sample


def test_the_chosen_deployment_boots(tmp_path: Path) -> None:
    manifest = build_sample("atomic-2deploy", tmp_path / "out", deployment="1")  # not the default one
    deployment = manifest["deployment"]
    result = boot_test(tmp_path / "out", BootTestOptions(via="kernel", workdir=tmp_path / "boot"))
    assert result.ok, result.boot.explain()
    booted = [line for line in result.ostree_status if line.lstrip().startswith("*")]
    assert f"{deployment['checksum']}.{deployment['serial']}" in booted[0]
