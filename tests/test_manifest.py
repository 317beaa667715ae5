"""manifest.json and the sha256 sums it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveimg import manifest


def test_manifest_and_checksum(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    assert manifest.sha256_file(tmp_path / "a") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    path = manifest.write_manifest(tmp_path, {"b": 1, "a": {"z": 1, "y": 2}})
    assert path.read_text() == '{\n  "a": {\n    "y": 2,\n    "z": 1\n  },\n  "b": 1\n}\n'


def test_the_manifest_is_ascii_json_whatever_the_image_holds(tmp_path: Path) -> None:
    hostile = {
        "name": 'Evil\n\x1b[2J\u202e"}\\',
        "warnings": ["/boot/vmlinuz-\udcff\udcfe is odd", "a\x00b"],
        "nested": {"k\ny": ["\u2028", 1, None, True]},
    }
    text = manifest.write_manifest(tmp_path, hostile).read_text()
    assert text.isascii() and json.loads(text) == hostile
    with pytest.raises(ValueError):
        manifest.write_manifest(tmp_path, {"x": float("nan")})
