"""Sample installed-system images for the tests (built by scripts/make-sample-image, cached).

``sample_image(variant, fmt)`` returns the path of a cached sample, building it first if
needed (root only; the first build takes a few minutes).  ``manifest(path)`` reads what the
builder recorded beside it.  ``partitions`` and ``read_file``/``dump_file``/``list_dir``
read ext4 partitions of a raw image with sfdisk and debugfs, without mounting anything;
``boot_files`` uses them to pull a kernel, initramfs and command line out of an image (from
a BLS entry for ostree images, from ``/boot`` and ``/etc/kernel/cmdline`` for classic ones).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from liveimg import run as runner
from tests import support

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "make-sample-image"
#: Variants built by a builder of their own (kept apart so that the others' cache key does not change).
OWN_BUILDERS = {"atomic-iscsi": REPO / "scripts" / "sample_iscsi.py"}
SECTOR = 512
#: The cache directories this process uses, each held by a shared lock on its ``.inuse`` until the
#: process ends: a builder of another version prunes only directories nobody holds.
_HELD: dict[Path, int] = {}


@cache
def sample_image(variant: str = "atomic", fmt: str = "raw") -> Path:
    """The sample image ``variant`` in ``fmt`` (raw or qcow2), from the cache or built now."""
    support.need_root()
    support.need("debootstrap", "unshare", "ostree", "mkfs.ext4", "sfdisk", "zstd", "cpio", "tar")
    if variant == "atomic-xfs-lvm":
        support.need("guestfish")
    if fmt == "qcow2":
        support.need("qemu-img")
    if variant in OWN_BUILDERS:
        assert fmt == "raw", f"the {variant} sample is raw only"
        argv = [sys.executable, OWN_BUILDERS[variant]]
    else:
        argv = [sys.executable, SCRIPT, "--variant", variant, "--format", fmt]
    result = runner.run(argv, timeout=3600)
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file(), f"make-sample-image printed {path}, which does not exist"
    _hold(path.parent)
    return path


def _hold(keydir: Path) -> None:
    """Keep ``keydir`` from being pruned while this process may still read its samples."""
    if keydir in _HELD:
        return
    fd = os.open(keydir / ".inuse", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _HELD[keydir] = fd


def manifest(image: Path) -> dict[str, Any]:
    """What the builder recorded about ``image`` (``<image>.json``)."""
    data: dict[str, Any] = json.loads(image.with_name(image.name + ".json").read_text())
    return data


@dataclass(frozen=True)
class Part:
    number: int
    name: str
    type: str
    offset: int
    size: int


def partitions(image: Path) -> list[Part]:
    """The GPT partitions of a raw image, as sfdisk reads them."""
    table = json.loads(runner.run(["sfdisk", "--json", image]).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    parts = []
    for entry in table["partitions"]:
        number = int(re.search(r"(\d+)$", entry["node"]).group(1))  # type: ignore[union-attr]
        parts.append(
            Part(number, entry.get("name", ""), entry["type"], entry["start"] * SECTOR, entry["size"] * SECTOR)
        )
    return parts


def partition(image: Path, name: str) -> Part:
    matches = [p for p in partitions(image) if p.name == name]
    assert len(matches) == 1, f"no single partition named {name!r} in {image}"
    return matches[0]


def _debugfs(image: Path, part: Part, request: str) -> str:
    return runner.run(["debugfs", "-R", request, f"{image}?offset={part.offset}"]).stdout


def list_dir(image: Path, part: Part, path: str) -> list[str]:
    """Names in a directory of an ext4 partition (without . and ..)."""
    out = _debugfs(image, part, f"ls -p {path}")
    names = [line.split("/")[5] for line in out.splitlines() if line.startswith("/")]
    return [n for n in names if n not in (".", "..")]


def read_link(image: Path, part: Part, path: str) -> str:
    out = _debugfs(image, part, f"stat {path}")
    match = re.search(r'Fast link dest: "([^"]*)"', out)
    assert match, f"{path} is not a (fast) symlink:\n{out}"
    return match.group(1)


def read_file(image: Path, part: Part, path: str) -> str:
    return _debugfs(image, part, f"cat {path}")


def dump_file(image: Path, part: Part, path: str, dest: Path) -> Path:
    _debugfs(image, part, f"dump {path} {dest}")
    assert dest.is_file() and dest.stat().st_size > 0, f"could not extract {path} from {image}"
    return dest


def parse_bls(text: str) -> dict[str, str]:
    """A Boot Loader Specification entry: ``key value`` lines."""
    entry = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            entry[key] = value.strip()
    return entry


@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    initrd: Path
    options: str


def boot_files(image: Path, dest: Path) -> BootFiles:
    """Kernel, initramfs and kernel command line of a raw sample, extracted with debugfs.

    ostree images: from the default BLS entry (the highest ``version``, ostree's newest
    deployment) on the ``boot`` partition.  Classic: ``/boot`` and
    ``/etc/kernel/cmdline`` on the ``root`` partition.
    """
    support.need("sfdisk", "debugfs")
    dest.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in partitions(image)]
    if "boot" in names:
        boot = partition(image, "boot")
        loader = read_link(image, boot, "/loader")
        entries = [parse_bls(read_file(image, boot, f"/{loader}/entries/{name}"))
                   for name in list_dir(image, boot, f"/{loader}/entries")]  # fmt: skip
        # The default entry, as a BLS boot loader picks it: the highest version (ostree's newest).
        entry = max(entries, key=lambda e: int(e.get("version", "0")))
        kernel = dump_file(image, boot, entry["linux"], dest / "vmlinuz")
        initrd = dump_file(image, boot, entry["initrd"], dest / "initramfs.img")
        return BootFiles(kernel, initrd, entry["options"])
    root = partition(image, "root")
    files = list_dir(image, root, "/boot")
    kver = next(n.removeprefix("vmlinuz-") for n in files if n.startswith("vmlinuz-"))
    kernel = dump_file(image, root, f"/boot/vmlinuz-{kver}", dest / "vmlinuz")
    initrd = dump_file(image, root, f"/boot/initrd.img-{kver}", dest / "initramfs.img")
    return BootFiles(kernel, initrd, read_file(image, root, "/etc/kernel/cmdline").strip())
