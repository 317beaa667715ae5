"""Helpers for the squashfs tests."""

from __future__ import annotations

from pathlib import Path

from liveimg import run as runner


def listing(image: Path) -> dict[str, str]:
    """``unsquashfs -lln`` in UTC: path below the root ("" for it) -> the line without its path."""
    out = runner.run(["unsquashfs", "-lln", image], env={"TZ": "UTC"}).stdout
    entries = {}
    for line in out.splitlines():
        if "squashfs-root" not in line:
            continue
        head, _, rest = line.partition(" squashfs-root")
        path = rest.split(" -> ")[0].lstrip("/")
        entries[path] = " ".join(head.split())
    return entries
