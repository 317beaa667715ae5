"""The guest tree dracut runs in: extracted from ``rootfs.img`` without mounting, read safely.

``rootfs.img`` (the rootfs stage's output) is an ext4 image holding the image's physical
root with the boot partition merged into its ``/boot``.  For an ostree image the deployment
is a directory inside it (``/ostree/deploy/<os>/deploy/<csum>.<serial>``) whose own ``/boot``
is empty: dracut must see the physical ``/boot`` there, as lorax arranges with a bind mount.

:func:`extract_tree` copies the deployment (and, for ostree, the physical ``/boot`` beside
it) out of the image with ``debugfs rdump``: no mount, no root, no loop device, and the
image is only read.  The copy is writable and is thrown away afterwards, so nothing dracut
does reaches the shipped rootfs (lorax leaves its squashfs unchanged too).

``rdump`` recreates the guest's symbolic links as they are, then writes files through them:
a hostile image could place a file anywhere its writer may write.  So debugfs runs in
:mod:`liveimg.sandbox`, where nothing is writable but the destination directory (and a small
tmpfs), with limits on what it may write (a filesystem full of hard links to one big file
would otherwise fill the disk).

Guest content is hostile.  Reading the guest goes through :class:`liveimg.fsview.GuestTree`;
creating mount points in the copy goes through :func:`chroot_path`, which resolves a guest
path the way a process chrooted into the tree would (absolute symlinks start at the tree's
root, ``..`` stops at it), so no path computed from guest data leaves the tree.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from liveimg import run as runner
from liveimg import sandbox
from liveimg.e2fs import fake_time_env
from liveimg.errors import HostError, InvalidImage, InvalidOptions, ToolError
from liveimg.fsview import Escape, HostFS, ReadOnlyFS, resolve

log = logging.getLogger(__name__)


def chroot_path(fs: ReadOnlyFS, root: str, path: str, *, follow_last: bool = True) -> str:
    """Where ``path`` lands, in ``fs``, for a process chrooted into its directory ``root``.

    This is the kernel's answer, not :class:`liveimg.fsview.GuestTree`'s: :func:`liveimg.fsview.resolve`
    with the :attr:`~liveimg.fsview.Escape.CLAMP` policy.  ``..`` at the root stays there (GuestTree
    refuses it), and components that do not exist -- or dangling links -- are kept, so the result
    says where ``mkdir -p`` would create a mount point.  Symbolic links are followed inside ``root``
    (an absolute target starts again at ``root``), so the result is always ``root`` or below it.
    More than :data:`~liveimg.fsview.MAX_SYMLINKS` links are an :class:`InvalidImage`.
    """
    base = "/" + root.strip("/") if root.strip("/") else ""
    parts = resolve(fs, base, path, escape=Escape.CLAMP, follow_last=follow_last, label=fs.label)
    return base + "/" + "/".join(parts) if parts else base or "/"


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """The host path that ``path`` names for a process whose root directory is ``root``
    (always ``root`` or below it; see :func:`chroot_path`)."""
    inner = chroot_path(HostFS(root), "/", path, follow_last=follow_last)
    return root.joinpath(*[p for p in inner.split("/") if p])


def guest_mkdirs(root: Path, path: str) -> Path:
    """Create directory ``path`` inside the tree (and its parents); its host path."""
    target = resolve_in_root(root, path)
    current = root
    for part in target.relative_to(root).parts:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise InvalidImage(f"{posixpath.join('/', path)} in the guest tree is not a directory ({current})")
        if not current.exists():
            current.mkdir(mode=0o755)
    return target


@dataclass(frozen=True)
class ExtractedTree:
    """A writable copy of a deployment: ``root`` is its ``/``; ``boot`` (or None) is the
    physical ``/boot`` to show at ``root/boot`` when the tree is used."""

    root: Path
    boot: Path | None
    deployment: str
    seconds: float


def _debugfs_problems(stderr: str) -> list[str]:
    """debugfs exits 0 even when a dump fails: find its real complaints in stderr."""
    problems = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line.startswith("debugfs "):
            continue
        # Not being root, it cannot give the files their owners: expected and harmless,
        # since dracut writes every file into the initramfs as root anyway.
        if "while changing ownership of" in line:
            continue
        problems.append(line)
    return problems


#: Where the destination of :func:`rdump` appears inside its sandbox.
_RDUMP_DIR = "/liveimg-out"
#: What rdump may write, in bytes: this many times the image's size, at least :data:`RDUMP_MIN`
#: (hard links are copied once per name, so a legitimate deployment can take more than the image).
RDUMP_FACTOR = 3
RDUMP_MIN = sandbox.GiB


def _debugfs(image: Path, request: str, *, mounts: Sequence[sandbox.Bind] = (), timeout: float = 120,
             disk: int | None = None) -> runner.Completed:  # fmt: skip
    size = max(image.stat().st_size, sandbox.MiB)
    limits = sandbox.Limits(seconds=timeout, tasks=8, memory=8 * sandbox.GiB, file_size=size, disk=disk)
    return sandbox.run(["debugfs", "-R", request, sandbox.File(image)], what="debugfs", mounts=mounts, limits=limits,
                       env=fake_time_env(), check=False)  # fmt: skip


def rdump(image: Path, guest_dir: str, dest: Path, *, timeout: float = 1800) -> None:
    """``debugfs -R "rdump <guest_dir> <dest>"`` in the sandbox: copy a directory of an ext4 image file.

    ``dest`` must exist and be writable by the sandbox (see :func:`liveimg.sandbox.hand_over`);
    ``guest_dir`` appears in it under its own name (for ``/``, its contents appear directly in
    ``dest``).  The image is opened read-only.
    """
    if any(c in guest_dir for c in '"\n\\'):
        raise InvalidOptions(f"cannot pass {guest_dir!r} to debugfs (quote or newline in the path)")
    request = f'rdump "{guest_dir}" "{_RDUMP_DIR}"'
    mounts = [sandbox.Bind(dest, _RDUMP_DIR, writable=True)]
    try:
        result = _debugfs(image, request, mounts=mounts, timeout=timeout,
                          disk=max(RDUMP_FACTOR * image.stat().st_size, RDUMP_MIN))  # fmt: skip
    except sandbox.LimitExceeded as exc:
        raise InvalidImage(f"{image}: copying {guest_dir} out of it was stopped: {exc.message}") from None
    if result.returncode != 0:
        raise InvalidImage(f"debugfs cannot read {image}: {ToolError(result.argv, result.returncode, result.stderr)}")
    problems = _debugfs_problems(result.stderr)
    if problems:
        raise InvalidImage(f"debugfs could not copy {guest_dir} out of {image}: {problems[-1]}")


def _guest_is_dir(image: Path, guest_dir: str) -> bool:
    result = _debugfs(image, f'stat "{guest_dir}"')
    for line in result.stderr.splitlines():
        if "while trying to open" in line or "Filesystem not open" in line:
            raise InvalidImage(f"cannot read {image} as an ext4 filesystem: {line.removeprefix('debugfs: ')}")
    return "Type: directory" in result.stdout


def _real_dir(path: Path, what: str) -> None:
    """What rdump made at ``path`` must be a directory, not a link a hostile image put there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise InvalidImage(f"debugfs made no {what}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidImage(f"{what} copied out of the image is not a directory")


def extract_tree(image: str | os.PathLike[str], deployment: str, dest: str | os.PathLike[str]) -> ExtractedTree:
    """Copy the deployment ``deployment`` (``/`` for a classic image) of the ext4 image file
    ``image`` into the new directory ``dest``; for an ostree deployment also copy ``/boot``.

    The result's ``root`` is ``dest/root`` and its ``boot`` is ``dest/boot`` (None for a
    classic image, whose ``/boot`` is already part of its root).
    """
    started = time.monotonic()
    img = Path(image)
    out = Path(dest)
    if not img.is_file():
        raise InvalidOptions(f"rootfs image {img} does not exist or is not a file")
    deployment = "/" + deployment.strip("/")
    if ".." in deployment.split("/"):
        raise InvalidOptions(f"deployment path {deployment!r} contains '..'")
    try:
        out.mkdir(mode=0o755)
        root = out / "root"
        root.mkdir(mode=0o755)
        sandbox.hand_over(out, root)
    except OSError as exc:
        raise HostError(f"cannot create the work directory {out}: {exc.strerror or exc}") from exc
    if not _guest_is_dir(img, deployment):
        raise InvalidImage(f"{deployment} is not a directory in {img}: is it the deployment of this image?")
    boot: Path | None = None
    if deployment == "/":
        rdump(img, "/", root)
    else:
        staging = out / "staging"
        staging.mkdir()
        sandbox.hand_over(staging)
        rdump(img, deployment, staging)
        # rdump names the copy after the directory; move its contents into root.
        _real_dir(staging / posixpath.basename(deployment), deployment)
        (staging / posixpath.basename(deployment)).rename(root.with_name("root.tmp"))
        root.rmdir()
        root.with_name("root.tmp").rename(root)
        staging.rmdir()
        if _guest_is_dir(img, "/boot"):
            rdump(img, "/boot", out)
            boot = out / "boot"
            _real_dir(boot, "/boot")
        else:
            log.warning("%s has no /boot: dracut will see the deployment's own /boot only", img)
    seconds = time.monotonic() - started
    log.info("extracted %s of %s in %.1f s", deployment, img, seconds)
    return ExtractedTree(root=root, boot=boot, deployment=deployment, seconds=seconds)
