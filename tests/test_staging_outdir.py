"""OUTDIR's missing parents: made as `mkdir -p` does, removed again when the build fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveimg.errors import InvalidOptions
from liveimg.outdir import OutdirTransaction


def _staging(outdir: Path) -> OutdirTransaction:
    return OutdirTransaction(outdir, force=False, workdir=None, keep_workdir=False)


def test_missing_parents_are_made_and_kept_after_commit(tmp_path: Path) -> None:
    outdir = tmp_path / "a" / "b" / "c"
    staging = _staging(outdir)
    assert (tmp_path / "a" / "b").is_dir()
    (staging.out / "file").write_text("x")
    staging.commit()
    staging.close()
    assert (outdir / "file").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["c"]


def test_parents_made_for_a_failed_build_are_removed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    staging = _staging(tmp_path / "a" / "b" / "c" / "out")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    staging.close()  # no commit: the build failed
    assert list(tmp_path.iterdir()) == [tmp_path / "a"]
    assert list((tmp_path / "a").iterdir()) == []


def test_a_parent_that_gained_other_files_is_kept(tmp_path: Path) -> None:
    staging = _staging(tmp_path / "a" / "out")
    (tmp_path / "a" / "mine").write_text("someone else's")
    staging.close()
    assert (tmp_path / "a" / "mine").exists()


def test_a_file_in_the_way_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("")
    with pytest.raises(InvalidOptions, match=r"cannot create .*/a/b: .*/a is not a directory"):
        _staging(tmp_path / "a" / "b" / "out")
