"""Kernels and initramfs images of a guest: where they are, their versions, which is newest.

Paths are guest paths in the physical root with ``/boot`` merged (the view
:class:`~liveimg.fsview.GuestTree` gives over :class:`~liveimg.fsview.MergedFS`), resolved, so
they name regular files and never symlinks.  Layouts understood:

* ``/boot/vmlinuz-<kver>`` (or ``vmlinux-<kver>``) with ``initramfs-<kver>.img`` (dracut),
  ``initrd.img-<kver>`` (Debian), ``initrd-<kver>`` / ``initrd-<kver>.img`` (SUSE) beside it;
* ``/usr/lib/modules/<kver>/vmlinuz`` with ``initramfs.img`` (ostree commits, kernel-install);
* a BLS entry's ``linux``/``initrd`` (ostree: ``/ostree/<os>-<bootcsum>/vmlinuz-<kver>`` in
  the boot filesystem).

A kernel version is taken from a file or directory name of the image, and becomes part of
file names, paths and boot configurations: a name whose version is not plain
(:func:`liveimg.bootsyntax.is_kernel_version`: letters, digits and ``. _ + ~ -``) is not
taken for a kernel, and said so in a warning.

Rescue kernels (``vmlinuz-0-rescue-<machine-id>``) are skipped, as lorax does.  Unlike lorax,
any ``vmlinuz-<kver>`` counts (lorax's pattern wants an ``.<arch>`` suffix and so misses Debian
kernels such as ``6.1.0-13-amd64``), and the newest comes first, by a natural version order.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from liveimg.bootsyntax import is_kernel_version, kernel_version
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.fsview import FileType, GuestTree

log = logging.getLogger(__name__)

#: Larger "kernels" are refused as absurd (a real one is 5-40 MiB).
KERNEL_LIMIT = 512 << 20
#: Larger initramfs images are refused as absurd.
INITRAMFS_LIMIT = 4 << 30

_KERNEL_NAME = re.compile(r"vmlinu[xz]-(.+)")
_SKIP_SUFFIXES = (".hmac", ".sig", ".old", ".bak", ".dpkg-tmp")
_INITRAMFS_NAMES = ("initramfs-{v}.img", "initrd.img-{v}", "initrd-{v}.img", "initrd-{v}", "initramfs-{v}")


class NoKernel(InvalidImage):
    """The image (or the chosen deployment) has no kernel."""


class KernelNotFound(InvalidOptions):
    """The kernel version the caller asked for is not in the image (the message lists those that are)."""


@dataclass(frozen=True)
class Kernel:
    """A kernel and its initramfs.

    ``path``/``initramfs`` are guest paths in the physical root with ``/boot`` merged, e.g.
    ``/boot/ostree/fedora-<bootcsum>/vmlinuz-<kver>``; ``fs_path``/``initramfs_fs_path`` are the
    same files' paths inside the filesystem that holds them (``/ostree/fedora-<bootcsum>/...``
    when ``in_boot_fs``, i.e. they are on a separate ``/boot`` filesystem; otherwise equal to
    ``path``).  ``initramfs`` is None when there is none.  Sizes are in bytes.
    """

    version: str
    path: str
    initramfs: str | None
    fs_path: str
    initramfs_fs_path: str | None
    in_boot_fs: bool
    size: int
    initramfs_size: int | None


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Natural sort key: digit runs compare as numbers (``6.1.0-13`` > ``6.1.0-9``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.findall(r"\d+|\D+", version))


def _fs_path(path: str, boot_separate: bool) -> tuple[str, bool]:
    if boot_separate and (path == "/boot" or path.startswith("/boot/")):
        return "/" + path[len("/boot") :].lstrip("/"), True
    return path, False


def _regular(tree: GuestTree, path: str, limit: int) -> tuple[str, int] | None:
    """(resolved path, size) of a regular file, None if missing; InvalidImage if absurdly large."""
    resolved = tree.resolve(path)
    if resolved is None:
        return None
    st = tree.stat(resolved, follow=False)
    if st is None or st.type is not FileType.FILE:
        return None
    if st.size > limit:
        raise InvalidImage(f"{tree.label}: {path} is {st.size} bytes, not a plausible kernel or initramfs")
    return resolved, st.size


def make_kernel(
    tree: GuestTree, version: str, kernel: str, initramfs: str | None, *, boot_separate: bool, prefix: str = ""
) -> Kernel | None:
    """A :class:`Kernel` for files of ``tree`` (paths prefixed with ``prefix``, the tree's place in
    the physical root, for deployment subtrees); None if the kernel is not a regular file.
    :class:`InvalidImage` if ``version`` is not a plain kernel version."""
    kernel_version(version, where=f"{tree.label}: {kernel}")
    found = _regular(tree, kernel, KERNEL_LIMIT)
    if found is None:
        return None
    kpath, ksize = found
    ipath: str | None = None
    isize: int | None = None
    if initramfs is not None:
        ifound = _regular(tree, initramfs, INITRAMFS_LIMIT)
        if ifound is not None:
            ipath, isize = prefix + ifound[0], ifound[1]
    kpath = prefix + kpath
    fs_path, in_boot = _fs_path(kpath, boot_separate)
    ifs_path = _fs_path(ipath, boot_separate)[0] if ipath else None
    return Kernel(version, kpath, ipath, fs_path, ifs_path, in_boot, ksize, isize)


def _version_of(linux: str) -> str | None:
    name = posixpath.basename(linux)
    m = _KERNEL_NAME.fullmatch(name)
    if m:
        return m.group(1)
    if name == "linux":  # BLS type 1: /<entry-token>/<kver>/linux
        parent = posixpath.basename(posixpath.dirname(linux))
        return parent or None
    return None


def kernel_in_boot(
    tree: GuestTree, linux: str, initrd: str | None, boot_separate: bool
) -> tuple[Kernel | None, str | None]:
    """The kernel a BLS entry names (paths relative to the boot filesystem), or (None, why not).

    The path is tried under ``/boot`` of the merged view first, then as written (entries written
    with ostree's ``bootprefix``, or on a classic root whose ``/boot`` is a directory).
    """
    version = _version_of(linux)
    if version is None:
        return None, f"cannot tell the kernel version from the name {linux!r}"
    if not is_kernel_version(version):
        return None, f"the kernel {linux!r} has a version that is not plain (letters, digits and . _ + ~ -)"
    # "/boot" + path first (paths are relative to the boot filesystem); then the path as written,
    # for entries made with ostree's bootprefix option ("/boot/ostree/..."), which on a separate
    # /boot ostree's "boot -> ." link also serves.
    prefixes = ["/boot"] if boot_separate and not linux.startswith("/boot/") else ["/boot", ""]
    for prefix in prefixes:
        kpath = prefix + "/" + linux.lstrip("/")
        ipath = prefix + "/" + initrd.lstrip("/") if initrd else None
        kernel = make_kernel(tree, version, kpath, ipath, boot_separate=boot_separate)
        if kernel is not None:
            if initrd is not None and kernel.initramfs is None:
                log.warning("%s: the initramfs %s named with kernel %s is missing", tree.label, initrd, linux)
            return kernel, None
    return None, f"the kernel {linux} is missing"


def kernel_from_modules(tree: GuestTree, prefix: str, version: str | None, boot_separate: bool) -> Kernel | None:
    """The newest (or the given) ``/usr/lib/modules/<kver>/vmlinuz`` of ``tree`` with its initramfs.

    ``prefix`` is the tree's path in the physical root (a deployment directory), prepended to
    the paths returned; "" for the root itself.
    """
    versions = [version] if version else sorted(_plain_versions(tree), key=version_key, reverse=True)
    for kver in versions:
        base = f"/usr/lib/modules/{kver}"
        initramfs = next(
            (f"{base}/{name}" for name in ("initramfs.img", "initramfs") if tree.is_file(f"{base}/{name}")), None
        )
        kernel = make_kernel(
            tree, kver, f"{base}/vmlinuz", initramfs, boot_separate=boot_separate, prefix=prefix.rstrip("/")
        )
        if kernel is not None:
            return kernel
    return None


def _plain_versions(tree: GuestTree) -> list[str]:
    """The names in ``/usr/lib/modules`` that are plain kernel versions (a warning for the others)."""
    names = tree.listdir("/usr/lib/modules")
    for name in names:
        if not is_kernel_version(name):
            log.warning("%s: /usr/lib/modules/%r is not a plain kernel version; ignored", tree.label, name)
    return [name for name in names if is_kernel_version(name)]


def find_kernels(tree: GuestTree, *, boot_separate: bool) -> list[Kernel]:
    """Every kernel of a classic root (``/boot`` merged), newest first."""
    kernels: dict[str, Kernel] = {}
    for name in tree.listdir("/boot"):
        m = _KERNEL_NAME.fullmatch(name)
        if not m or name.endswith(_SKIP_SUFFIXES) or "-rescue-" in name:
            continue
        version = m.group(1)
        if not is_kernel_version(version):
            log.warning("%s: /boot/%r has a kernel version that is not plain; ignored", tree.label, name)
            continue
        if version in kernels:
            continue
        initramfs = next(
            (f"/boot/{p.format(v=version)}" for p in _INITRAMFS_NAMES if tree.is_file(f"/boot/{p.format(v=version)}")),
            None,
        )
        if initramfs is None and tree.is_file(f"/usr/lib/modules/{version}/initramfs.img"):
            initramfs = f"/usr/lib/modules/{version}/initramfs.img"
        kernel = make_kernel(tree, version, f"/boot/{name}", initramfs, boot_separate=boot_separate)
        if kernel is not None:
            kernels[version] = kernel
    for version in _plain_versions(tree):
        if version not in kernels:
            kernel = kernel_from_modules(tree, "", version, boot_separate)
            if kernel is not None:
                kernels[version] = kernel
    return sorted(kernels.values(), key=lambda k: version_key(k.version), reverse=True)


def select_kernel(kernels: Sequence[Kernel], version: str | None, image: str) -> Kernel:
    """The newest kernel, or the one of ``version``; :class:`NoKernel` / :class:`KernelNotFound`."""
    if not kernels:
        raise NoKernel(
            f"{image}: no kernel found (looked for /boot/vmlinuz-<kver> and /usr/lib/modules/<kver>/vmlinuz)"
        )
    if version is None:
        return kernels[0]
    for kernel in kernels:
        if kernel.version == version:
            return kernel
    raise KernelNotFound(f"{image}: no kernel {version}; available: {', '.join(k.version for k in kernels)}")
