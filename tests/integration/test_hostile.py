"""The hostile corpus (tests/hostile_images.py): each guest ends in a built initramfs or a one-line
error, in bounded time, with every canary on the host unchanged -- run as the caller (root in
``make test``) and as an unprivileged user.

Each case makes a small ext4 ``rootfs.img`` and runs the dracut stage on it (``debugfs rdump``
and the guest's dracut, both in the sandbox): seconds per case, no appliance.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg import sandbox
from liveimg.guest import probe_image
from tests.hostile_images import CASES, run_case, run_native_case, run_rootfs_case
from tests.support import need, need_root, public_directory, run_python_as_nobody, unavailable

#: No case may take longer (the slowest waits for a 30 s dracut time limit).
CASE_SECONDS = 90


@pytest.fixture(scope="module")
def public() -> Iterator[Path]:
    """Scratch space the unprivileged user can work in too (pytest's tmp dirs are root's)."""
    need("busybox", "debugfs", "mkfs.ext4", "bwrap")
    ok, reason = sandbox.available()
    if not ok:
        unavailable(reason)
    with public_directory("liveimg-hostile-", 0o1777) as path:
        yield path


def _as_nobody(public: Path, call: str) -> dict[str, object]:
    code = textwrap.dedent(f"""
        import json, pathlib
        from tests.hostile_images import run_case, run_rootfs_case
        print(json.dumps({call}))
    """)
    proc = run_python_as_nobody(code, timeout=CASE_SECONDS * 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_guest(name: str, public: Path) -> None:
    started = time.monotonic()
    result = run_case(name, public / f"caller-{name}")
    assert not result["problems"], result
    assert time.monotonic() - started < CASE_SECONDS


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_guest_as_an_unprivileged_user(name: str, public: Path) -> None:
    need_root()
    started = time.monotonic()
    result = _as_nobody(public, f"run_case({name!r}, pathlib.Path({str(public / f'nobody-{name}')!r}))")
    assert not result["problems"], result
    assert time.monotonic() - started < CASE_SECONDS * 2


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_guest_read_by_the_native_reader(name: str, public: Path) -> None:
    """The same images read by the host's ext reader (``--inspect native``) instead of the appliance."""
    started = time.monotonic()
    result = run_native_case(name, public / f"native-{name}")
    assert not result["problems"], result
    assert time.monotonic() - started < 30, result
    if name == "rdump-duplicate-entries":  # a name twice in a directory: neither reader's answer is right
        assert "two entries named" in result["outcomes"][0], result


def test_rootfs_stage_refuses_the_duplicate_entries(public: Path) -> None:
    result = run_rootfs_case(public / "rootfs-caller")
    assert not result["problems"], result
    if os.geteuid() == 0:
        result = _as_nobody(public, f"run_rootfs_case(pathlib.Path({str(public / 'rootfs-nobody')!r}))")
        assert not result["problems"], result


def test_an_input_swapped_after_the_probe_is_never_read(public: Path) -> None:
    """The input is opened once: a file renamed over its path later is not what is read."""
    need("mkfs.ext4")
    image = public / "input.raw"
    decoy = public / "decoy.raw"
    for path, label in ((image, "original"), (decoy, "decoy")):
        with open(path, "wb") as f:
            f.truncate(8 << 20)
        runner.run(["mkfs.ext4", "-q", "-F", "-L", label, str(path)])
    fmt = probe_image(image)
    os.replace(decoy, image)
    with open(fmt.reader_path, "rb") as f:
        f.seek(1024 + 120)  # s_volume_name
        assert f.read(8) == b"original"
    with open(image, "rb") as f:
        f.seek(1024 + 120)
        assert f.read(5) == b"decoy"
