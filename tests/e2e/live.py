"""Shared by the e2e files of the samples other than atomic: build with fast codecs, then boot."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liveimg.dracut import Compression, DracutOptions
from liveimg.manifest import sha256_file
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from tests.samples import sample_image
from tests.support import guestfs_env, need, need_root

#: The codecs are not the point here; lorax's defaults are exercised by test_live_atomic.
FAST: dict[str, Any] = {"compression": "lz4", "dracut": DracutOptions(compression=Compression.ZSTD, level=3)}
#: The same, as ``liveimg build`` options.
FAST_ARGS = ("--compression", "lz4", "--initramfs-compression", "zstd", "--initramfs-level", "3")
REPO = Path(__file__).resolve().parents[2]


def build_sample(variant: str, out: Path, **options: Any) -> dict[str, Any]:
    """Build the sample ``variant`` into ``out``; check the input is unchanged; return the manifest."""
    need_root()
    need("qemu-system-x86_64", "socat")
    image = sample_image(variant)
    before = sha256_file(image)
    result = build(image, out, BuildOptions(**{**FAST, **options}))
    assert sha256_file(image) == before, "the input image changed"
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    return manifest


def build_with_cli(variant: str, out: Path, *args: str) -> dict[str, Any]:
    """``liveimg build`` of the sample ``variant`` into ``out`` as a user types it (fast codecs,
    then ``args``); the manifest."""
    need_root()
    image = sample_image(variant)
    argv = [sys.executable, "-m", "liveimg", "--progress", "none", "build", str(image), "-o", str(out), *FAST_ARGS,
            *args]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=3600, check=False)
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def edited_copy(
    base: Path, copy: Path, monkeypatch: pytest.MonkeyPatch, pattern: str, edit: Callable[[Any, str], None]
) -> None:
    """``copy``: a sparse copy of the sample ``base`` (never the cached sample itself), in which
    the one path that the glob ``pattern`` matches on its root filesystem is handed to
    ``edit(g, path)`` (``g``: a libguestfs handle with that filesystem mounted writable on /)."""
    import guestfs  # type: ignore[import-not-found]

    # A sparse copy, not a qcow2 overlay: liveimg refuses images with backing files.
    subprocess.run(["cp", "--sparse=always", str(base), str(copy)], check=True)
    for key, value in guestfs_env().items():
        monkeypatch.setenv(key, value)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.add_drive_opts(str(copy), format="raw", readonly=False)
        g.launch()
        found: list[str] = []
        for device, fstype in g.list_filesystems().items():
            if fstype not in ("ext4", "xfs"):
                continue
            g.mount(device, "/")
            found = g.glob_expand(pattern)
            if found:
                break
            g.umount_all()
        assert len(found) == 1, found
        edit(g, found[0])
        g.shutdown()
    finally:
        g.close()
