"""``manifest.json``: what a build made, from what, and how; the sha256 sums it records.

The manifest is ASCII JSON with sorted keys, so that equal builds give equal files; ``liveimg
boot-test`` reads it back (``boot``: what the pxe stage was given) to write the same boot
configurations for its own URL.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liveimg.errors import HostError, InternalError

if TYPE_CHECKING:
    from liveimg.guest import ImageFormat


def sha256_file(path: Path) -> str:
    """The sha256 of the file at ``path``, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class InputDigest(threading.Thread):
    """The sha256 of the input, computed beside the appliance's start (it is I/O, they are CPU).

    It reads the input as :func:`~liveimg.guest.probe_image` opened it (``reader_path``), the
    file the probes and libguestfs read: a file put in its place at the same path meanwhile is
    not the one hashed.
    """

    def __init__(self, image: ImageFormat) -> None:
        super().__init__(name="liveimg-sha256", daemon=True)
        self.image = image  # holds the open file for as long as the thread reads it
        self.digest: str | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.digest = sha256_file(Path(self.image.reader_path))
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self) -> str:
        """The hex digest, once the thread is done; :class:`HostError` if the input could not be read."""
        self.join()
        if self.error is not None:
            raise HostError(f"cannot read {self.image.path}: {self.error}")
        if self.digest is None:
            raise InternalError("the input's sha256 thread ended without a digest")
        return self.digest


def write_manifest(outdir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (keys sorted, so that equal builds give equal files)."""
    path = outdir / "manifest.json"
    # json.dumps escapes every control and non-ASCII character (guest strings included): the
    # file is ASCII JSON whatever the image holds; NaN is not JSON, so it is refused.
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n")
    return path


__all__ = ["InputDigest", "sha256_file", "write_manifest"]
