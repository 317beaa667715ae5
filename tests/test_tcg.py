"""The appliance's QEMU wrapper: accel=tcg moves from -machine to -accel with a bounded cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from liveimg import tcg
from liveimg.errors import InvalidOptions


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Path:
    """A "QEMU" that prints its arguments, one a line."""
    path = tmp_path / "qemu"
    path.write_text('#!/bin/sh\nfor a do printf "%s\\n" "$a"; done\n')
    path.chmod(0o755)
    return path


def _run(wrapper: Path, *args: str) -> list[str]:
    done = subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_accel_tcg_moves_to_accel_with_the_size(fake_qemu: Path, tmp_path: Path) -> None:
    wrapper = tcg.qemu_wrapper(str(fake_qemu), 64, tmp_path / "cache")
    assert _run(wrapper, "-nodefaults", "-machine", "accel=tcg,graphics=off", "-m", "1280") == [
        "-nodefaults", "-machine", "graphics=off", "-accel", "tcg,tb-size=64", "-m", "1280",
    ]  # fmt: skip
    assert _run(wrapper, "-M", "q35,accel=tcg", "-cpu", "max") == ["-M", "q35", "-accel", "tcg,tb-size=64",
                                                                  "-cpu", "max"]  # fmt: skip
    assert _run(wrapper, "-machine", "accel=tcg") == ["-accel", "tcg,tb-size=64"]


def test_everything_else_passes_through(fake_qemu: Path, tmp_path: Path) -> None:
    wrapper = tcg.qemu_wrapper(str(fake_qemu), 64, tmp_path)
    args = ["-display", "none", "-machine", "accel=kvm:tcg", "-qmp", "stdio", "-append", "a b  c", "-machine"]
    assert _run(wrapper, *args) == args
    assert _run(wrapper, "-help") == ["-help"]


def test_the_wrapper_is_written_once_per_content(fake_qemu: Path, tmp_path: Path) -> None:
    first = tcg.qemu_wrapper(str(fake_qemu), 64, tmp_path)
    mtime = first.stat().st_mtime_ns
    assert tcg.qemu_wrapper(str(fake_qemu), 64, tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # libguestfs's capability cache is keyed by it
    other = tcg.qemu_wrapper(str(fake_qemu), 128, tmp_path)
    assert other != first and "tb-size=128" in other.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tcg.ENV_VAR, raising=False)
    assert tcg.tb_size_mib() == tcg.DEFAULT_TB_SIZE_MIB
    monkeypatch.setenv(tcg.ENV_VAR, "0")
    assert tcg.tb_size_mib() == 0
    monkeypatch.setenv(tcg.ENV_VAR, "256")
    assert tcg.tb_size_mib() == 256
    for bad in ("8", "big", "-1"):
        monkeypatch.setenv(tcg.ENV_VAR, bad)
        with pytest.raises(InvalidOptions, match=tcg.ENV_VAR):
            tcg.tb_size_mib()
