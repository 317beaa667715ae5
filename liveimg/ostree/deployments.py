"""ostree deployments of a physical root, as ostree itself would list and boot them.

On-disk layout (physical root, i.e. the filesystem holding ``/ostree``; ``/boot`` merged)::

    /ostree/deploy/<os>/deploy/<csum>.<serial>/          a deployment (a checkout of commit <csum>)
    /ostree/deploy/<os>/deploy/<csum>.<serial>.origin    ini: [origin] refspec=... (optional)
    /ostree/boot.N -> boot.N.M                           N the bootversion, M the sub-bootversion
    /ostree/boot.N.M/<os>/<bootcsum>/<bootserial> -> ../../../deploy/<os>/deploy/<csum>.<serial>
    /boot/loader -> loader.N, /boot/loader.N/entries/*.conf  (see :mod:`liveimg.ostree.bls`)
    /boot/ostree/<os>-<bootcsum>/vmlinuz-<kver>, initramfs-<kver>.img

Each BLS entry with an ``ostree=/ostree/boot.N/<os>/<bootcsum>/<serial>`` argument is one
deployment: the argument is followed through the boot link to the deployment directory (as
ostree's ``parse_deployment`` does) and cross-checked with its name, the ``.origin`` file and
the kernel the entry names.  Entries whose link or directory is missing are reported and left
out.  The order is the entries' boot order; index 0 is the default, what ostree boots.  Several
deployments are normal (an upgrade keeps the previous one for rollback).
"""

from __future__ import annotations

import configparser
import logging
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.fsview import GuestTree
from liveimg.kernels import Kernel, kernel_from_modules, kernel_in_boot
from liveimg.ostree.bls import BootEntry, find_loader, read_entries

log = logging.getLogger(__name__)

OSTREE_ARG = re.compile(r"/ostree/boot\.([0-9]+)/([^/]+)/([^/]+)/([0-9]+)")
DEPLOY_PATH = re.compile(r"/ostree/deploy/([^/]+)/deploy/([0-9a-f]+)\.([0-9]+)")
#: Kernel arguments the live boot replaces, left out of :attr:`Deployment.options`.
REPLACED_ARGS = ("ostree", "root", "rootflags", "ro", "rw")


class DeploymentNotFound(InvalidOptions):
    """The deployment the caller asked for is not in the image (the message lists those that are)."""


@dataclass(frozen=True)
class Deployment:
    """One bootable ostree deployment.

    * ``index``: position in boot order, 0 being the default (what ostree boots);
    * ``osname`` (the stateroot), ``checksum`` (the commit), ``serial`` (the deploy serial);
    * ``bootversion``/``subbootversion``: N and M of ``/ostree/boot.N -> boot.N.M``;
      ``bootcsum``/``bootserial``: the other components of the boot link;
    * ``ostree_arg``: ``/ostree/boot.N/<os>/<bootcsum>/<bootserial>``, for ``ostree=``;
    * ``path``: ``/ostree/deploy/<os>/deploy/<checksum>.<serial>`` in the physical root;
    * ``kernel``: its kernel and initramfs (None if neither the entry's nor ``/usr/lib/modules``'s exists);
    * ``options``: the entry's kernel arguments without ``ostree=``, ``root=``, ``rootflags=``,
      ``ro`` and ``rw`` (a live boot sets those); ``bls_options`` all of them as written;
    * ``title``, ``version``, ``bls_entry`` (guest path of the entry file);
    * ``refspec`` (or ``container_image`` for container-native origins) from the ``.origin`` file,
      None if it has none.
    """

    index: int
    osname: str
    checksum: str
    serial: int
    bootversion: int
    subbootversion: int | None
    bootcsum: str
    bootserial: int
    ostree_arg: str
    path: str
    kernel: Kernel | None
    options: tuple[str, ...]
    bls_options: tuple[str, ...]
    title: str | None
    version: str | None
    bls_entry: str
    refspec: str | None
    container_image: str | None

    @property
    def kver(self) -> str | None:
        return self.kernel.version if self.kernel else None

    @property
    def initramfs(self) -> str | None:
        return self.kernel.initramfs if self.kernel else None

    @property
    def name(self) -> str:
        """``<checksum>.<serial>``, the deployment directory's name."""
        return f"{self.checksum}.{self.serial}"

    def describe(self) -> str:
        return f"{self.index}: {self.osname} {self.checksum[:12]}.{self.serial} ({self.kver or 'no kernel'})"


def parse_ostree_arg(arg: str) -> tuple[int, str, str, int]:
    """``/ostree/boot.N/<os>/<bootcsum>/<serial>`` -> (N, os, bootcsum, serial); ValueError otherwise."""
    m = OSTREE_ARG.fullmatch(arg)
    if not m:
        raise ValueError(f"ostree={arg} is not /ostree/boot.N/OSNAME/BOOTCSUM/SERIAL")
    return int(m.group(1)), m.group(2), m.group(3), int(m.group(4))


