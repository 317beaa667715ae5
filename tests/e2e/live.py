"""Shared by the e2e files of the samples other than atomic: build with fast codecs, then boot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from liveimg.dracut import Compression, DracutOptions
from liveimg.manifest import sha256_file
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from tests.samples import sample_image
from tests.support import need, need_root

#: The codecs are not the point here; lorax's defaults are exercised by test_live_atomic.
FAST: dict[str, Any] = {"compression": "lz4", "dracut": DracutOptions(compression=Compression.ZSTD, level=3)}
#: The same, as ``liveimg build`` options.
FAST_ARGS = ("--compression", "lz4", "--initramfs-compression", "zstd", "--initramfs-level", "3")


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
