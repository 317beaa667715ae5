"""The manifest's stage times in a whole build (stand-ins): there without SOURCE_DATE_EPOCH, not with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveimg.options import BuildOptions
from liveimg.pipeline import build
from tests.stages import standins


def test_with_source_date_epoch_no_time_in_the_manifest_and_the_timings_in_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standins.use(monkeypatch, [])
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    timed = build(image, tmp_path / "timed", BuildOptions(cache=False))
    assert {"guest", "dracut", "pxe"} <= set(timed.manifest["stages"])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build(image, tmp_path / "a", BuildOptions(cache=False))
    second = build(image, tmp_path / "b", BuildOptions(cache=False))
    assert first.manifest["stages"] is None
    assert {"guest", "dracut", "pxe", "total"} <= set(first.timings)
    # The stand-ins' artifacts differ from build to build (random bytes); all else is the same.
    del first.manifest["artifacts"], second.manifest["artifacts"]
    assert first.manifest == second.manifest
