"""Stage 5, pxe: the boot configuration around the artifacts.

Always written: lorax's ``PXE_CONFIG`` (its template, with the ``<PXE_DIR>`` and ``<URL>``
placeholders left for the user, and ``ostree=`` on ostree images), so that tooling built
around livemedia-creator keeps working.  With a URL (where ``live-rootfs.squashfs.img``
will be served), ready configurations as well:

* ``pxelinux.cfg/default`` for BIOS PXE with pxelinux (kernel and initramfs over TFTP from
  ``pxe_dir``, ``IPAPPEND 2`` so that dracut brings up the interface that booted);
* ``boot.ipxe`` for iPXE (kernel and initramfs over HTTP from the same URL);
* ``grub.cfg`` for UEFI PXE and UEFI HTTP boot with GRUB (paths relative to the device
  GRUB booted from);

and, when asked, a cloud-init NoCloud seed (``cloud-init/meta-data``, ``user-data``,
``vendor-data``) with ``ds=nocloud-net;s=<URL>/cloud-init/`` on the command line.

The kernel command line of the ready configurations::

    root=live:<URL>/live-rootfs.squashfs.img rd.live.image ip=dhcp [ostree=...]
    [the image's own arguments, minus those naming its disks] [the user's arguments]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from liveimg.errors import InvalidOptions

SQUASHFS_NAME = "live-rootfs.squashfs.img"
PXE_CONFIG = "PXE_CONFIG"
#: x86's COMMAND_LINE_SIZE: a longer command line is cut off by the kernel.
MAX_CMDLINE = 2048

#: Arguments of the installed system that name its disks: the live system has none of them.
DISK_ARGS = frozenset(
    {
        "root",
        "rootflags",
        "rootfstype",
        "ostree",
        "resume",
        "rd.lvm.lv",
        "rd.lvm.vg",
        "rd.luks.uuid",
        "rd.luks.name",
        "rd.md.uuid",
        "rd.dm.uuid",
        "rd.auto",
        "BOOT_IMAGE",
        "initrd",
        "boot",
    }
)


def arg_key(arg: str) -> str:
    return arg.split("=", 1)[0]


def image_args(options: Sequence[str]) -> list[str]:
    """The installed system's kernel arguments that still make sense for a live boot."""
    return [a for a in options if arg_key(a) not in DISK_ARGS]


_URL = re.compile(r"^(https?|ftp|tftp|nfs4?)://[^\s]+$")


def check_url(url: str) -> str:
    """The base URL where the artifacts will be served, without a trailing slash."""
    if not _URL.match(url):
        raise InvalidOptions(f"invalid --url {url!r}", hint="give an http://, https://, ftp://, tftp:// or nfs:// URL")
    return url.rstrip("/")


@dataclass(frozen=True)
class CloudInitSeed:
    """A cloud-init NoCloud seed.  ``user_data`` (a whole ``#cloud-config`` text) wins over the fields."""

    hostname: str = "liveimg"
    instance_id: str | None = None
    ssh_authorized_keys: tuple[str, ...] = ()
    password: str | None = None  # for root; a value starting with "$" is taken as a crypt hash
    write_files: tuple[tuple[str, str], ...] = ()  # (path, content)
    runcmd: tuple[str, ...] = ()
    user_data: str | None = None

    def meta_data(self, seed: str) -> dict[str, str]:
        instance = self.instance_id or "liveimg-" + hashlib.sha256(f"{seed}\0{self.hostname}".encode()).hexdigest()[:16]
        return {"instance-id": instance, "local-hostname": self.hostname}

    def cloud_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"hostname": self.hostname, "preserve_hostname": False}
        if self.ssh_authorized_keys:
            config["ssh_authorized_keys"] = list(self.ssh_authorized_keys)
            config["users"] = ["default", {"name": "root", "ssh_authorized_keys": list(self.ssh_authorized_keys)}]
            config["disable_root"] = False
        if self.password is not None:
            kind = "hash" if self.password.startswith("$") else "text"
            config["chpasswd"] = {"expire": False, "users": [{"name": "root", "password": self.password, "type": kind}]}
            config["ssh_pwauth"] = True
        if self.write_files:
            config["write_files"] = [{"path": p, "content": c} for p, c in self.write_files]
        if self.runcmd:
            config["runcmd"] = list(self.runcmd)
        return config

    def user_data_text(self) -> str:
        if self.user_data is not None:
            if not self.user_data.startswith(("#cloud-config", "#!", "Content-Type:", "#include")):
                raise InvalidOptions(
                    "cloud-init user-data must start with #cloud-config, #!, #include or a MIME header"
                )
            if self.user_data.startswith("#cloud-config"):
                try:
                    yaml.safe_load(self.user_data)
                except yaml.YAMLError as exc:
                    raise InvalidOptions(f"cloud-init user-data is not valid YAML: {exc}") from exc
            return self.user_data
        return "#cloud-config\n" + yaml.safe_dump(self.cloud_config(), sort_keys=True, default_flow_style=False)


