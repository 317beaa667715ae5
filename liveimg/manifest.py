"""``manifest.json``: what a build made, from what, and how; the sha256 sums it records.

The manifest is ASCII JSON with sorted keys, so that equal builds give equal files; ``liveimg
boot-test`` reads it back (``boot``: what the pxe stage was given) to write the same boot
configurations for its own URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    """The sha256 of the file at ``path``, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(outdir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (keys sorted, so that equal builds give equal files)."""
    path = outdir / "manifest.json"
    # json.dumps escapes every control and non-ASCII character (guest strings included): the
    # file is ASCII JSON whatever the image holds; NaN is not JSON, so it is refused.
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n")
    return path


__all__ = ["sha256_file", "write_manifest"]
