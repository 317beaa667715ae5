"""liveimg.accel: the KVM/TCG decision, bounded and cached."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from liveimg import accel
from liveimg import run as runner
from liveimg.accel import Accel, choose_accel
from liveimg.errors import HostError, InvalidOptions
from tests.support import need


def _fake_qemu(tmp_path: Path, body: str) -> Path:
    """A stand-in for qemu-system-x86_64 that records its calls."""
    script = tmp_path / "fake-qemu"
    script.write_text(f"#!/bin/sh\necho call >> {tmp_path}/calls\n{body}\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A file that opens read-write, standing in for /dev/kvm."""
    dev = tmp_path / "kvm"
    dev.write_bytes(b"")
    return dev


def _calls(tmp_path: Path) -> int:
    calls = tmp_path / "calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_no_device_means_tcg_without_probe(tmp_path: Path) -> None:
    qemu = _fake_qemu(tmp_path, "exit 0")
    choice = choose_accel(None, qemu=str(qemu), device=str(tmp_path / "nokvm"), cache_dir=tmp_path, environ={})
    assert choice.accel is Accel.TCG
    assert "No such file or directory" in choice.reason
    assert _calls(tmp_path) == 0


def test_device_that_hangs_means_tcg_within_the_bound(tmp_path: Path, device: Path) -> None:
    qemu = _fake_qemu(tmp_path, "exec sleep 60")
    started = time.monotonic()
    choice = choose_accel(None, qemu=str(qemu), device=str(device), timeout=1.0, cache_dir=tmp_path, environ={})
    assert time.monotonic() - started < 10
    assert choice.accel is Accel.TCG
    assert choice.reason == "a KVM guest did not run within 1 s"


def test_device_whose_guest_fails_means_tcg(tmp_path: Path, device: Path) -> None:
    qemu = _fake_qemu(tmp_path, "echo 'KVM internal error. Suberror: 1' >&2; exit 1")
    choice = choose_accel(None, qemu=str(qemu), device=str(device), cache_dir=tmp_path, environ={})
    assert choice.accel is Accel.TCG
    assert choice.reason == "the KVM probe guest exited with status 1: KVM internal error. Suberror: 1"


def test_working_kvm_is_chosen_and_cached(tmp_path: Path, device: Path) -> None:
    qemu = _fake_qemu(tmp_path, f"printf K; exit {accel.PROBE_EXIT_STATUS}")
    first = choose_accel(None, qemu=str(qemu), device=str(device), cache_dir=tmp_path, environ={})
    assert first.accel is Accel.KVM
    assert first.reason == "a KVM probe guest ran"
    second = choose_accel(None, qemu=str(qemu), device=str(device), cache_dir=tmp_path, environ={})
    assert second.accel is Accel.KVM
    assert second.reason.endswith("(cached)")
    assert _calls(tmp_path) == 1


def test_forced_choices(tmp_path: Path, device: Path) -> None:
    qemu = _fake_qemu(tmp_path, "exec sleep 60")
    common = {"qemu": str(qemu), "cache_dir": tmp_path}
    assert choose_accel("tcg", device=str(device), environ={}, **common) == accel.AccelChoice(Accel.TCG, "forced")
    assert choose_accel(None, device=str(device), environ={"LIVEIMG_ACCEL": "kvm"}, **common).accel is Accel.KVM
    # the argument wins over the environment
    assert choose_accel("tcg", device=str(device), environ={"LIVEIMG_ACCEL": "kvm"}, **common).accel is Accel.TCG
    assert _calls(tmp_path) == 0


def test_forcing_kvm_without_device_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HostError) as excinfo:
        choose_accel("kvm", device=str(tmp_path / "nokvm"), environ={})
    assert str(excinfo.value).startswith("KVM was forced but ")


def test_unknown_choice(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptions) as excinfo:
        choose_accel(None, environ={"LIVEIMG_ACCEL": "hvf"}, cache_dir=tmp_path)
    assert str(excinfo.value) == "unknown accelerator 'hvf' (use kvm, tcg or auto)"


def test_qemu_and_libguestfs_settings() -> None:
    tcg = accel.AccelChoice(Accel.TCG, "x")
    kvm = accel.AccelChoice(Accel.KVM, "x")
    assert tcg.qemu_args() == ["-accel", "tcg"]
    assert kvm.qemu_args() == ["-accel", "kvm", "-cpu", "host"]
    assert tcg.libguestfs_env() == {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    assert "LIBGUESTFS_BACKEND_SETTINGS" not in kvm.libguestfs_env()
    assert tcg.libguestfs_settings() == ["force_tcg"]


def test_boot_sector_is_its_assembled_source(tmp_path: Path) -> None:
    need("as", "ld")
    sector = accel.boot_sector()
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa")
    src = tmp_path / "probe.S"
    src.write_text(accel.PROBE_ASM)
    runner.run(["as", "--64", "-o", tmp_path / "probe.o", src])
    runner.run(["ld", "-Ttext", "0x7c00", "--oformat", "binary", "-o", tmp_path / "probe.bin", tmp_path / "probe.o"])
    assert (tmp_path / "probe.bin").read_bytes() == sector
