"""build() around its transaction: what a library caller gets when a signal or a failure ends it.

The stages are replaced by small fakes (the real ones run in tests/integration/test_kill.py
and test_outdir.py); the transaction, the signal handling and the conversions are real.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from liveimg import pipeline
from liveimg import run as runner
from liveimg.context import Build
from liveimg.errors import Cancelled, ToolError
from liveimg.options import BuildOptions
from liveimg.pipeline import build

pytestmark = pytest.mark.usefixtures("default_signals")


def with_stages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stages: pipeline.Stage) -> tuple[Path, Path]:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(pipeline, "STAGES", (stages,))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("the old build")
    return image, out


def signal_and_wait(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(10)
    pytest.fail("the signal did not stop the build")


def test_a_signal_during_a_stage_is_cancelled_and_outdir_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stages(ctx: Build) -> None:
        (ctx.txn.out / "half").write_text("x")
        with runner.spawn(["sleep", "60"]):
            signal_and_wait(signal.SIGHUP)

    image, out = with_stages(monkeypatch, tmp_path, stages)
    with pytest.raises(Cancelled) as excinfo:
        build(image, out, BuildOptions(force=True))
    assert excinfo.value.signum == signal.SIGHUP
    assert str(excinfo.value) == f"interrupted by SIGHUP: {out} left as it was"
    assert excinfo.value.__cause__ is None  # no chain to show: the signal is the whole story
    assert [p.name for p in out.iterdir()] == ["old"]
    assert sorted(os.listdir(tmp_path)) == ["disk.raw", "out"]
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_a_failure_caused_by_the_cancellation_is_cancelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper thread killed the tool first: the ToolError it caused is the cancellation."""

    def stages(ctx: Build) -> None:
        try:
            signal_and_wait(signal.SIGTERM)
        finally:
            raise ToolError(["mksquashfs"], -9)

    image, out = with_stages(monkeypatch, tmp_path, stages)
    with pytest.raises(Cancelled) as excinfo:
        build(image, out, BuildOptions(force=True))
    assert str(excinfo.value) == f"interrupted by SIGTERM: {out} left as it was"
    assert isinstance(excinfo.value.__cause__, ToolError)


def test_a_signal_after_the_swap_says_the_build_is_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stages(ctx: Build) -> None:
        (ctx.txn.out / "new").write_text("the new build")
        ctx.txn.commit()
        signal_and_wait(signal.SIGINT)

    image, out = with_stages(monkeypatch, tmp_path, stages)
    with pytest.raises(Cancelled) as excinfo:
        build(image, out, BuildOptions(force=True))
    assert str(excinfo.value) == f"interrupted by SIGINT once the build was complete: {out} holds it"
    assert [p.name for p in out.iterdir()] == ["new"]
    assert sorted(os.listdir(tmp_path)) == ["disk.raw", "out"]


def test_without_a_signal_errors_pass_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failure = ToolError(["e2fsck"], 8)

    def stages(ctx: Build) -> None:
        raise failure

    image, out = with_stages(monkeypatch, tmp_path, stages)
    with pytest.raises(ToolError) as excinfo:
        build(image, out, BuildOptions(force=True))
    assert excinfo.value is failure
    assert [p.name for p in out.iterdir()] == ["old"]
    assert sorted(os.listdir(tmp_path)) == ["disk.raw", "out"]
