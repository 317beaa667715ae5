"""benchmarks.commits: both commits run, alternating which goes first, and the medians compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import commits, harness


def test_sides_alternate_and_medians_are_compared(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []
    head = commits._resolve("HEAD")

    def fake_side(tree: Path, scratch: Path, nice: int) -> dict[str, Any]:
        side = tree.name
        assert (tree / "liveimg" / "__init__.py").is_file()  # a real checkout of that commit
        calls.append(side)
        slow = 1.5 if side == "head" else 1.0
        return {
            "rootfs_seconds": 4.0 * slow,
            "extract_seconds": 5.0,
            "sandbox_dracut_xz": {"seconds": 40.0 + len(calls)},
            "sandbox_dracut_no_compress": {"seconds": 8.0},
        }

    saved: dict[str, Any] = {}
    monkeypatch.setattr(commits, "run_side", fake_side)
    monkeypatch.setattr(harness, "save", lambda name, data: saved.update(data) or tmp_path / "x.json")
    assert commits.main(["--base", "HEAD", "--head", "HEAD", "--rounds", "3"]) == 0
    assert calls == ["base", "head", "head", "base", "base", "head"]
    assert saved["commits"] == {"base": head, "head": head}
    assert saved["median"]["rootfs stage"] == {"base": 4.0, "head": 6.0, "ratio": 1.5}
    assert saved["command"] == "python -m benchmarks.commits --base HEAD --head HEAD --rounds 3"
    assert not any(Path("/var/tmp").glob("liveimg-commits-*/base"))  # the worktrees are gone
