"""Stand-in OUTDIRs for the serve tests: a manifest like a build's, with real sizes and sha256."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from liveimg.manifest import sha256_file

KVER = "6.1.0-9-amd64"
OSTREE = "/ostree/boot.1/debian-atomic/0f3c/0"


def fake_build(
    out: Path,
    *,
    title: str = "Debian Atomic",
    efi: bool = False,
    efi_http: bool = False,
    cloud_init: bool = False,
    kernel_args: tuple[str, ...] = (),
    url: str | None = "http://pxe.example.com/live",
    mtime: float | None = None,
    live_bytes: int = 0,
) -> Path:
    """``out`` made as a build's OUTDIR (small random files; ``live_bytes`` for the live file if
    given); ``mtime`` sets its manifest's time."""
    out.mkdir(parents=True)
    boot: dict[str, Any] = {
        "kernel": f"vmlinuz-{KVER}",
        "initramfs": f"initramfs-{KVER}.img",
        "kver": KVER,
        "title": title,
        "ostree_arg": OSTREE,
        "image_args": ["console=tty0", "quiet"],
        "squashfs": "live-rootfs.squashfs.img",
        "seed_id": "x",
        "kernel_args": list(kernel_args),
        "keep_image_args": True,
        "cloud_init": cloud_init,
        "embedded": None,
        "efi": None,
    }
    files = [boot["kernel"], boot["initramfs"], boot["squashfs"], "pxelinux.cfg/default", "boot.ipxe"]
    if efi:
        boot["efi"] = {"grub": "grubx64.efi", "shim": "shimx64.efi", "configs": ["grub/grub.cfg", "grub.cfg"],
                       "http": efi_http, "source": "test"}  # fmt: skip
        files += ["grubx64.efi", "shimx64.efi", "grub/grub.cfg", "grub.cfg"]
    if cloud_init:
        files += ["cloud-init/meta-data", "cloud-init/user-data", "cloud-init/vendor-data"]
    artifacts = {}
    for rel in files:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = live_bytes if rel == boot["squashfs"] and live_bytes else 1000 + len(artifacts) * 37
        path.write_bytes(os.urandom(size))
        artifacts[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {
        "boot": boot,
        "kernel": {"file": boot["kernel"], "version": KVER},
        "initramfs": {"file": boot["initramfs"]},
        "rootfs": {"file": boot["squashfs"]},
        "artifacts": artifacts,
        "pxe": {"url": url, "pxe_dir": ""},
        "deployment": None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    if mtime is not None:
        os.utime(out / "manifest.json", (mtime, mtime))
    return out
