"""What lorax's ``livemedia-creator --make-ostree-live`` does after the install, as root, for comparison.

This script reproduces lorax's post-install stage (../shared/docs/lorax-reference.md §1,
§2, §3) with host tools, step for step, on a disk image, so that ``benchmarks/`` can time it
side by side with ``liveimg build`` on the same machine in the same run:

1. ``losetup --partscan`` (lorax: ``kpartx -a``; ``partx -a`` where the kernel does not
   parse the table itself and has no device-mapper); mount each partition until one has
   ``ostree/deploy`` (or ``etc/passwd``); mount the one with ``loader*`` over its ``/boot``.
2. Size as lorax estimates it (file sizes rounded to 4 KiB, plus 256 blocks; hard links
   counted once per name), or the partition's size (``--keep-size``).
3. ``mkfs.ext4 -L LiveOS -b 4096 -m 0`` on a sparse file through a loop device, ``cp -a``.
4. ``fsck.ext4 -y -f -E discard``.
5. ``mksquashfs <dir> live-rootfs.squashfs.img -comp xz -Xbcj x86`` (lorax passes nothing
   else: mksquashfs's default 128 KiB blocks and all CPUs).
6. The initramfs: loop-mount rootfs.img, bind its ``/boot`` into the deployment, mount
   ``/proc`` and ``/dev``, and ``chroot`` into the deployment to run dracut with lorax's
   arguments (``--xz``: compressed by dracut, inside).  lorax's module list includes
   ``dmsquash-live-ntfs``, which fails on a guest without ntfs-3g (such as the Debian
   sample); like liveimg, this script leaves out the modules the guest lacks and says so.

It needs root, loop devices and mounts: exactly what liveimg avoids.  It never modifies the
input (partitions are mounted read-only).  Output: a JSON object with each step's wall
time and the peak RSS of the programs it ran, on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LORAX_MODULES = ["livenet", "dmsquash-live", "dmsquash-live-ntfs", "convertfs", "pollcdrom", "qemu", "qemu-net"]


def sh(*argv: str | os.PathLike[str], check: bool = True, capture: bool = False) -> str:
    result = subprocess.run([os.fspath(a) for a in argv], check=check, text=True,
                            stdout=subprocess.PIPE if capture else None)  # fmt: skip
    return result.stdout if capture else ""


@contextlib.contextmanager
def mounted(device: str | os.PathLike[str], where: Path, *opts: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    sh("mount", *opts, device, where)
    try:
        yield where
    finally:
        sh("umount", where, check=False)


@contextlib.contextmanager
def loop(image: Path, *, partscan: bool = False, readonly: bool = False) -> Iterator[str]:
    args = ["losetup", "--find", "--show"] + (["--partscan"] if partscan else []) + (["-r"] if readonly else [])
    dev = sh(*args, image, capture=True).strip()
    try:
        sh("udevadm", "settle", check=False)
        if partscan and not list(Path("/dev").glob(Path(dev).name + "p*")):
            # A kernel without the partition-table parsers (and without device-mapper, which kpartx
            # needs) still accepts partitions from user space: partx reads the table, as kpartx does.
            sh("partx", "-a", dev, check=False)
        yield dev
    finally:
        if partscan:
            sh("partx", "-d", dev, check=False)
        sh("losetup", "-d", dev, check=False)


def estimate_size(root: Path) -> int:
    """lorax's estimate_size(): every name's size rounded to 4 KiB, plus 256 blocks (imgutils.py:331-352)."""
    total = 256 * 4096
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            size = os.lstat(os.path.join(dirpath, name)).st_size
            total += max(4096, -(-size // 4096) * 4096)
    return total


class Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        print(f"lorax-way: {name} ...", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - started, 2)


def guest_has_module(tree: Path, name: str) -> bool:
    mods = tree / "usr/lib/dracut/modules.d"
    if not any(p.name[2:] == name for p in mods.iterdir()):
        return False
    return not (name == "dmsquash-live-ntfs" and not any((tree / d / "ntfs-3g").exists() for d in ("usr/bin", "bin")))


def run(
    image: Path, out: Path, *, keep_size: bool, bcj: str, compression: str = "xz", dracut_compress: str = "xz"
) -> dict[str, object]:
    timer = Timer()
    out.mkdir(parents=True, exist_ok=False)
    work = Path(tempfile.mkdtemp(prefix="lorax-way-", dir=out))
    squashfs_root = work / "squashfs_root"
    (squashfs_root / "LiveOS").mkdir(parents=True)
    rootfs = squashfs_root / "LiveOS/rootfs.img"
    mnt = work / "mnt"
    sys_root = ""
    left_out: list[str] = []
    with loop(image, partscan=True, readonly=True) as disk:
        parts = sorted(str(p) for p in Path("/dev").glob(Path(disk).name + "p*"))
        with timer.step("find partitions"):
            root_dev = boot_dev = None
            root_size = 0
            for part in parts:
                probe = work / "probe"
                try:
                    with mounted(part, probe, "-o", "ro"):
                        if (probe / "ostree/deploy").is_dir() or (probe / "etc/passwd").is_file():
                            root_dev = part
                            root_size = int(sh("blockdev", "--getsize64", part, capture=True))
                        elif any((probe / n).exists() for n in ("loader", "loader.0", "loader.1")):
                            boot_dev = part
                except subprocess.CalledProcessError:
                    continue
            if root_dev is None:
                raise SystemExit("lorax-way: no root partition found (lorax would fail silently here)")
        with contextlib.ExitStack() as stack:
            root_mnt = stack.enter_context(mounted(root_dev, work / "root", "-o", "ro"))
            if boot_dev is not None:
                stack.enter_context(mounted(boot_dev, root_mnt / "boot", "-o", "ro"))
            deploys = sorted(root_mnt.glob("ostree/boot.?/*/*/0"))
            sys_root = str(deploys[0].relative_to(root_mnt)) if deploys else ""
            with timer.step("estimate size"):
                size = root_size if keep_size else estimate_size(root_mnt)
            with timer.step("mkfs + cp -a"):
                with open(rootfs, "wb") as f:
                    f.truncate(size)
                with loop(rootfs) as dev:
                    sh("mkfs.ext4", "-q", "-L", "LiveOS", "-b", "4096", "-m", "0", dev)
                    with mounted(dev, mnt):
                        sh("cp", "-a", f"{root_mnt}/.", f"{mnt}/")
                sh("sync")
    with timer.step("fsck -E discard"):
        rc = subprocess.run(["fsck.ext4", "-y", "-f", "-E", "discard", rootfs], check=False).returncode
        if rc not in (0, 1):
            raise SystemExit(f"lorax-way: fsck.ext4 exited {rc}")
    with timer.step("mksquashfs"):
        squash = out / "live-rootfs.squashfs.img"
        # lorax's squashfs_args(): BCJ only with xz.
        args = ["-comp", compression] + (["-Xbcj", bcj] if bcj and compression == "xz" else [])
        sh("mksquashfs", squashfs_root, squash, *args, "-no-progress")
    with timer.step("dracut"), loop(rootfs) as dev, mounted(dev, mnt):
        deploy = (mnt / sys_root).resolve() if sys_root else mnt
        with contextlib.ExitStack() as stack:
            if sys_root:
                stack.enter_context(mounted(mnt / "boot", deploy / "boot", "--bind"))
                for d in ("var/tmp", "var/roothome", "sysroot/tmp"):
                    (deploy / d).mkdir(parents=True, exist_ok=True)
            stack.enter_context(mounted("proc", deploy / "proc", "-t", "proc"))
            stack.enter_context(mounted("devtmpfs", deploy / "dev", "-t", "devtmpfs"))
            (deploy / "results").mkdir(exist_ok=True)
            stack.enter_context(mounted(out, deploy / "results", "--bind"))
            kdirs = sorted((deploy / "boot/ostree").glob("*")) if sys_root else [deploy / "boot"]
            kernel = sorted(kdirs[0].glob("vmlinuz-*"))[0]
            kver = kernel.name.removeprefix("vmlinuz-")
            modules = [m for m in LORAX_MODULES if guest_has_module(deploy, m)]
            left_out = [m for m in LORAX_MODULES if m not in modules]
            if sys_root:
                modules.append("ostree")
            sh("chroot", deploy, "dracut", "--nomdadmconf", "--nolvmconf", f"--{dracut_compress}",
               "--add", " ".join(modules), "--no-hostonly", "--debug", "--no-early-microcode",
               f"/results/initramfs-{kver}.img", kver, check=True)  # fmt: skip
            shutil.copy2(kernel, out / kernel.name)
    shutil.rmtree(work)
    (out / "PXE_CONFIG").write_text(
        "# PXE configuration template generated by livemedia-creator\n"
        f"kernel <PXE_DIR>/vmlinuz-{kver}\n"
        f"append initrd=<PXE_DIR>/initramfs-{kver}.img root=live:<URL>/live-rootfs.squashfs.img "
        + (f"ostree=/{sys_root}" if sys_root else "")
        + "\n"
    )
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "steps": timer.steps,
        "total": round(sum(timer.steps.values()), 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "rootfs_size": size,
        "left_out": left_out,
        "artifacts": {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--keep-size", action="store_true", help="lorax's --live-rootfs-keep-size")
    parser.add_argument("--bcj", default="x86", help="BCJ filter (lorax: the HOST's; empty for none)")
    parser.add_argument("--compression", default="xz", help="lorax's --compression for mksquashfs (default xz)")
    parser.add_argument("--dracut-compress", default="xz",
                        help="dracut's compressor flag (lorax: --xz; others only for smoke runs)")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("lorax-way: must run as root (loop devices and mounts), like livemedia-creator")
    result = run(args.image, args.output, keep_size=args.keep_size, bcj=args.bcj, compression=args.compression,
                 dracut_compress=args.dracut_compress)  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
