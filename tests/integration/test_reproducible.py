"""Reproducible builds: two cold builds of a sample with the same SOURCE_DATE_EPOCH, byte for byte; and a warm one.

Every file of the two OUTDIRs is compared (the squashfs, rootfs.img in it, the initramfs by the
image's own dracut, the kernel, the EFI files, the PXE configs, the cloud-init seed, the ISO and
the manifest); a failure names the first file that differs.  The cheapest options that still run
the image's dracut and liveimg's writers: lz4 for the squashfs, zstd -1 for the initramfs.
Cold means from an empty build cache (atomic, at the same path each time, so that the manifests'
``cache`` sections agree) or with none (``--no-cache``, classic).  The atomic sample is built a
third time with the build cache the second filled: dracut is not run
(the manifest's ``initramfs.reused``), and the OUTDIR is the cold one's but for the manifest's
``cache`` section and that flag, every squashfs block of the cold build reused.  Both samples'
dracut is configured ``reproducible=yes``
already (Debian's ostree package's ``/etc/dracut.conf.d/ostree.conf``, which a ``--dracut-conf``,
read before it, cannot override), so liveimg's own ``--reproducible`` is checked by
``tests/dracut/test_plan.py`` only.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.samples import sample_image
from tests.support import need, need_root

REPO = Path(__file__).resolve().parents[2]
EPOCH = "1700000000"
URL = "http://192.0.2.1/live"
CHEAP = ("--compression", "lz4", "--initramfs-compression", "zstd", "--initramfs-level", "1")


def build(image: Path, out: Path, *extra: str, cache: Path | None = None) -> None:
    """A build; cold (``--no-cache``) unless ``cache`` is given."""
    where = ("--cache", str(cache)) if cache is not None else ("--no-cache",)
    cmd = [sys.executable, "-m", "liveimg", "--progress", "none", "build", str(image), "-o", str(out), *CHEAP,
           "--url", URL, *where, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIVEIMG_ACCEL": "tcg", "SOURCE_DATE_EPOCH": EPOCH}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def first_difference(a: Path, b: Path, *, warm: bool = False) -> str | None:
    """None if the two trees hold the same names with the same bytes; else what differs first.

    ``warm``: ``b`` was built with the cache, so its manifest may differ in ``cache`` and
    ``initramfs.reused`` (and must say that the initramfs was reused).
    """
    names_a, names_b = files(a), files(b)
    if names_a != names_b:
        return f"not the same files: only in the first {sorted(set(names_a) - set(names_b))}, " \
               f"only in the second {sorted(set(names_b) - set(names_a))}"  # fmt: skip
    for name in names_a:
        if warm and name == "manifest.json":
            left, right = (json.loads((p / name).read_text()) for p in (a, b))
            if not right["initramfs"]["reused"] or left["initramfs"]["reused"]:
                return "the warm build did not reuse the cold one's initramfs"
            for manifest in (left, right):
                del manifest["cache"], manifest["initramfs"]["reused"], manifest["initramfs"]["compression_reused"]
            if left != right:
                return f"{name} differs beyond the cache's part"
            continue
        if _differ(a / name, b / name):
            if name == "manifest.json":
                left, right = (_pretty(p / name) for p in (a, b))
                return f"{name} differs:\n" + "".join(difflib.unified_diff(left, right, n=1))
            return f"{name} differs"
    return None


def _differ(x: Path, y: Path) -> bool:
    with open(x, "rb") as fx, open(y, "rb") as fy:
        while True:
            cx, cy = fx.read(1 << 20), fy.read(1 << 20)
            if cx != cy:
                return True
            if not cx:
                return False


def _pretty(path: Path) -> list[str]:
    return json.dumps(json.loads(path.read_text()), indent=1, sort_keys=True).splitlines(keepends=True)


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_root()
    need("debugfs", "e2fsck", "resize2fs", "zstd", "lz4")


def test_atomic_twice_is_byte_identical_and_a_warm_build_too(tmp_path: Path) -> None:
    image = sample_image("atomic")
    cache = tmp_path / "cache"
    # Both cold, from an empty cache at the same place: the manifests' cache sections agree too.
    build(image, tmp_path / "a", "--cloud-init", cache=cache)
    shutil.rmtree(cache)
    build(image, tmp_path / "b", "--cloud-init", cache=cache)
    difference = first_difference(tmp_path / "a", tmp_path / "b")
    assert difference is None, difference
    build(image, tmp_path / "warm", "--cloud-init", cache=cache)  # the cache b filled
    difference = first_difference(tmp_path / "a", tmp_path / "warm", warm=True)
    assert difference is None, difference
    # Every data block of rootfs.img was compressed once by the cold build, and reused by the warm one.
    cold, warm = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("b", "warm"))
    assert cold["cache"]["dir"] == warm["cache"]["dir"] == str(cache)
    c, w = cold["cache"]["namespaces"]["squashfs"], warm["cache"]["namespaces"]["squashfs"]
    blocks = c["hits"] + c["misses"]
    assert c["misses"] > 1000
    assert (w["hits"], w["misses"], w["errors"]) == (blocks, 0, 0)
    assert w["bytes_reused"] == c["bytes_stored"] + c["bytes_reused"]


def test_classic_twice_is_byte_identical(tmp_path: Path) -> None:
    image = sample_image("classic")
    for name in ("a", "b"):
        build(image, tmp_path / name, "--iso")
    difference = first_difference(tmp_path / "a", tmp_path / "b")
    assert difference is None, difference