def read_origin(tree: GuestTree, path: str) -> tuple[str | None, str | None, str | None]:
    """(refspec, container image reference, warning) from an ``.origin`` key file."""
    if not tree.lexists(path):
        return None, None, f"{path} is missing"
    try:
        text = tree.read_text(path, limit=64 * 1024)
    except InvalidImage as exc:
        return None, None, str(exc)
    parser = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # GKeyFile keys are case-sensitive
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        return None, None, f"{path} is not a key file: {' '.join(str(exc).split())}"
    if not parser.has_section("origin"):
        return None, None, f"{path} has no [origin] group"
    refspec = parser.get("origin", "refspec", fallback=None)
    image = parser.get("origin", "container-image-reference", fallback=None)
    return refspec, image, None


def _subbootversion(tree: GuestTree, bootversion: int) -> int | None:
    link = f"/ostree/boot.{bootversion}"
    if not tree.is_symlink(link):
        return None
    m = re.fullmatch(rf"boot\.{bootversion}\.([0-9]+)", posixpath.basename(tree.readlink(link).rstrip("/")))
    return int(m.group(1)) if m else None


def _deployment_kernel(
    tree: GuestTree, entry: BootEntry, deploy_path: str, boot_separate: bool
) -> tuple[Kernel | None, list[str]]:
    warnings: list[str] = []
    kernel: Kernel | None = None
    if entry.linux:
        kernel, why = kernel_in_boot(tree, entry.linux, entry.initrd[0] if entry.initrd else None, boot_separate)
        if why:
            warnings.append(f"{entry.path}: {why}")
    deployment = tree.subtree(deploy_path)
    wanted = kernel.version if kernel else None
    modules_kernel = kernel_from_modules(deployment, deploy_path, wanted, boot_separate)
    if kernel is None:
        if modules_kernel is not None:
            warnings.append(f"{entry.path}: using {modules_kernel.path} instead")
        return modules_kernel, warnings
    if not deployment.is_dir(f"/usr/lib/modules/{kernel.version}"):
        warnings.append(f"{entry.path}: the deployment has no /usr/lib/modules/{kernel.version} for its kernel")
    return kernel, warnings


def list_deployments(tree: GuestTree, *, boot_separate: bool) -> tuple[tuple[Deployment, ...], list[str]]:
    """Every deployment of the ostree physical root ``tree`` (``/boot`` merged), in boot order.

    ``boot_separate`` says whether ``/boot`` is its own filesystem (BLS paths are then relative
    to it).  Returns the deployments and warnings about entries that were left out or are odd.
    Symlinks escaping the root raise :class:`GuestPathEscapes`: an image built that way is hostile.
    """
    warnings: list[str] = []
    loader, found = find_loader(tree, "/boot")
    warnings += found
    entries: list[BootEntry] = []
    if loader is None:
        warnings.append("no boot loader entries: no loader, loader.0 or loader.1 in /boot")
    else:
        entries, found = read_entries(tree, loader)
        warnings += found
    deployments: list[Deployment] = []
    seen: set[str] = set()
    for entry in entries:
        arg = entry.ostree_arg
        if arg is None:
            log.debug("%s has no ostree= argument: not an ostree deployment", entry.path)
            continue
        if len(set(entry.option_values("ostree"))) > 1:
            warnings.append(f"{entry.path}: several different ostree= arguments; entry ignored")
            continue
        try:
            bootversion, osname, bootcsum, bootserial = parse_ostree_arg(arg)
        except ValueError as exc:
            warnings.append(f"{entry.path}: {exc}; entry ignored")
            continue
        if loader is not None and loader.bootversion is not None and bootversion != loader.bootversion:
            warnings.append(f"{entry.path}: ostree={arg} is not in boot.{loader.bootversion}, the current bootversion")
        target = tree.resolve(arg)  # GuestPathEscapes propagates: a hostile image is not skipped
        if target is None or not tree.is_dir(target):
            warnings.append(f"{entry.path}: ostree={arg} does not lead to a deployment directory; entry ignored")
            continue
        m = DEPLOY_PATH.fullmatch(target)
        if not m:
            warnings.append(f"{entry.path}: ostree={arg} leads to {target}, not to /ostree/deploy/{osname}/deploy/")
            continue
        if m.group(1) != osname:
            warnings.append(f"{entry.path}: ostree={arg} leads to the deployment of another OS, {m.group(1)}")
        if target in seen:
            warnings.append(f"{entry.path}: a second entry for {target}; entry ignored")
            continue
        seen.add(target)
        refspec, image, why = read_origin(tree, target + ".origin")
        if why:
            warnings.append(why)
        kernel, found = _deployment_kernel(tree, entry, target, boot_separate)
        warnings += found
        deployments.append(
            Deployment(
                index=len(deployments),
                osname=m.group(1),
                checksum=m.group(2),
                serial=int(m.group(3)),
                bootversion=bootversion,
                subbootversion=_subbootversion(tree, bootversion),
                bootcsum=bootcsum,
                bootserial=bootserial,
                ostree_arg=arg,
                path=target,
                kernel=kernel,
                options=tuple(o for o in entry.options if o.split("=", 1)[0] not in REPLACED_ARGS),
                bls_options=entry.options,
                title=entry.title,
                version=entry.version,
                bls_entry=entry.path,
                refspec=refspec,
                container_image=image,
            )
        )
    if not deployments:
        deployments_from_links(tree, boot_separate, warnings, deployments)
    return tuple(deployments), warnings