@dataclass(frozen=True)
class PxeOptions:
    """What the boot configuration says.  Without ``url`` only ``PXE_CONFIG`` is written."""

    url: str | None = None
    pxe_dir: str = ""
    kernel_args: tuple[str, ...] = ()
    keep_image_args: bool = True
    cloud_init: CloudInitSeed | None = None

    def __post_init__(self) -> None:
        if self.url is not None:
            object.__setattr__(self, "url", check_url(self.url))
        object.__setattr__(self, "pxe_dir", self.pxe_dir.rstrip("/"))
        for arg in self.kernel_args:
            if not arg or (any(c.isspace() for c in arg) and '"' not in arg):
                raise InvalidOptions(f"invalid kernel argument {arg!r}: one argument per --kernel-arg, no spaces")


@dataclass(frozen=True)
class LiveBoot:
    """What the earlier stages produced, as the pxe stage needs it."""

    kernel: str  # file name in the output directory, e.g. vmlinuz-<kver>
    initramfs: str  # e.g. initramfs-<kver>.img
    kver: str
    title: str
    ostree_arg: str | None = None
    image_args: tuple[str, ...] = ()
    squashfs: str = SQUASHFS_NAME
    seed_id: str = ""  # something that identifies the input, for a stable cloud-init instance id


@dataclass(frozen=True)
class PxeResult:
    files: tuple[Path, ...]
    kernel_args: tuple[str, ...]  # the full command line of the ready configurations (root= with the URL)
    lorax_args: tuple[str, ...]  # what follows the placeholder root= in PXE_CONFIG
    extra: Mapping[str, Any] = field(default_factory=dict)


def kernel_args(boot: LiveBoot, options: PxeOptions, url: str) -> list[str]:
    """The live command line, ``root=live:`` first, each argument once (the user's win)."""
    args = [f"root=live:{url}/{boot.squashfs}", "rd.live.image", "ip=dhcp"]
    if boot.ostree_arg:
        args.append(f"ostree={boot.ostree_arg}")
    if options.keep_image_args:
        args += image_args(boot.image_args)
    if options.cloud_init is not None:
        args.append(f"ds=nocloud-net;s={url}/cloud-init/")
    user_keys = {arg_key(a) for a in options.kernel_args}
    # An argument the user gives replaces ours with the same key (e.g. ip=, console=).
    args = [a for a in args if arg_key(a) not in user_keys or arg_key(a) == "root"] + list(options.kernel_args)
    deduped: list[str] = []
    for arg in args:
        if arg not in deduped:
            deduped.append(arg)
    if len(" ".join(deduped)) > MAX_CMDLINE:
        raise InvalidOptions(f"the kernel command line is longer than {MAX_CMDLINE} bytes")
    return deduped


