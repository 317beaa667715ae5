#!/usr/bin/python3
"""The ``atomic-iscsi`` sample: the ``atomic`` sample's system plus what the post's live host has.

That is cloud-init (its NoCloud datasource only, and only the modules a liveimg seed uses, so
that a first boot under TCG stays short), an iSCSI initiator (open-iscsi) and a container engine
(podman) from Debian 12; LVM is in every sample already.  The deployment, disk layout, kernel
arguments and boot marker are the ``atomic`` sample's (:func:`sample_image.build_atomic`).

It lives apart from ``sample_image.py`` on purpose: the other samples' cache key is the sha256 of
``sample_image.py`` and ``make-sample-image`` (``sample_image.builder_key``), and a variant added
there would rebuild them all.  This one is cached in the same key directory, as
``atomic-iscsi-<key>.raw``, ``<key>`` covering that builder key and this file; its packages are
installed once into a copy of the base system, kept as ``<cache>/layers/<layer key>.tar.zst``,
keyed by the base system's key and the install step (:func:`layer_key`), so a change to the
rest of the builders does not download and install them again.

Usage (as root): ``scripts/sample_iscsi.py [--cache-dir DIR] [--force]``; the image's path is the
last line on stdout, its manifest beside it (``.json``), as for ``make-sample-image``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sample_image as si  # noqa: E402

VARIANT = "atomic-iscsi"
#: Installed over the base system (lvm2 is in it already), without recommends.
PACKAGES = ("cloud-init", "open-iscsi", "podman")

#: cloud-init, trimmed for a live host seeded over the network: one datasource (ds-identify and
#: the datasource search try no other), no network configuration (the initramfs brought the
#: network up with ip=dhcp, and the live system keeps it), and only the modules that a liveimg
#: seed uses (hostname, users, password, files, commands): each module left out is work a
#: first boot under TCG does not do.  No ssh module: the sample has no ssh server.
CLOUD_CFG = """\
# liveimg sample (atomic-iscsi): cloud-init for a NoCloud seed fetched over the network.
datasource_list: [ NoCloud ]
network:
  config: disabled
cloud_init_modules:
  - write_files
  - set_hostname
  - update_hostname
  - update_etc_hosts
  - users_groups
cloud_config_modules:
  - set_passwords
  - runcmd
cloud_final_modules:
  - scripts_user
  - final_message
"""
CLOUD_CFG_PATH = "etc/cloud/cloud.cfg.d/99-liveimg-sample.cfg"


def install_packages(r: si.Runner, tree: Path, apt_cache: Path) -> None:
    """Install :data:`PACKAGES` and :data:`CLOUD_CFG` into the unpacked base system ``tree``."""
    shutil.copy2("/etc/resolv.conf", tree / "etc/resolv.conf")
    apt = "DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends -o DPkg::Lock::Timeout=600"
    r.in_chroot(tree, f"apt-get -q update\n{apt} install {' '.join(PACKAGES)}\n", apt_cache=apt_cache)
    (tree / "etc/resolv.conf").unlink(missing_ok=True)
    cfg = tree / CLOUD_CFG_PATH
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(CLOUD_CFG)
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for entry in (tree / junk).glob("*"):
            if entry.is_file() and entry.name != "lock":
                entry.unlink()
    for entry in (tree / "var/cache/apt").glob("*.bin"):
        entry.unlink()


def layer_key() -> str:
    """Key of the base system with the packages: the base's key and how they are installed."""
    recipe = [si.base_key(), repr(PACKAGES), CLOUD_CFG, CLOUD_CFG_PATH, inspect.getsource(install_packages)]
    recipe.append(inspect.getsource(si.Runner.in_chroot))
    return hashlib.sha256("\0".join(recipe).encode()).hexdigest()[:16]


def image_key() -> str:
    """Key of the image: the other samples' builder and this file."""
    digest = hashlib.sha256(si.builder_key().encode() + b"\0" + Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def ensure_layer(cache_root: Path) -> Path:
    """The base system with :data:`PACKAGES` (``<cache>/layers/<key>.tar.zst``), made first if needed."""
    base = si.ensure_base(cache_root)
    key = layer_key()
    layers = cache_root / "layers"
    dest = layers / f"{key}.tar.zst"
    with si.flocked(layers / f".{key}.lock"):
        if dest.exists():
            return dest
        logfile = layers / f"{key}.log"
        with open(logfile, "w") as log, si.work_dir(layers, "layer") as work:
            r = si.Runner(log)
            started = time.monotonic()
            try:
                tree = work / "tree"
                r.note("unpacking the base tree")
                si.unpack_base(r, base, tree)
                r.note(f"installing {' '.join(PACKAGES)}")
                with si.flocked(cache_root / "debs" / ".lock"):
                    install_packages(r, tree, cache_root / "debs")
                r.note("packing the tree")
                with si.output_file(dest) as tmp:
                    r.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--zstd", "-C", tree, "-cf",
                           tmp, "."])  # fmt: skip
            except BaseException:
                si._tail_log(logfile)
                raise
            r.note(f"packages installed in {time.monotonic() - started:.0f} s: {dest}")
    for old in layers.glob("*.tar.zst"):
        if old != dest:
            with si.flocked(layers / f".{old.name.split('.')[0]}.lock"):
                old.unlink(missing_ok=True)
    return dest


def ensure_image(keydir: Path, cache_root: Path, force: bool = False) -> Path:
    """The cached ``atomic-iscsi`` sample (raw), built first if needed."""
    dest = keydir / f"{VARIANT}-{image_key()}.raw"
    with si.flocked(keydir / f".{VARIANT}.raw.lock"):
        for old in keydir.glob(f"{VARIANT}-*.raw*"):
            if not old.name.startswith(dest.name):
                old.unlink(missing_ok=True)  # an earlier version of this builder's
        if dest.exists() and dest.with_name(dest.name + ".json").exists() and not force:
            return dest
        layer = ensure_layer(cache_root)
        logfile = keydir / f"{VARIANT}.raw.log"
        with open(logfile, "w") as log, si.work_dir(keydir, VARIANT) as work, si.output_file(dest) as tmp:
            r = si.Runner(log)
            started = time.monotonic()
            try:
                m = si.build_atomic(r, VARIANT, layer, tmp, work)
            except BaseException:
                si._tail_log(logfile)
                raise
            m.builder_key = f"{keydir.name}/{image_key()}"
            m.build_seconds = round(time.monotonic() - started, 1)
            manifest = asdict(m)
            manifest["packages"] = list(PACKAGES)
            manifest["cloud_cfg"] = "/" + CLOUD_CFG_PATH
            si._finish(tmp, dest, manifest)
            r.note(f"{VARIANT} built in {m.build_seconds:.0f} s")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sample_iscsi.py", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: ~/.cache/liveimg/samples")
    parser.add_argument("--force", action="store_true", help="rebuild the image even if cached (not the layers)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("sample_iscsi.py: must run as root (debootstrap, chroot, file ownership)", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.nice(10)  # a background chore on a shared machine
    cache_root = (args.cache_dir or si.default_cache_dir()).absolute()
    key = si.builder_key()
    keydir = cache_root / key
    keydir.mkdir(parents=True, exist_ok=True)
    for sub in ("debs", "base", "layers"):
        (cache_root / sub).mkdir(exist_ok=True)
    with si.flocked(keydir / ".inuse", shared=True):
        si.prune(cache_root, key)
        try:
            path = ensure_image(keydir, cache_root, force=args.force)
        except si.BuildError as exc:
            print(f"sample_iscsi.py: {exc}", file=sys.stderr)
            return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
