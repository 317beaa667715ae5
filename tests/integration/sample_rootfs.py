"""Stand-in for the rootfs stage in the dracut tests: ``LiveOS/rootfs.img`` made from a sample disk.

The rootfs stage (liveimg/rootfs.py) produces an ext4 image of the physical root with the boot
partition's files merged into its /boot.  Until it is merged, the integration tests make the same
thing from a sample disk, rootless and without mounting: the root partition's bytes are copied
into a file (sparse), the boot partition is dumped with ``debugfs rdump`` and written into the
copy's /boot with ``debugfs -w``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from liveimg import run as runner

SAMPLES = Path(os.environ.get("LIVEIMG_SAMPLES", Path.home() / ".cache" / "liveimg" / "samples"))


@dataclass(frozen=True)
class Sample:
    disk: Path
    meta: dict[str, object]

    @property
    def kver(self) -> str:
        return str(self.meta["kernel_version"])


def find_sample(variant: str) -> Sample | None:
    """The sample disk ``variant`` (``atomic``, ``classic``): from tests/samples.py (which builds it
    if needed) once that is merged, else the newest complete one in the cache, else None."""
    try:
        from tests import samples  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        pass
    else:
        disk = samples.sample_image(variant)
        return Sample(disk, samples.manifest(disk))
    found = []
    for meta_path in SAMPLES.glob(f"*/{variant}.raw.json"):
        disk = meta_path.with_name(f"{variant}.raw")
        if disk.is_file():
            found.append((meta_path.stat().st_mtime, Sample(disk, json.loads(meta_path.read_text()))))
    return max(found, key=lambda x: x[0])[1] if found else None


def _partitions(disk: Path) -> list[tuple[int, int]]:
    table = json.loads(runner.run(["sfdisk", "--json", os.fspath(disk)]).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return [(int(p["start"]) * sector, int(p["size"]) * sector) for p in table["partitions"]]


def _ls(spec: str, path: str) -> str:
    return runner.run(["debugfs", "-R", f"ls {path}", spec], check=False).stdout


def rootfs_from_disk(disk: Path, dest: Path) -> Path:
    """Write ``dest`` (an ext4 image file): the disk's root partition with its boot partition in /boot."""
    root = boot = None
    for offset, size in _partitions(disk):
        spec = f"{disk}?offset={offset}"
        top = _ls(spec, "/")
        if ("ostree" in top.split() and "deploy" in _ls(spec, "/ostree").split()) or "etc" in top.split():
            root = (offset, size)
        elif "loader" in top.split() or "loader.1" in top.split() or "loader.0" in top.split():
            boot = (offset, size)
    assert root is not None, f"no root partition in {disk}"
    mib = 1 << 20
    assert root[0] % mib == 0 and root[1] % mib == 0
    runner.run(
        [
            "dd",
            f"if={disk}",
            f"of={dest}",
            "bs=1M",
            f"skip={root[0] // mib}",
            f"count={root[1] // mib}",
            "conv=sparse",
            "status=none",
        ]
    )
    if boot is None:
        return dest
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        bootdir = Path(tmp) / "boot"
        bootdir.mkdir()
        runner.run(["debugfs", "-R", f"rdump / {bootdir}", f"{disk}?offset={boot[0]}"])
        commands = []
        for dirpath, dirnames, filenames in os.walk(bootdir):
            rel = Path(dirpath).relative_to(bootdir)
            if str(rel) == ".":
                dirnames[:] = [d for d in dirnames if d != "lost+found"]
            guest = "/boot" + ("" if str(rel) == "." else f"/{rel}")
            commands.append(f'cd "{guest}"')
            for name in sorted(dirnames + filenames):
                host = Path(dirpath) / name
                if host.is_symlink():
                    commands.append(f'symlink "{name}" "{os.readlink(host)}"')
                elif host.is_dir():
                    commands.append(f'mkdir "{name}"')
                else:
                    commands.append(f'write "{host}" "{name}"')
        script = Path(tmp) / "debugfs.cmds"
        script.write_text("\n".join(commands) + "\n")
        result = runner.run(["debugfs", "-w", "-f", os.fspath(script), os.fspath(dest)])
        errors = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("debugfs ")]
        assert not errors, errors
    return dest
