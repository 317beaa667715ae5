"""manifest.json and the sha256 sums it records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from liveimg import manifest
from liveimg.errors import HostError
from liveimg.guest import ImageFormat, InputFile


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


def test_the_input_digest_reads_the_file_probed_not_the_path_again(tmp_path: Path) -> None:
    """A file put at the input's path after it was opened is not the one hashed (nor read by libguestfs)."""
    image = tmp_path / "disk.raw"
    image.write_bytes(b"the image probed" * 4096)
    probed = ImageFormat(image, "raw", image.stat().st_size, InputFile(image))
    swapped = tmp_path / "swapped.raw"
    swapped.write_bytes(b"another file")
    swapped.replace(image)
    expected = hashlib.sha256(b"the image probed" * 4096).hexdigest()
    assert manifest.InputDigest(probed).result() == expected


def test_an_unreadable_input_is_a_host_error(tmp_path: Path) -> None:
    missing = ImageFormat(tmp_path / "gone.raw", "raw", 1)  # no open file: read by its path, which is gone
    with pytest.raises(HostError, match=f"^cannot read {tmp_path / 'gone.raw'}: "):
        manifest.InputDigest(missing).result()