def lorax_pxe_config(boot: LiveBoot, options: PxeOptions) -> tuple[str, list[str]]:
    """lorax's PXE_CONFIG text (its template, placeholders kept) and the arguments after root=."""
    add = [f"ostree={boot.ostree_arg}"] if boot.ostree_arg else []
    add += list(options.kernel_args)
    text = (
        "# PXE configuration template generated by liveimg (livemedia-creator compatible)\n"
        f"kernel <PXE_DIR>/{boot.kernel}\n"
        f"append initrd=<PXE_DIR>/{boot.initramfs} root=live:<URL>/{boot.squashfs} {' '.join(add)}\n"
    )
    return text, add


def _path(pxe_dir: str, name: str) -> str:
    return f"{pxe_dir}/{name}" if pxe_dir else name


def pxelinux_config(boot: LiveBoot, args: Sequence[str], pxe_dir: str) -> str:
    return (
        "# pxelinux configuration generated by liveimg\n"
        "DEFAULT live\n"
        "PROMPT 0\n"
        "TIMEOUT 50\n"
        "LABEL live\n"
        f"  MENU LABEL {boot.title} (live)\n"
        f"  KERNEL {_path(pxe_dir, boot.kernel)}\n"
        f"  APPEND initrd={_path(pxe_dir, boot.initramfs)} {' '.join(args)}\n"
        "  IPAPPEND 2\n"
    )


def ipxe_script(boot: LiveBoot, args: Sequence[str], url: str) -> str:
    # initrd= names the initramfs for kernels booted through EFI stubs; harmless on BIOS.
    return (
        "#!ipxe\n"
        "# iPXE script generated by liveimg\n"
        f"echo Booting {boot.title} (live)\n"
        f"kernel {url}/{boot.kernel} initrd={boot.initramfs} {' '.join(args)}\n"
        f"initrd {url}/{boot.initramfs}\n"
        "boot\n"
    )


def _grub_quote(arg: str) -> str:
    # GRUB's script language splits on ; and expands $; single quotes keep them literal.
    if re.fullmatch(r"[A-Za-z0-9_.,:/=@%+-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def grub_config(boot: LiveBoot, args: Sequence[str], pxe_dir: str) -> str:
    prefix = f"/{pxe_dir.lstrip('/')}" if pxe_dir else ""
    title = boot.title.replace("'", "")
    return (
        "# GRUB configuration generated by liveimg (UEFI PXE and HTTP boot)\n"
        "set default=0\n"
        "set timeout=5\n"
        f"menuentry '{title} (live)' {{\n"
        f"    linux {prefix}/{boot.kernel} {' '.join(_grub_quote(a) for a in args)}\n"
        f"    initrd {prefix}/{boot.initramfs}\n"
        "}\n"
    )


def write_pxe(outdir: Path, boot: LiveBoot, options: PxeOptions) -> PxeResult:
    """Write the boot configuration files into ``outdir`` (which holds the artifacts)."""
    files: list[Path] = []

    def write(rel: str, text: str) -> None:
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        files.append(path)

    text, lorax_args = lorax_pxe_config(boot, options)
    write(PXE_CONFIG, text)
    args: list[str] = []
    if options.url is not None:
        args = kernel_args(boot, options, options.url)
        write("pxelinux.cfg/default", pxelinux_config(boot, args, options.pxe_dir))
        write("boot.ipxe", ipxe_script(boot, args, options.url))
        write("grub.cfg", grub_config(boot, args, options.pxe_dir))
    if options.cloud_init is not None:
        seed = options.cloud_init
        write("cloud-init/meta-data", yaml.safe_dump(seed.meta_data(boot.seed_id), sort_keys=True))
        write("cloud-init/user-data", seed.user_data_text())
        write("cloud-init/vendor-data", "")  # NoCloud asks for it; an empty file avoids a 404
    return PxeResult(files=tuple(files), kernel_args=tuple(args), lorax_args=tuple(lorax_args))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(outdir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` (keys sorted, so that equal builds give equal files)."""
    path = outdir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
