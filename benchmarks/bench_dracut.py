"""Benchmark of the dracut stage: where dracut runs, and how the initramfs is compressed.

Run from the repository root (it takes a few minutes; the appliance runs take longer):

    nice -n 10 .venv/bin/python -m benchmarks.bench_dracut --sample atomic [--appliance] [--appliance-xz]

It builds ``LiveOS/rootfs.img`` from the cached sample disk (as the rootfs stage does), copies
the deployment out with ``debugfs``, and measures, side by side in one run:

* dracut in the rootless sandbox, lorax's way (``--xz``: dracut compresses in the guest)
  and liveimg's way (``--no-compress``, then the host compresses);
* with ``--appliance``, liveimg's way in the libguestfs appliance (TCG here), and with
  ``--appliance-xz`` lorax's way there too (slow: minutes);
* host compression of the same uncompressed image with xz, zstd and gzip, each with all
  cores and with one, giving time and size.

The results are printed as a table and written as JSON (``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from liveimg import run as runner
from liveimg.dracut.appliance import run_dracut_in_appliance
from liveimg.dracut.compress import Compression, compress_initramfs
from liveimg.dracut.plan import LORAX_DEFAULT_ARGS, LORAX_FIXED_ARGS, DracutOptions, plan_dracut
from liveimg.dracut.sandbox import Bind, Tmpfs, check_sandbox_result, run_in_sandbox
from liveimg.dracut.tree import extract_tree, guest_mkdirs
from liveimg.fsview import GuestTree, HostFS
from tests.integration.sample_rootfs import find_sample, rootfs_from_disk

log = logging.getLogger("bench_dracut")


def _deployment(image: Path, os_name: str, variant: str) -> str:
    if variant != "atomic":
        return "/"
    base = f"/ostree/deploy/{os_name}/deploy"
    listing = runner.run(["debugfs", "-R", f"ls {base}", os.fspath(image)]).stdout
    names = sorted(set(re.findall(r"\b([0-9a-f]{64}\.\d+)\b(?!\.origin)", listing)))
    return f"{base}/{names[0]}"


def sandbox_dracut(tree: Path, boot: Path | None, argv: list[str], work: Path) -> tuple[float, Path]:
    """One dracut run in the sandbox with exactly ``argv``; its time and output file."""
    out = work / "out"
    vartmp = work / "var-tmp"
    for d in (out, vartmp):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    vartmp.chmod(0o1777)
    for needed in ("/var/roothome", "/sysroot/tmp"):
        guest_mkdirs(tree, needed)
    mounts: list[Bind | Tmpfs] = [Tmpfs("/run"), Bind(out, "/run/liveimg"), Bind(vartmp, "/var/tmp"),
                                  Tmpfs("/tmp", "mode=1777")]  # fmt: skip
    if boot is not None:
        mounts.append(Bind(boot, "/boot", readonly=True))
    result = run_in_sandbox(tree, argv, log_path=work / "dracut.log", mounts=mounts, timeout=7200)
    check_sandbox_result(result, argv, what="dracut")
    return result.seconds, out / "initramfs.img"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", default="atomic", help="sample variant in the cache (default: atomic)")
    parser.add_argument("--rootfs", type=Path, help="use this rootfs.img instead of one made from the sample")
    parser.add_argument("--deployment", help="with --rootfs: the deployment directory in it ('/' if classic)")
    parser.add_argument("--kver", help="with --rootfs: the kernel version")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp"), help="where to put the scratch files")
    parser.add_argument("--appliance", action="store_true", help="also run dracut in the libguestfs appliance")
    parser.add_argument("--appliance-xz", action="store_true", help="and lorax's --xz in the appliance (slow)")
    parser.add_argument("--codecs", default="xz,zstd,gzip,zstd:3",
                        help="host codecs to measure, each NAME or NAME:LEVEL (default: %(default)s)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    if args.rootfs:
        if not (args.deployment and args.kver):
            parser.error("--rootfs needs --deployment and --kver")
        source, kver = os.fspath(args.rootfs), args.kver
    else:
        sample = find_sample(args.sample)
        if sample is None:
            print(f"no {args.sample} sample in the cache", file=sys.stderr)
            return 2
        source, kver = os.fspath(sample.disk), sample.kver
    results: dict[str, Any] = {"sample": source, "kver": kver, "cpus": os.cpu_count(),
                               "loadavg_start": os.getloadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-dracut-", dir=args.work) as tmp:
        work = Path(tmp)
        started = time.monotonic()
        if args.rootfs:
            rootfs, deployment = args.rootfs, args.deployment
        else:
            rootfs = rootfs_from_disk(sample.disk, work / "rootfs.img")
            deployment = _deployment(rootfs, str(sample.meta.get("os_name")), args.sample)
        results["rootfs_seconds"] = time.monotonic() - started
        ostree = deployment != "/"
        tree = extract_tree(rootfs, deployment, work / "tree")
        results["extract_seconds"] = tree.seconds
        plan = plan_dracut(GuestTree(HostFS(tree.root)), kver=kver, ostree=ostree, options=DracutOptions(),
                           output="/run/liveimg/initramfs.img")  # fmt: skip
        modules = " ".join(plan.modules)
        lorax = [plan.argv[0], *LORAX_FIXED_ARGS, "--xz", "--add", modules, *LORAX_DEFAULT_ARGS,
                 "/run/liveimg/initramfs.img", kver]  # fmt: skip
        ours = list(plan.argv)
        results["lorax_argv"], results["liveimg_argv"] = lorax, ours

        seconds, out = sandbox_dracut(tree.root, tree.boot, lorax, work / "run-lorax")
        results["sandbox_dracut_xz"] = {"seconds": seconds, "bytes": out.stat().st_size}
        seconds, raw = sandbox_dracut(tree.root, tree.boot, ours, work / "run-ours")
        raw = raw.rename(work / "initramfs.cpio")
        results["sandbox_dracut_no_compress"] = {"seconds": seconds, "bytes": raw.stat().st_size}
        # What lorax's --debug (shell tracing of every dracut step) costs.
        seconds, out = sandbox_dracut(tree.root, tree.boot, [a for a in ours if a != "--debug"], work / "run-nodebug")
        results["sandbox_dracut_no_compress_no_debug"] = {"seconds": seconds, "bytes": out.stat().st_size}

        codecs: dict[str, Any] = {}
        for spec in args.codecs.split(","):
            name, _, level = spec.partition(":")
            codec = Compression(name)
            for threads in (0, 1):
                out = work / f"initramfs.{name}.{threads}"
                packed = compress_initramfs(raw, out, codec, threads=threads, level=int(level) if level else None)
                codecs[f"{spec} threads={threads or 'all'}"] = {"seconds": packed.seconds, "bytes": packed.size,
                                                                "command": packed.command}  # fmt: skip
                out.unlink()
        results["host_compression"] = codecs

        if args.appliance or args.appliance_xz:
            options = DracutOptions(compression=Compression.NONE)
            ran = run_dracut_in_appliance(rootfs, deployment, kver=kver, options=options, ostree=ostree,
                                          raw_output=work / "appl.cpio", log_path=work / "appl.log")  # fmt: skip
            results["appliance_dracut_no_compress"] = {"seconds": ran.seconds, "launch_seconds": ran.launch_seconds,
                                                       "bytes": (work / "appl.cpio").stat().st_size}  # fmt: skip
        if args.appliance_xz:
            ran = run_dracut_in_appliance(rootfs, deployment, kver=kver, options=DracutOptions(),
                                          ostree=ostree, raw_output=work / "initramfs.img",
                                          log_path=work / "appl-xz.log", command=lorax)  # fmt: skip
            results["appliance_dracut_xz"] = {"seconds": ran.seconds, "launch_seconds": ran.launch_seconds,
                                              "bytes": (work / "initramfs.img").stat().st_size}  # fmt: skip
    results["loadavg_end"] = os.getloadavg()

    print(f"\nsample {results['sample']} kernel {results['kver']}, {results['cpus']} CPUs, "
          f"load {results['loadavg_start'][0]:.1f} -> {results['loadavg_end'][0]:.1f}")  # fmt: skip
    print(f"rootfs.img from the disk: {results['rootfs_seconds']:.1f} s; deployment copied out: "
          f"{results['extract_seconds']:.1f} s")  # fmt: skip
    runs = ("sandbox_dracut_xz", "sandbox_dracut_no_compress", "sandbox_dracut_no_compress_no_debug",
            "appliance_dracut_no_compress", "appliance_dracut_xz")  # fmt: skip
    for key in runs:
        if key in results:
            r = results[key]
            print(f"{key:32} {r['seconds']:8.1f} s  {r['bytes'] / 2**20:8.1f} MiB")
    for key, r in results["host_compression"].items():
        print(f"host {key:27} {r['seconds']:8.1f} s  {r['bytes'] / 2**20:8.1f} MiB  ({r['command']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
