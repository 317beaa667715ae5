"""``LiveOS/rootfs.img`` for the dracut tests, made from a sample disk by the rootfs stage.

The root and boot partitions are found with sfdisk and debugfs (no libguestfs: the guest stage
is not what these tests are about) and handed to :func:`liveimg.rootfs.from_partition`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from liveimg import rootfs as rootfs_stage
from liveimg import run as runner
from liveimg.tree import HostTree as SourceTree


@dataclass(frozen=True)
class Sample:
    disk: Path
    meta: dict[str, object]

    @property
    def kver(self) -> str:
        return str(self.meta["kernel_version"])


def find_sample(variant: str) -> Sample:
    """The sample disk ``variant`` (``atomic``, ``classic``), built by tests/samples.py if needed."""
    from tests import samples

    disk = samples.sample_image(variant)
    return Sample(disk, samples.manifest(disk))


def _partitions(disk: Path) -> list[tuple[int, int]]:
    table = json.loads(runner.run(["sfdisk", "--json", os.fspath(disk)]).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return [(int(p["start"]) * sector, int(p["size"]) * sector) for p in table["partitions"]]


def _ls(spec: str, path: str) -> str:
    return runner.run(["debugfs", "-R", f"ls {path}", spec], check=False).stdout


def rootfs_from_disk(disk: Path, dest: Path) -> Path:
    """Write ``dest`` with the rootfs stage's partition method: the disk's root partition, with the
    boot partition's files (dumped with debugfs) merged into its /boot."""
    root = boot = None
    for offset, size in _partitions(disk):
        spec = f"{disk}?offset={offset}"
        top = _ls(spec, "/")
        if ("ostree" in top.split() and "deploy" in _ls(spec, "/ostree").split()) or "etc" in top.split():
            root = (offset, size)
        elif "loader" in top.split() or "loader.1" in top.split() or "loader.0" in top.split():
            boot = (offset, size)
    assert root is not None, f"no root partition in {disk}"
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        boot_tree = None
        if boot is not None:
            bootdir = Path(tmp) / "boot"
            bootdir.mkdir()
            runner.run(["debugfs", "-R", f"rdump / {bootdir}", f"{disk}?offset={boot[0]}"])
            shutil.rmtree(bootdir / "lost+found", ignore_errors=True)
            boot_tree = SourceTree(bootdir)
        rootfs_stage.from_partition(
            image=disk,
            image_format="raw",
            offset=root[0],
            length=root[1],
            boot=boot_tree,
            boot_limit=None,
            dest=dest,
            options=rootfs_stage.RootfsOptions(),
            workdir=Path(tmp),
            what=f"the root partition of {disk}",
        )
    return dest
