"""The real pipeline twice on the atomic sample with one build cache: the same squashfs, its blocks reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from liveimg.manifest import sha256_file
from tests.samples import sample_image
from tests.support import need_module

REPO = Path(__file__).resolve().parents[2]
#: Fast codecs: the test is about reuse, not about xz.
OPTIONS = ("--compression", "lz4", "--initramfs-compression", "zstd", "--initramfs-level", "1")


def build(image: Path, out: Path, cache: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "liveimg", "--progress", "none", "build", str(image), "-o", str(out),
           "--cache", str(cache), *OPTIONS]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIVEIMG_ACCEL": "tcg", "SOURCE_DATE_EPOCH": "1700000000"}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def test_a_rebuild_reuses_the_compressed_blocks(tmp_path: Path) -> None:
    need_module("lz4", "liveimg[lz4] (pip install lz4)")
    image = sample_image("atomic")
    cache = tmp_path / "cache"
    cold = build(image, tmp_path / "cold", cache)
    warm = build(image, tmp_path / "warm", cache)
    name = cold["rootfs"]["file"]
    assert sha256_file(tmp_path / "cold" / name) == sha256_file(tmp_path / "warm" / name)
    assert cold["artifacts"][name] == warm["artifacts"][name]
    assert cold["cache"]["dir"] == warm["cache"]["dir"] == str(cache)
    c, w = cold["cache"]["namespaces"]["squashfs"], warm["cache"]["namespaces"]["squashfs"]
    blocks = c["hits"] + c["misses"]
    assert c["misses"] > 1000  # every block of rootfs.img's data, compressed once
    assert (w["hits"], w["misses"], w["errors"]) == (blocks, 0, 0)
    assert w["bytes_reused"] == c["bytes_stored"] + c["bytes_reused"]
    print(f"pack: cold {cold['stages']['squashfs']} s, warm {warm['stages']['squashfs']} s, {blocks} blocks")
