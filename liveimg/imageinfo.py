"""The description of an input image, and the pure logic that derives it from filesystem views.

:mod:`liveimg.guest` finds the partitions and filesystems (libguestfs) and hands each one to
this module as a :class:`~liveimg.fsview.GuestTree`; everything else -- which filesystem is the
physical root, which is ``/boot``, the ostree deployments, the kernels, the os-release and the
architecture -- is decided here, without libguestfs, so that it runs the same over a host
directory (unit tests, host-side fast paths).

Roles (compare lorax, which mounts every partition until one has ``/etc/passwd`` or
``ostree/deploy`` and takes the first partition with ``loader.0`` as ``/boot``):

* physical root: has ``/ostree/deploy`` (an ostree sysroot; preferred) or ``/etc/os-release``
  (a classic system);
* boot: another filesystem with ``loader``, ``loader.0`` or ``loader.1`` (lorax checks only
  ``loader.0``), or the one the classic root's ``/etc/fstab`` mounts on ``/boot``; None when
  ``/boot`` is a directory of the root;
* ESP: a FAT filesystem with the EFI system partition type (or an ``/EFI`` directory).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.fsview import GuestTree
from liveimg.kernels import Kernel, KernelNotFound, NoKernel, find_kernels, select_kernel
from liveimg.osinfo import detect_arch, kver_arch, read_os_release
from liveimg.ostree.deployments import Deployment, list_deployments, select_deployment

log = logging.getLogger(__name__)

ESP_GPT_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ESP_MBR_TYPE = "0xef"
FAT_TYPES = ("vfat", "msdos", "fat", "fat12", "fat16", "fat32")


class NotADiskImage(InvalidImage):
    """The input is not a disk or filesystem image (a text file, an empty file, ...)."""


class NoRootFilesystem(InvalidImage):
    """No filesystem of the image is a physical root (the message says what was looked for where)."""


class UnreadableFilesystem(InvalidImage):
    """A filesystem the image needs cannot be read (corrupt, or of an unsupported kind)."""


__all__ = [
    "Deployment",
    "ImageInfo",
    "Kernel",
    "KernelNotFound",
    "NoKernel",
    "NoRootFilesystem",
    "NotADiskImage",
    "Partition",
    "Probe",
    "RootDescription",
    "UnreadableFilesystem",
    "choose_roles",
    "describe_root",
    "probe_tree",
]


@dataclass(frozen=True)
class Partition:
    """A filesystem or partition of the image.

    ``device`` is its libguestfs name (``/dev/sda2``, ``/dev/vg/root``, ``btrfsvol:/dev/sda2/root``,
    ``/dev/sda`` for an unpartitioned image).  For plain partitions of the disk (and for the whole
    disk of an unpartitioned image) ``offset`` and ``length`` are exact byte positions in the
    disk's virtual address space (what a host tool reading a raw image at ``offset`` sees) and
    ``number`` the partition number; they are None for LVM logical volumes and btrfs
    subvolumes.  ``parttype`` is the GPT type GUID or the MBR type (``0x83``).  ``lvm`` marks a
    logical volume, ``subvolume`` names a btrfs subvolume.
    """

    device: str
    fstype: str | None
    size: int
    label: str | None = None
    uuid: str | None = None
    number: int | None = None
    offset: int | None = None
    length: int | None = None
    parttype: str | None = None
    partuuid: str | None = None
    partlabel: str | None = None
    lvm: bool = False
    subvolume: str | None = None

    @property
    def is_esp_type(self) -> bool:
        return (self.parttype or "").lower() in (ESP_GPT_TYPE, ESP_MBR_TYPE)


@dataclass(frozen=True)
class Probe:
    """What the top of one filesystem holds."""

    ostree_root: bool
    classic_root: bool
    loader: bool
    boot_kernels: bool
    efi: bool

    @property
    def root(self) -> bool:
        return self.ostree_root or self.classic_root


def probe_tree(tree: GuestTree) -> Probe:
    """Look for the markers of each role at the top of a filesystem."""
    ostree_root = tree.is_dir("/ostree/deploy")
    classic_root = not ostree_root and tree.is_file("/etc/os-release")
    loader = any(tree.lexists(name) for name in ("/loader", "/loader.0", "/loader.1"))
    boot_kernels = any(n.startswith(("vmlinuz-", "vmlinux-")) for n in tree.listdir("/"))
    efi = tree.is_dir("/EFI")
    return Probe(ostree_root, classic_root, loader, boot_kernels, efi)


@dataclass(frozen=True)
class Roles:
    root: Partition
    root_probe: Probe
    boot: Partition | None
    esp: Partition | None
    warnings: tuple[str, ...] = ()


def _fstab_boot_spec(root: GuestTree) -> str | None:
    """The device spec ``/etc/fstab`` of a classic root mounts on ``/boot``, if any."""
    if not root.is_file("/etc/fstab"):
        return None
    try:
        text = root.read_text("/etc/fstab", limit=1 << 20)
    except InvalidImage:
        return None
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and posixpath.normpath(fields[1]) == "/boot":
            return fields[0]
    return None


def _matches(spec: str, part: Partition) -> bool:
    key, _, value = spec.partition("=")
    value = value.strip("\"'")
    checks = {
        "UUID": part.uuid,
        "LABEL": part.label,
        "PARTUUID": part.partuuid,
        "PARTLABEL": part.partlabel,
    }
    if key in checks and value:
        got = checks[key]
        return got is not None and got.lower() == value.lower()
    return False


def choose_roles(
    image: str,
    probes: Sequence[tuple[Partition, Probe, GuestTree]],
    failures: Sequence[tuple[Partition, str]],
    *,
    looked_at: Sequence[Partition],
) -> Roles:
    """Decide the physical root, the boot filesystem and the ESP among the probed filesystems.

    ``failures`` are filesystems that could not be read (mount errors): if no root is found
    among the others, the error is :class:`UnreadableFilesystem` naming them, since the root is
    probably one of them.
    """
    warnings: list[str] = []
    roots = [p for p in probes if p[1].ostree_root] or [p for p in probes if p[1].classic_root]
    if not roots:
        if failures:
            what = "; ".join(f"{part.device} ({part.fstype}): {why}" for part, why in failures)
            raise UnreadableFilesystem(
                f"{image}: no root filesystem among those readable, and some cannot be read: {what}",
                hint="is the image corrupt? fsck a copy of it",
            )
        seen = ", ".join(f"{p.device} ({p.fstype or 'no filesystem'})" for p in looked_at) or "none found"
        hint = "is this an installed system's disk image?"
        if any(p.fstype == "crypto_LUKS" for p in looked_at):
            hint = "encrypted (LUKS) filesystems are not supported: use an unencrypted image"
        raise NoRootFilesystem(
            f"{image}: no root filesystem: looked for /ostree/deploy or /etc/os-release on {seen}", hint=hint
        )
    root, root_probe, root_tree = roots[0]
    if len(roots) > 1:
        others = ", ".join(p[0].device for p in roots[1:])
        warnings.append(f"several root filesystems; using {root.device}, ignoring {others}")
    if failures:
        warnings.append("unreadable filesystems: " + "; ".join(f"{p.device}: {why}" for p, why in failures))

    others_ = [p for p in probes if p[0].device != root.device and not _same_btrfs(p[0], root)]
    boot: Partition | None = None
    spec = _fstab_boot_spec(root_tree) if root_probe.classic_root else None
    if spec is not None:
        matched = [p for p in others_ if _matches(spec, p[0])]
        if matched:
            boot = matched[0][0]
        elif not spec.startswith("/dev/"):
            warnings.append(f"/etc/fstab mounts {spec} on /boot, but no filesystem of the image matches it")
    if boot is None:
        loaders = [p for p in others_ if p[1].loader and p[0].fstype not in FAT_TYPES]
        loaders = loaders or [p for p in others_ if p[1].loader] or [p for p in others_ if p[1].boot_kernels]
        if _boot_has_content(root_tree):
            # /boot is a directory of the root (a separate /boot leaves an empty mount point)
            if loaders:
                warnings.append(
                    f"/boot of {root.device} is not empty: using it, not " + ", ".join(p[0].device for p in loaders)
                )
        elif loaders:
            boot = loaders[0][0]
            if len(loaders) > 1:
                ignored = ", ".join(p[0].device for p in loaders[1:])
                warnings.append(f"several boot filesystems; using {boot.device}, ignoring {ignored}")
    esps = [p[0] for p in probes if p[0].fstype in FAT_TYPES and (p[0].is_esp_type or p[1].efi)]
    esp = next((p for p in esps if p.is_esp_type), esps[0] if esps else None)
    return Roles(root, root_probe, boot, esp, tuple(warnings))


def _same_btrfs(a: Partition, b: Partition) -> bool:
    def base(p: Partition) -> str:
        return p.device.split("btrfsvol:", 1)[-1].rsplit("/", 1)[0] if p.subvolume else p.device

    return a.fstype == "btrfs" and b.fstype == "btrfs" and base(a) == base(b)


def _boot_has_content(root: GuestTree) -> bool:
    names = root.listdir("/boot")
    return any(n in ("loader", "loader.0", "loader.1") or n.startswith(("vmlinuz-", "vmlinux-")) for n in names)


@dataclass(frozen=True)
class RootDescription:
    """What a physical root (``/boot`` merged) holds, with the deployment and kernel chosen."""

    os_release: Mapping[str, str]
    arch: str | None
    ostree: bool
    deployments: tuple[Deployment, ...]
    deployment: Deployment | None
    kernels: tuple[Kernel, ...]
    kernel: Kernel
    warnings: tuple[str, ...]


def describe_root(
    tree: GuestTree,
    *,
    image: str,
    boot_separate: bool,
    deployment: str | int | None = None,
    kernel: str | None = None,
) -> RootDescription:
    """Describe the physical root ``tree`` and choose a deployment (ostree) or kernel (classic).

    ``tree`` is the physical root with the boot filesystem, if separate, merged at ``/boot``.
    Raises :class:`NoKernel`, :class:`KernelNotFound`, ``DeploymentNotFound`` or
    :class:`~liveimg.errors.GuestPathEscapes`.
    """
    if tree.is_dir("/ostree/deploy"):
        deployments, warnings = list_deployments(tree, boot_separate=boot_separate)
        if not deployments:
            detail = "; ".join(warnings) or "no boot loader entries and no /ostree/boot.N links"
            raise InvalidImage(f"{image}: the ostree root has no bootable deployment ({detail})")
        chosen = select_deployment(deployments, deployment, image)
        if chosen.kernel is None:
            raise NoKernel(
                f"{image}: deployment {chosen.describe()} has no kernel: its boot loader entry names "
                f"none that exists and {chosen.path}/usr/lib/modules has no <kver>/vmlinuz"
            )
        if kernel is not None and kernel != chosen.kernel.version:
            raise KernelNotFound(
                f"{image}: deployment {chosen.describe()} has kernel {chosen.kernel.version}, not {kernel}",
                hint="choose the deployment that has it with --deployment",
            )
        userland = tree.subtree(chosen.path)
        os_release = read_os_release(userland, usr_first=True)
        arch = detect_arch(userland, tree, chosen.kernel.path, chosen.kernel.version)
        kernels = tuple({d.kernel.path: d.kernel for d in deployments if d.kernel}.values())
        return RootDescription(
            MappingProxyType(os_release), arch, True, deployments, chosen, kernels, chosen.kernel, tuple(warnings)
        )
    if deployment is not None:
        raise InvalidOptions(f"{image}: a deployment was requested but the image is not an ostree system")
    kernels_found = find_kernels(tree, boot_separate=boot_separate)
    chosen_kernel = select_kernel(kernels_found, kernel, image)
    os_release = read_os_release(tree, usr_first=False)
    arch = detect_arch(tree, tree, chosen_kernel.path, chosen_kernel.version)
    return RootDescription(MappingProxyType(os_release), arch, False, (), None, tuple(kernels_found), chosen_kernel, ())


@dataclass(frozen=True)
class ImageInfo:
    """Everything later stages need to know about the input image.

    ``image`` is the input file, ``format`` its format as ``qemu-img info`` reports it (raw,
    qcow2, ...), ``virtual_size`` the disk's size in bytes, ``partition_table`` ``gpt``,
    ``dos`` or None (an unpartitioned filesystem image).  ``partitions`` lists every partition,
    logical volume and btrfs subvolume found; ``root``, ``boot`` (None when ``/boot`` is a
    directory of the root) and ``esp`` are among them.  ``os_release`` is the chosen
    deployment's (or the classic root's); ``arch`` is normalised (``x86_64``, ``aarch64``, ...,
    None if unknown).  For ostree images ``deployments`` lists all of them in boot order and
    ``deployment`` is the chosen one; ``kernels`` lists every kernel found and ``kernel`` is
    the chosen one (for ostree, the deployment's).  ``warnings`` are oddities worth telling.
    """

    image: Path
    format: str
    virtual_size: int
    partition_table: str | None
    partitions: tuple[Partition, ...]
    root: Partition
    boot: Partition | None
    esp: Partition | None
    os_release: Mapping[str, str]
    arch: str | None
    ostree: bool
    deployments: tuple[Deployment, ...]
    deployment: Deployment | None
    kernels: tuple[Kernel, ...]
    kernel: Kernel
    warnings: tuple[str, ...] = field(default=())

    @property
    def ostree_arg(self) -> str | None:
        """``/ostree/boot.N/<os>/<bootcsum>/<serial>`` of the chosen deployment, for ``ostree=``."""
        return self.deployment.ostree_arg if self.deployment else None

    @property
    def bcj_arch(self) -> str | None:
        """The architecture, falling back to the kernel version's suffix."""
        return self.arch or kver_arch(self.kernel.version)

    def summary(self) -> str:
        """A readable multi-line description (what ``liveimg inspect`` prints)."""
        lines = [
            f"image:       {self.image} ({self.format}, {_size(self.virtual_size)}, "
            f"{self.partition_table or 'no partition table'})",
            "filesystems:",
        ]
        roles = {self.root.device: "root"}
        if self.boot:
            roles[self.boot.device] = "boot"
        if self.esp:
            roles[self.esp.device] = "esp"
        for p in self.partitions:
            where = f"bytes {p.offset}+{p.length}" if p.offset is not None else ("LVM" if p.lvm else "")
            lines.append(
                f"  {p.device:28} {p.fstype or '-':12} {_size(p.size):>10}  {p.label or '':16} {where:28}"
                f" {('[' + roles[p.device] + ']') if p.device in roles else ''}".rstrip()
            )
        name = self.os_release.get("PRETTY_NAME") or self.os_release.get("NAME") or "unknown"
        lines.append(f"os:          {name}, {self.arch or 'unknown architecture'}")
        boot = f"the {self.boot.device} filesystem" if self.boot else "a directory of the root"
        lines.append(f"/boot:       {boot}")
        if self.ostree:
            lines.append(f"deployments: {len(self.deployments)} (* = chosen; index 0 is what ostree boots)")
            for d in self.deployments:
                mark = "*" if self.deployment and d.path == self.deployment.path else " "
                origin = d.refspec or d.container_image or "no origin"
                lines.append(f"  {mark} {d.describe()}  {origin}  {d.title or ''}".rstrip())
            assert self.deployment is not None
            lines.append(f"deployment:  {self.deployment.path}")
            lines.append(f"ostree=      {self.deployment.ostree_arg}")
            lines.append(f"options:     {' '.join(self.deployment.options) or '(none)'}")
        else:
            lines.append(f"kernels:     {', '.join(k.version for k in self.kernels)}")
        lines.append(f"kernel:      {self.kernel.path} ({self.kernel.version}, {_size(self.kernel.size)})")
        lines.append(f"initramfs:   {self.kernel.initramfs or '(none)'}")
        for warning in self.warnings:
            lines.append(f"warning:     {warning}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (paths as strings, nested records as dicts)."""
        result = _plain(self)
        assert isinstance(result, dict)
        result["ostree_arg"] = self.ostree_arg
        return result


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Deployment):
            out["kver"] = value.kver
        return out
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value