def deployments_from_links(tree: GuestTree, boot_separate: bool, warnings: list[str], out: list[Deployment]) -> None:
    """Without usable BLS entries, fall back to the boot links of the current bootversion.

    This is what lorax does (``ostree/boot.?/*/*/0``), minus its failure on several matches:
    every ``/ostree/boot.N/<os>/<bootcsum>/<serial>`` link becomes a deployment, ordered by
    name; the kernel comes from the deployment's ``/usr/lib/modules``.
    """
    versions = [
        int(m.group(1))
        for name in tree.listdir("/ostree")
        if (m := re.fullmatch(r"boot\.([0-9]+)", name)) and tree.is_dir(f"/ostree/{name}")
    ]
    loader, _ = find_loader(tree, "/boot")
    if loader is not None and loader.bootversion in versions:
        versions = [loader.bootversion]
    for bootversion in sorted(versions):
        for osname in tree.listdir(f"/ostree/boot.{bootversion}"):
            for bootcsum in tree.listdir(f"/ostree/boot.{bootversion}/{osname}"):
                for serial in tree.listdir(f"/ostree/boot.{bootversion}/{osname}/{bootcsum}"):
                    if not serial.isdigit():
                        continue
                    arg = f"/ostree/boot.{bootversion}/{osname}/{bootcsum}/{serial}"
                    target = tree.resolve(arg)
                    m = DEPLOY_PATH.fullmatch(target or "")
                    if target is None or not m or not tree.is_dir(target):
                        warnings.append(f"{arg} does not lead to a deployment directory")
                        continue
                    refspec, image, why = read_origin(tree, target + ".origin")
                    if why:
                        warnings.append(why)
                    kernel = kernel_from_modules(tree.subtree(target), target, None, boot_separate)
                    out.append(
                        Deployment(
                            index=len(out),
                            osname=m.group(1),
                            checksum=m.group(2),
                            serial=int(m.group(3)),
                            bootversion=bootversion,
                            subbootversion=_subbootversion(tree, bootversion),
                            bootcsum=bootcsum,
                            bootserial=int(serial),
                            ostree_arg=arg,
                            path=target,
                            kernel=kernel,
                            options=(),
                            bls_options=(),
                            title=None,
                            version=None,
                            bls_entry="",
                            refspec=refspec,
                            container_image=image,
                        )
                    )
    if out:
        warnings.append(
            "deployments found from /ostree/boot.N links without boot loader entries: "
            "their order (and so the default) is a guess, and they have no kernel arguments"
        )


def select_deployment(deployments: Sequence[Deployment], selector: str | int | None, image: str) -> Deployment:
    """Choose a deployment: None -> the default (index 0); an int or digits -> that index;
    otherwise an osname (its first deployment in boot order), a ``<checksum>.<serial>`` name, or
    a prefix (4+ hex digits) of one commit checksum (its first deployment in boot order: one
    commit may be deployed twice).  :class:`DeploymentNotFound` lists what exists."""
    if not deployments:
        raise InvalidImage(f"{image}: the ostree root has no deployments")
    if selector is None:
        return deployments[0]
    chosen: list[Deployment] = []
    if isinstance(selector, int) or selector.isdigit():
        index = int(selector)
        chosen = [d for d in deployments if d.index == index]
    else:
        wanted = selector.strip()
        chosen = [d for d in deployments if d.osname == wanted][:1]
        if not chosen:
            chosen = [d for d in deployments if d.name == wanted]
        if not chosen and re.fullmatch(r"[0-9a-f]{4,}", wanted):
            chosen = [d for d in deployments if d.checksum.startswith(wanted)]
            if len({d.checksum for d in chosen}) > 1:
                raise DeploymentNotFound(
                    f"{image}: deployment {selector!r} is ambiguous: "
                    + "; ".join(d.describe() for d in chosen)
                    + " (give a longer checksum or an index)"
                )
    if not chosen:
        available = "; ".join(d.describe() for d in deployments)
        raise DeploymentNotFound(
            f"{image}: no deployment {selector!r}; available: {available}",
            hint="choose by index, osname or checksum prefix",
        )
    return chosen[0]
