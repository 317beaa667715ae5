#!/usr/bin/python3
"""Build realistic installed-system disk images ("samples") offline, for liveimg's demo and tests.

No Fedora image can be downloaded here, so the samples are Debian 12 systems installed the way
an installer would: debootstrap, then dracut (with dracut-live and dracut-network) and the
kernel, then for the Atomic variants an ostree commit deployed with ``ostree admin`` like the
seed's Fedora Atomic kickstart (``part /boot`` ext4, ``part /`` ext4, an fstab that does not
mount /boot).

Variants (``--variant``):

``atomic`` (default)
    sparse GPT disk: 1 MiB BIOS boot partition, ``/boot`` ext4 (label ``boot``), ``/`` ext4
    (label ``root``) holding ``ostree/repo`` and one deployment of os ``debian-atomic``.
``atomic-xfs-lvm``
    the same deployment, root on xfs in LV ``atomicos/root`` (Fedora Atomic's default layout).
``atomic-2deploy``
    two deployments whose boot checksums differ (the second initramfs carries one more file):
    the case where lorax fails with "Too many deployment roots".
``atomic-update``
    the ``atomic`` sample upgraded in place: a copy of its disk, into whose existing
    filesystems a second commit is written and deployed as the new default with ``ostree
    admin deploy`` (the first stays as the rollback), as ``ostree admin upgrade`` would; all
    but the new objects and deployment keeps the ``atomic`` sample's blocks at the same
    offsets (see :func:`build_atomic_update`).  The second commit is what an upgrade of
    Debian's apt packages would change (see :func:`apply_update`): a few MiB of binaries and
    libraries rewritten, a library renamed to its next version, a file added and one removed;
    the kernel and initramfs stay, so both deployments share one boot checksum.  The
    manifest's ``update`` lists the files and bytes.
``classic``
    no ostree: one ext4 root partition with the kernel and initramfs in ``/boot``.

Every image has root password ``liveimg``, hostname ``liveimg-sample``, the units of
:data:`MASKED_UNITS` masked (time a boot under TCG spends on nothing a test reads) and a oneshot unit that
prints, once multi-user is reached, one line on ``/dev/console``::

    LIVEIMG-SAMPLE-READY ostree-booted=<yes|no> root=<findmnt SOURCE /> fstype=<FSTYPE> hostname=<name>

Images are cached under ``~/.cache/liveimg/samples/<key>/<variant>.<raw|qcow2>`` where ``<key>``
is the first 16 hex digits of the sha256 of this builder.  The expensive base system
(debootstrap, dracut, kernel) is cached as ``<cache>/base/<recipe key>.tar.zst``, keyed by the
parts of the builder that make it, and shared by the variants; ``<cache>/debs`` keeps the
downloaded packages.
Beside each image, ``<variant>.<fmt>.json`` records what the image holds (kernel version, UUIDs,
kernel arguments, partitions, build time).  The image path is the last line on stdout.

Nothing is mounted on the host: the chroot steps run in a private mount namespace
(``unshare --mount``) that disappears with them; filesystems are made with ``mkfs.ext4 -d``,
partitions with ``sfdisk`` on the image file, LVM metadata in a libguestfs appliance.  The two
exceptions are filling the xfs of ``atomic-xfs-lvm`` (no tool fills an xfs without mounting it)
and upgrading ``atomic-update`` in place (ostree writes only to a mounted sysroot): loop mounts
that exist only inside a private mount namespace (see :func:`fill_lvm_xfs`, :data:`UPDATE_SCRIPT`).
Builds are serialised with ``flock`` and written to temporary files renamed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
#: The files whose content decides the cache key: change one, and every sample is rebuilt.
BUILDER_FILES = (HERE / "sample_image.py", HERE / "make-sample-image")

VARIANTS = ("atomic", "atomic-xfs-lvm", "atomic-2deploy", "atomic-update", "classic")
FORMATS = ("raw", "qcow2")

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: The ostree "osname" (stateroot).  liveimg must not depend on it: tests may change it.
OS_NAME = os.environ.get("LIVEIMG_SAMPLE_OSNAME", "debian-atomic")
HOSTNAME = "liveimg-sample"
ROOT_PASSWORD = "liveimg"
MARKER = "LIVEIMG-SAMPLE-READY"
VOLUME_GROUP = "atomicos"
CONSOLE_KARGS = ("console=ttyS0,115200",)

#: Installed by debootstrap.  The kernel and dracut come later, in a chroot: with the kernel in
#: --include, debootstrap's resolver picks initramfs-tools and fails.
BASE_PACKAGES = (
    "systemd-sysv", "udev", "dbus", "iproute2", "procps", "ostree", "ostree-boot", "dmsetup", "lvm2",
    "xfsprogs", "curl", "isc-dhcp-client", "iputils-arping", "kmod", "cpio", "e2fsprogs", "ca-certificates",
    "xz-utils", "zstd", "less",
)  # fmt: skip
#: nbd-client: the live initramfs can read the live image over NBD (``--url nbd://``) instead of downloading it.
DRACUT_PACKAGES = ("dracut", "dracut-core", "dracut-live", "dracut-network", "nbd-client")
KERNEL_PACKAGES = ("linux-image-amd64",)
#: The signed UEFI boot chain a real distribution host carries, for UEFI network boot with Secure
#: Boot: Debian's shim (signed by Microsoft's UEFI CA, which OVMF's ``.ms`` variables trust), its
#: signed GRUB images (``grubnetx64.efi.signed`` boots from the network) and mokutil.  Debian's
#: linux-image-amd64 is itself signed with the key Debian's shim trusts.
EFI_PACKAGES = ("shim-signed", "grub-efi-amd64-signed")

#: Units of Debian's base system masked in every sample (``/etc/systemd/system/<unit>`` -> /dev/null,
#: as ``systemctl mask`` does): each boot of a live image pays for them and no test reads what they
#: do.  e2scrub_reap.service runs LVM's tools to look for e2scrub's snapshots before multi-user is
#: reached: about 20 s of every boot under TCG.
MASKED_UNITS = ("e2scrub_reap.service",)

# Debian's dracut builds host-only initramfs by default; a sample must boot anywhere, over the
# network too, and as an ostree deployment.
DRACUT_CONF = """\
# liveimg sample: a generic initramfs that can boot an ostree deployment and the network
hostonly="no"
add_dracutmodules+=" ostree network-legacy "
"""

MARKER_SCRIPT = f"""\
#!/bin/sh
# Prints the liveimg sample's boot marker on the console (see liveimg-sample-ready.service).
if [ -e /run/ostree-booted ]; then booted=yes; else booted=no; fi
root=$(findmnt -no SOURCE /)
fstype=$(findmnt -no FSTYPE /)
host=$(cat /proc/sys/kernel/hostname)
printf '\\n{MARKER} ostree-booted=%s root=%s fstype=%s hostname=%s\\n' \\
    "$booted" "$root" "$fstype" "$host" > /dev/console
"""

MARKER_UNIT = """\
[Unit]
Description=Print the liveimg sample's boot marker on the console
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/libexec/liveimg-sample-ready

[Install]
WantedBy=multi-user.target
"""

# ostree keeps /var out of commits: these recreate what the tree had, as Fedora Atomic does.
VAR_TMPFILES = """\
d /var/home 0755 root root -
d /var/roothome 0700 root root -
d /var/opt 0755 root root -
d /var/srv 0755 root root -
d /var/mnt 0755 root root -
d /var/usrlocal 0755 root root -
d /var/tmp 1777 root root -
d /var/lib 0755 root root -
d /var/log 0755 root root -
d /var/cache 0755 root root -
d /var/spool 0755 root root -
d /var/mail 2775 root mail -
d /var/local 2775 root staff -
d /var/backups 0755 root root -
"""

#: The ``atomic-update`` sample's upgrade (paths relative to the tree, which must match): the
#: files rewritten in place, ...
UPDATE_REWRITE = (
    "usr/bin/apt*", "usr/lib/apt/apt-helper", "usr/lib/apt/methods/*", "usr/lib/apt/solvers/*",
    "usr/lib/x86_64-linux-gnu/libapt-private.so.*",
)  # fmt: skip
#: ... the libraries replaced by their next version (the old file removed, a rewritten one added
#: under the bumped name, the soname link repointed), ...
UPDATE_BUMP = ("usr/lib/x86_64-linux-gnu/libapt-pkg.so.*.*.*",)
#: ... the files removed (apt 2.7 dropped its ftp method) and the files added.
UPDATE_REMOVE = ("usr/lib/apt/methods/ftp",)
UPDATE_ADD = ("usr/share/doc/apt/changelog.liveimg-update",)
#: The content transform's page: every page of a rewritten file differs from the old one.
UPDATE_PAGE = 4096
#: The update commit's timestamp (2026-12-01 00:00 UTC): the same commit checksum every build.
UPDATE_TIMESTAMP = "@1796083200"

# GPT partition type GUIDs.
GPT_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GPT_LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
GPT_LINUX_LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"

MIB = 1024 * 1024


class BuildError(Exception):
    """A build step failed; the message says which and how."""


# ---------------------------------------------------------------------------------------------
# running programs


class Runner:
    """Runs build steps, logging commands and their output to a build log (not to stdout)."""

    def __init__(self, log: IO[str]) -> None:
        self.log = log

    def note(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, file=sys.stderr, flush=True)
        print(line, file=self.log, flush=True)

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        capture: bool = False,
        timeout: float = 1800,
    ) -> bytes:
        """Run a program; its output goes to the build log unless ``capture`` (then it is returned)."""
        args = [os.fspath(a) for a in argv]
        print("+ " + shlex.join(args), file=self.log, flush=True)
        full_env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        full_env["PATH"] = full_env.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
        if env:
            full_env.update(env)
        try:
            proc = subprocess.run(
                args,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else self.log,
                stderr=self.log,
                env=full_env,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise BuildError(f"{args[0]}: command not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{args[0]} timed out after {timeout:g} s") from exc
        if proc.returncode != 0:
            raise BuildError(f"{shlex.join(args)[:300]} failed with exit status {proc.returncode}")
        return proc.stdout if capture else b""

    def in_chroot(self, tree: Path, script: str, apt_cache: Path | None = None, timeout: float = 1800) -> None:
        """Run a shell script chrooted in ``tree`` with /proc, /sys, /dev (and the apt cache) mounted.

        The mounts live in a private mount namespace that dies with the script: nothing is
        left mounted on the host, whatever happens.
        """
        binds = [
            'mount -t proc proc "$T/proc"',
            'mount -t sysfs sysfs "$T/sys"',
            'mount --rbind /dev "$T/dev"',
        ]
        if apt_cache is not None:
            binds.append('mount --bind "$C" "$T/var/cache/apt/archives"')
        outer = "set -eu\nT=$1; C=$2\n" + "\n".join(binds) + '\nexec chroot "$T" /bin/sh -euc "$3"\n'
        self.run(
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-euc", outer, "sh",
             tree, apt_cache or "", script],
            timeout=timeout,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# locks and cache


@contextlib.contextmanager
def flocked(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def builder_key() -> str:
    digest = hashlib.sha256()
    for path in BUILDER_FILES:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "liveimg" / "samples"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(cache_root: Path, key: str) -> None:
    """Remove the samples of other builder versions (unless in use) and work left by dead builds."""
    for entry in cache_root.iterdir():
        if entry.is_dir() and re.fullmatch(r"[0-9a-f]{16}", entry.name) and entry.name != key:
            fd = os.open(entry / ".inuse", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            else:
                remove_tree(entry)
            finally:
                os.close(fd)
    for entry in [*(cache_root / key).glob(".work-*"), *(cache_root / "base").glob(".work-*")]:
        match = re.match(r"\.work-[a-z0-9-]+?-(\d+)-", entry.name)
        if match and not _pid_alive(int(match.group(1))):
            remove_tree(entry)
    for entry in [*(cache_root / key).glob(".*.tmp"), *(cache_root / "base").glob(".*.tmp")]:
        match = re.search(r"\.(\d+)\.[0-9a-f]{8}\.tmp$", entry.name)
        if match and not _pid_alive(int(match.group(1))):
            entry.unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    """rmtree that first clears the immutable bit ostree sets on deployment roots."""
    for deployment in path.glob("**/ostree/deploy/*/deploy/*"):
        if deployment.is_dir() and not deployment.is_symlink():
            subprocess.run(["chattr", "-i", deployment], check=False, stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def work_dir(keydir: Path, what: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f".work-{what}-{os.getpid()}-", dir=keydir))
    try:
        yield path
    finally:
        remove_tree(path)


@contextlib.contextmanager
def output_file(dest: Path) -> Iterator[Path]:
    """A temporary path beside ``dest``, renamed onto it if the block succeeds, removed otherwise."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def apt_mirror() -> str:
    """The Debian mirror from this machine's apt sources, else deb.debian.org."""
    if env := os.environ.get("LIVEIMG_DEBIAN_MIRROR"):
        return env
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+/debian)/?\s", text, re.M):
            return match.group(1)
    return DEFAULT_MIRROR


# ---------------------------------------------------------------------------------------------
# the base system


def build_base(r: Runner, dest: Path, apt_cache: Path, work: Path) -> None:
    """debootstrap + dracut + kernel + sample configuration, as a tar.zst of the tree."""
    tree = work / "tree"
    mirror = apt_mirror()
    r.note(f"debootstrap {SUITE} from {mirror}")
    with flocked(apt_cache / ".lock"):
        r.run(
            ["unshare", "--mount", "--propagation", "private", "--", "debootstrap", "--variant=minbase",
             f"--include={','.join(BASE_PACKAGES)}", f"--cache-dir={apt_cache}", SUITE, tree, mirror],
            timeout=1800,
        )  # fmt: skip
        shutil.copy2("/etc/resolv.conf", tree / "etc/resolv.conf")
        conf = tree / "etc/dracut.conf.d/10-liveimg-sample.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(DRACUT_CONF)
        r.note("dracut and the kernel (its postinst builds a generic initramfs)")
        apt = "DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends -o DPkg::Lock::Timeout=600"
        r.in_chroot(
            tree,
            f"apt-get -q update\n{apt} install {' '.join(DRACUT_PACKAGES)}\n{apt} install {' '.join(KERNEL_PACKAGES)}\n"
            f"{apt} install {' '.join(EFI_PACKAGES)}\n"
            f"echo root:{ROOT_PASSWORD} | chpasswd\n",
            apt_cache=apt_cache,
        )
    configure_base(tree)
    r.note("packing the base tree")
    with output_file(dest) as tmp:
        r.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--zstd", "-C", tree, "-cf", tmp, "."])


def configure_base(tree: Path) -> None:
    (tree / "etc/resolv.conf").unlink(missing_ok=True)
    (tree / "etc/hostname").write_text(HOSTNAME + "\n")
    (tree / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\t\tlocalhost ip6-localhost\n")
    (tree / "etc/machine-id").write_text("")  # each boot of a copy gets its own
    script = tree / "usr/libexec/liveimg-sample-ready"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(MARKER_SCRIPT)
    script.chmod(0o755)
    (tree / "usr/lib/systemd/system/liveimg-sample-ready.service").write_text(MARKER_UNIT)
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "liveimg-sample-ready.service").symlink_to("/usr/lib/systemd/system/liveimg-sample-ready.service")
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for entry in (tree / junk).glob("*"):
            if entry.is_file() and entry.name not in ("lock",):
                entry.unlink()
    for entry in (tree / "var/cache/apt").glob("*.bin"):
        entry.unlink()


def unpack_base(r: Runner, base: Path, tree: Path) -> None:
    """Unpack the base tree (or a layer made from it) into ``tree``, with :data:`MASKED_UNITS` masked."""
    tree.mkdir()
    r.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", tree, "-xpf", base])
    for unit in MASKED_UNITS:
        link = tree / "etc/systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def kernel_version(tree: Path) -> str:
    versions = sorted(p.name for p in (tree / "usr/lib/modules").iterdir() if (p / "modules.dep").exists())
    if len(versions) != 1:
        raise BuildError(f"expected one kernel in the base tree, found {versions}")
    return versions[0]


# ---------------------------------------------------------------------------------------------
# disks


@dataclass(frozen=True)
class Partition:
    """One GPT partition of a sample disk; ``image`` (a filesystem image) is copied in if given."""

    name: str
    type_guid: str
    size_mib: int
    image: Path | None = None


@dataclass
class Manifest:
    """What a sample image holds: written beside it as ``<image>.json`` for tests and the demo."""

    variant: str
    format: str = "raw"
    builder_key: str = ""
    kernel_version: str = ""
    os_name: str | None = None
    kernel_args: list[str] = field(default_factory=list)
    root_fs_uuid: str | None = None
    boot_fs_uuid: str | None = None
    root_device: str = ""
    fstype: str = "ext4"
    deployments: int = 0
    #: atomic-update only: what the second commit changed (see :func:`apply_update`).
    update: dict[str, object] | None = None
    partitions: list[dict[str, object]] = field(default_factory=list)
    build_seconds: float = 0.0
    apparent_bytes: int = 0
    allocated_bytes: int = 0
    root_password: str = ROOT_PASSWORD
    hostname: str = HOSTNAME
    marker: str = MARKER


def tree_mib(path: Path) -> int:
    """Space the tree needs, in MiB (hard links counted once)."""
    out = subprocess.run(["du", "-sx", "--block-size=1M", path], capture_output=True, check=True, text=True)
    return int(out.stdout.split()[0])


def fs_size_mib(used_mib: int, factor: float = 1.25, extra: int = 256) -> int:
    size = int(used_mib * factor) + extra
    return -(-size // 64) * 64


def make_ext4(r: Runner, image: Path, source: Path, *, label: str, fs_uuid: str, size_mib: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mib * MIB)
    r.run(["mkfs.ext4", "-q", "-F", "-T", "default", "-b", "4096", "-L", label, "-U", fs_uuid, "-d", source, image])


def assemble_disk(r: Runner, disk: Path, parts: Sequence[Partition]) -> list[dict[str, object]]:
    """A sparse GPT disk with ``parts`` laid out from 1 MiB on; returns their offsets and sizes."""
    offset = 1
    layout: list[dict[str, object]] = []
    lines = ["label: gpt", "unit: sectors", "first-lba: 2048"]
    for number, part in enumerate(parts, 1):
        lines.append(f'start={offset * 2048}, size={part.size_mib * 2048}, type={part.type_guid}, name="{part.name}"')
        layout.append({"number": number, "name": part.name, "offset": offset * MIB, "size": part.size_mib * MIB})
        offset += part.size_mib
    with open(disk, "wb") as f:
        f.truncate((offset + 1) * MIB)  # room for the backup GPT
    r.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk], input=("\n".join(lines) + "\n").encode())
    for part, placed in zip(parts, layout, strict=True):
        if part.image is not None:
            seek = int(str(placed["offset"])) // MIB
            r.run(["dd", f"if={part.image}", f"of={disk}", "bs=1M", f"seek={seek}", "conv=notrunc,sparse",
                   "status=none"])  # fmt: skip
    return layout


def guestfs_env() -> dict[str, str]:
    """libguestfs settings from liveimg's accelerator choice (the repository's own module)."""
    sys.path.insert(0, str(HERE.parent))
    try:
        from liveimg.accel import choose_accel
    except ImportError:
        return {"LIBGUESTFS_BACKEND": "direct"}
    finally:
        sys.path.pop(0)
    return choose_accel().libguestfs_env()


# ---------------------------------------------------------------------------------------------
# variants


def make_ostree_tree(tree: Path, kver: str) -> None:
    """Turn a Debian tree into what rpm-ostree compose would commit (see environment.md)."""
    modules = tree / "usr/lib/modules" / kver
    shutil.move(tree / "boot" / f"vmlinuz-{kver}", modules / "vmlinuz")
    shutil.move(tree / "boot" / f"initrd.img-{kver}", modules / "initramfs.img")
    if (tree / "boot" / f"config-{kver}").exists():
        shutil.move(tree / "boot" / f"config-{kver}", modules / "config")
    for name in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        (tree / name).unlink(missing_ok=True)
    _empty(tree / "boot")
    shutil.move(tree / "etc", tree / "usr/etc")
    (tree / "usr/etc/machine-id").write_text("")
    (tree / "usr/etc/fstab").write_text("")  # as the seed's kickstart: nothing mounts /boot
    (tree / "usr/lib/tmpfiles.d/liveimg-sample-var.conf").write_text(VAR_TMPFILES)
    shutil.rmtree(tree / "var")
    (tree / "var").mkdir()
    for name, target in (("home", "var/home"), ("root", "var/roothome"), ("opt", "var/opt"), ("srv", "var/srv"),
                         ("mnt", "var/mnt"), ("media", "run/media")):  # fmt: skip
        path = tree / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    (tree / "sysroot").mkdir()
    (tree / "ostree").symlink_to("sysroot/ostree")
    for name in ("dev", "proc", "sys", "run", "tmp"):
        _empty(tree / name)  # ostree commit refuses device nodes


def _empty(path: Path) -> None:
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def append_cpio(r: Runner, initramfs: Path, work: Path, files: Mapping[str, str]) -> None:
    """Append an uncompressed newc archive of ``files`` to an initramfs (the kernel unpacks both)."""
    src = work / "extra-cpio"
    src.mkdir(parents=True)
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    names = "".join(sorted(str(p.relative_to(src)) + "\n" for p in src.rglob("*")))
    archive = r.run(["sh", "-c", 'cd "$1" && exec cpio --quiet -o -H newc -R 0:0', "sh", src],
                    input=names.encode(), capture=True)  # fmt: skip
    with open(initramfs, "ab") as f:
        pad = -f.tell() % 4  # each archive starts 4-byte aligned; the kernel skips zero padding
        f.write(b"\0" * pad + archive)


def _updated_bytes(relpath: str, old: bytes) -> bytes:
    """The "new version" of a file: each page's first 16 bytes replaced by a hash of its path and
    offset, and a trailer.  Deterministic, so every build of the sample holds the same bytes;
    every page differs from the old one while the file compresses as the old one did.
    """
    out = bytearray(old)
    for offset in range(0, len(old), UPDATE_PAGE):
        stamp = hashlib.sha256(f"liveimg-sample-update\0{relpath}\0{offset}".encode()).digest()[:16]
        end = min(offset + len(stamp), len(old))
        out[offset:end] = stamp[: end - offset]
    out += f"\nliveimg sample update of /{relpath}\n".encode()
    return bytes(out)


def _matches(tree: Path, patterns: Sequence[str]) -> list[Path]:
    """Regular files (not symlinks) matching ``patterns``; a pattern matching none is an error."""
    found: list[Path] = []
    for pattern in patterns:
        hits = sorted(p for p in tree.glob(pattern) if p.is_file() and not p.is_symlink())
        if not hits:
            raise BuildError(f"the update's pattern {pattern} matches no file in the base tree")
        found += [p for p in hits if p not in found]
    return found


def apply_update(tree: Path) -> dict[str, object]:
    """Change ``tree`` as an upgrade of apt would (see ``UPDATE_*``); return what changed.

    The result lists ``changed`` (path, old_bytes, new_bytes), ``added`` and ``removed`` (path,
    bytes), and their totals; paths are absolute in the deployment.
    """
    changed: list[dict[str, object]] = []
    added: list[dict[str, object]] = []
    removed: list[dict[str, object]] = []
    going = _matches(tree, UPDATE_REMOVE)
    for path in [p for p in _matches(tree, UPDATE_REWRITE) if p not in going]:
        rel = str(path.relative_to(tree))
        old = path.read_bytes()
        new = _updated_bytes(rel, old)
        path.write_bytes(new)
        changed.append({"path": "/" + rel, "old_bytes": len(old), "new_bytes": len(new)})
    for path in _matches(tree, UPDATE_BUMP):
        head, _, last = path.name.rpartition(".")
        bumped = path.with_name(f"{head}.{int(last) + 1}")
        old = path.read_bytes()
        new = _updated_bytes(str(bumped.relative_to(tree)), old)
        bumped.write_bytes(new)
        shutil.copymode(path, bumped)
        path.unlink()
        removed.append({"path": "/" + str(path.relative_to(tree)), "bytes": len(old)})
        added.append({"path": "/" + str(bumped.relative_to(tree)), "bytes": len(new)})
        for link in path.parent.iterdir():
            if link.is_symlink() and os.readlink(link) == path.name:
                link.unlink()
                link.symlink_to(bumped.name)
    for path in going:
        removed.append({"path": "/" + str(path.relative_to(tree)), "bytes": path.stat().st_size})
        path.unlink()
    for rel in UPDATE_ADD:
        lines = [f"{name['path']}: rewritten, {name['old_bytes']} -> {name['new_bytes']} bytes\n" for name in changed]
        text = "liveimg sample update (generation 2)\n\n" + "".join(lines)
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
        added.append({"path": "/" + rel, "bytes": len(text.encode())})
    return {
        "changed": changed,
        "added": added,
        "removed": removed,
        "changed_bytes": sum(int(str(c["new_bytes"])) for c in changed),
        "added_bytes": sum(int(str(a["bytes"])) for a in added),
        "removed_bytes": sum(int(str(d["bytes"])) for d in removed),
    }


def deploy_ostree(r: Runner, tree: Path, sysroot: Path, *, kargs: Sequence[str], deployments: int, work: Path) -> None:
    """Commit ``tree`` and deploy it ``deployments`` times, each later generation changed first.

    A later generation gets a rebuilt initramfs (a new boot checksum).
    """
    ref = f"{OS_NAME}/{SUITE}/x86_64"
    repo = sysroot / "ostree/repo"
    r.run(["ostree", "admin", "init-fs", sysroot])
    r.run(["ostree", "admin", "os-init", f"--sysroot={sysroot}", OS_NAME])
    # The repo is written once and copied into a filesystem image: fsync buys nothing here and
    # costs minutes on a busy machine.
    r.run(["ostree", "config", f"--repo={repo}", "set", "core.fsync", "false"])
    for generation in range(1, deployments + 1):
        kver = kernel_version(tree)
        if generation > 1:
            # A rebuilt initramfs: a new boot checksum, hence a second ostree/boot.N/<os>/<bootcsum>.
            append_cpio(r, tree / "usr/lib/modules" / kver / "initramfs.img", work / f"gen{generation}",
                        {"etc/liveimg-sample-initramfs-generation": f"{generation}\n"})  # fmt: skip
        mark_generation(tree, generation)
        r.note(f"ostree commit {generation}/{deployments}")
        r.run(["ostree", f"--repo={repo}", "commit", f"--branch={ref}", f"--tree=dir={tree}", "--no-xattrs",
               f"--subject=liveimg sample, generation {generation}"], timeout=1800)  # fmt: skip
        r.note(f"ostree admin deploy {generation}/{deployments}")
        karg_opts = [f"--karg={k}" for k in kargs] if generation == 1 else []  # later ones inherit
        r.run(["ostree", "admin", "deploy", f"--sysroot={sysroot}", f"--os={OS_NAME}", *karg_opts, ref], timeout=1800)


def mark_generation(tree: Path, generation: int) -> tuple[str, int, int]:
    """Write the tree's generation mark; return its deployment path and its old and new sizes."""
    mark = tree / "usr/lib/liveimg-sample/generation"
    mark.parent.mkdir(parents=True, exist_ok=True)
    old = mark.read_bytes() if mark.exists() else b""
    mark.write_text(f"{generation}\n")
    return "/" + str(mark.relative_to(tree)), len(old), mark.stat().st_size


#: How the update is committed and deployed into the ``atomic`` sample's copy, run in a private
#: mount namespace: its two partitions on loop devices (detached on any exit), root mounted with
#: /boot on it, the commit and deploy ``ostree admin upgrade`` would do, then both checked.
#: ``ostree commit`` counts every byte it streams against the free space, objects the repo already
#: has included (a pull would write only the new ones), so its free-space floor is lifted for
#: the commit and put back after.
UPDATE_SCRIPT = """\
disk=$1 mnt=$2 tree=$3 ref=$4 os=$5 subject=$6 stamp=$7
boot=$(losetup --find --show --offset "$8" --sizelimit "$9" "$disk")
trap 'losetup -d "$boot"' EXIT
root=$(losetup --find --show --offset "${10}" --sizelimit "${11}" "$disk")
trap 'losetup -d "$boot" "$root"' EXIT
mount -t ext4 "$root" "$mnt"
mount -t ext4 "$boot" "$mnt/boot"
repo=$mnt/ostree/repo
ostree config --repo="$repo" set core.min-free-space-percent 0
ostree --repo="$repo" commit --branch="$ref" --tree=dir="$tree" --no-xattrs --timestamp="$stamp" \
    --subject="$subject"
ostree config --repo="$repo" unset core.min-free-space-percent
ostree admin deploy --sysroot="$mnt" --os="$os" "$ref"
umount "$mnt/boot"
umount "$mnt"
e2fsck -f -n "$boot"
e2fsck -f -n "$root"
"""


def build_atomic_update(r: Runner, base: Path, disk: Path, work: Path, *, keydir: Path, cache_root: Path) -> Manifest:
    """The ``atomic`` sample (built first if needed) upgraded in place, as ``ostree admin upgrade`` does.

    Its filesystems are not remade: the new commit's objects and deployment are written into the
    existing root and /boot, so everything else keeps its blocks where the ``atomic`` sample has them.
    """
    atomic = ensure_image(keydir, cache_root, "atomic", "raw")
    old = json.loads(atomic.with_name(atomic.name + ".json").read_text())
    r.note(f"copying {atomic}")
    r.run(["cp", "--sparse=always", atomic, disk])
    tree = work / "tree"
    r.note("unpacking the base tree and applying the update")
    unpack_base(r, base, tree)
    make_ostree_tree(tree, old["kernel_version"])
    mark_generation(tree, 1)  # the tree of the atomic sample's commit, byte for byte
    changes = apply_update(tree)
    path, old_size, new_size = mark_generation(tree, 2)
    changed = changes["changed"]
    assert isinstance(changed, list)
    changed.append({"path": path, "old_bytes": old_size, "new_bytes": new_size})
    changes["changed_bytes"] = int(str(changes["changed_bytes"])) + new_size
    parts = {str(p["name"]): p for p in old["partitions"]}
    mnt = work / "mnt"
    mnt.mkdir()
    r.note("ostree commit and admin deploy into the atomic sample's filesystems")
    r.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-euc", UPDATE_SCRIPT, "sh", disk, mnt,
           tree, f"{OS_NAME}/{SUITE}/x86_64", OS_NAME, "liveimg sample, generation 2", UPDATE_TIMESTAMP,
           *(str(parts[name][key]) for name in ("boot", "root") for key in ("offset", "size"))],
          timeout=1800)  # fmt: skip
    m = Manifest(variant="atomic-update", os_name=OS_NAME)
    for name in ("kernel_version", "kernel_args", "root_fs_uuid", "boot_fs_uuid", "root_device", "partitions"):
        setattr(m, name, old[name])
    m.deployments = 2
    m.update = changes
    return m


def build_atomic(r: Runner, variant: str, base: Path, disk: Path, work: Path) -> Manifest:
    m = Manifest(variant=variant, os_name=OS_NAME)
    tree = work / "tree"
    r.note("unpacking the base tree")
    unpack_base(r, base, tree)
    m.kernel_version = kernel_version(tree)
    make_ostree_tree(tree, m.kernel_version)
    lvm = variant == "atomic-xfs-lvm"
    m.root_fs_uuid = None if lvm else str(uuid.uuid4())
    m.boot_fs_uuid = str(uuid.uuid4())
    if lvm:
        m.root_device = f"/dev/mapper/{VOLUME_GROUP}-root"
        m.fstype = "xfs"
        m.kernel_args = [f"root={m.root_device}", f"rd.lvm.lv={VOLUME_GROUP}/root", "rw", *CONSOLE_KARGS]
    else:
        m.root_device = f"UUID={m.root_fs_uuid}"
        m.kernel_args = [f"root=UUID={m.root_fs_uuid}", "rw", *CONSOLE_KARGS]
    m.deployments = 2 if variant == "atomic-2deploy" else 1
    sysroot = work / "sysroot"
    sysroot.mkdir()
    deploy_ostree(r, tree, sysroot, kargs=m.kernel_args, deployments=m.deployments, work=work)
    remove_tree(tree)
    # /boot is its own partition: its files go there, the root keeps the empty mount point.
    bootdir = work / "bootfs"
    bootdir.mkdir()
    for entry in (sysroot / "boot").iterdir():
        shutil.move(entry, bootdir / entry.name)
    r.note("making filesystems and the disk")
    boot_img = work / "boot.ext4"
    make_ext4(r, boot_img, bootdir, label="boot", fs_uuid=m.boot_fs_uuid, size_mib=512)
    root_mib = fs_size_mib(tree_mib(sysroot), 1.3, 384 if lvm else 256)
    if lvm:
        m.partitions = assemble_disk(r, disk, [
            Partition("biosboot", GPT_BIOS_BOOT, 1),
            Partition("boot", GPT_LINUX_FS, 512, boot_img),
            Partition("lvm", GPT_LINUX_LVM, root_mib),
        ])  # fmt: skip
        fill_lvm_xfs(r, disk, sysroot, work)
        remove_tree(sysroot)
    else:
        root_img = work / "root.ext4"
        make_ext4(r, root_img, sysroot, label="root", fs_uuid=m.root_fs_uuid or "", size_mib=root_mib)
        remove_tree(sysroot)
        m.partitions = assemble_disk(r, disk, [
            Partition("biosboot", GPT_BIOS_BOOT, 1),
            Partition("boot", GPT_LINUX_FS, 512, boot_img),
            Partition("root", GPT_ROOT_X86_64, root_mib, root_img),
        ])  # fmt: skip
    return m


def fill_lvm_xfs(r: Runner, disk: Path, sysroot: Path, work: Path) -> None:
    """Make LV ``atomicos/root`` on partition 3 of ``disk`` and put an xfs holding ``sysroot`` in it.

    libguestfs writes the LVM metadata (no host tool can without activating the VG on the
    host).  Filling an xfs has no mount-free tool (``mkfs.xfs -p`` loses hard links, which
    ostree's repo and deployments share), and copying 800 MiB inside the TCG appliance takes
    minutes, so the xfs is filled on the host through a loop mount that lives only in a
    private mount namespace (the loop device auto-clears with it), then placed at the LV's
    first extent.
    """
    r.note("LVM metadata in a libguestfs appliance")
    script = f"""\
add {disk} format:raw
run
pvcreate /dev/sda3
vgcreate {VOLUME_GROUP} /dev/sda3
lvcreate-free root {VOLUME_GROUP} 100
echo LV-SIZE
blockdev-getsize64 /dev/{VOLUME_GROUP}/root
echo PV
pvs-full
"""
    out = r.run(["guestfish"], input=script.encode(), env=guestfs_env(), timeout=1200, capture=True).decode()
    lv_size = int(out.split("LV-SIZE\n", 1)[1].split()[0])
    pe_start = int(re.search(r"pe_start: (\d+)", out).group(1))  # type: ignore[union-attr]
    r.note(f"xfs of {lv_size // MIB} MiB, filled on the host")
    xfs = work / "root.xfs"
    with open(xfs, "wb") as f:
        f.truncate(lv_size)
    r.run(["mkfs.xfs", "-q", "-f", "-L", "root", xfs])
    mnt = work / "mnt"
    mnt.mkdir()
    r.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-euc",
           'mount -o loop "$1" "$2"; cp -a "$3"/. "$2"/; umount "$2"', "sh", xfs, mnt, sysroot])  # fmt: skip
    part = json.loads(r.run(["sfdisk", "--json", disk], capture=True))["partitiontable"]["partitions"][2]
    seek = part["start"] * 512 + pe_start
    r.run(["dd", f"if={xfs}", f"of={disk}", "bs=1M", f"seek={seek}", "oflag=seek_bytes", "conv=notrunc,sparse",
           "status=none"])  # fmt: skip


def build_classic(r: Runner, base: Path, disk: Path, work: Path) -> Manifest:
    m = Manifest(variant="classic")
    tree = work / "tree"
    r.note("unpacking the base tree")
    unpack_base(r, base, tree)
    m.kernel_version = kernel_version(tree)
    m.root_fs_uuid = str(uuid.uuid4())
    m.root_device = f"UUID={m.root_fs_uuid}"
    m.kernel_args = [f"root=UUID={m.root_fs_uuid}", "rw", *CONSOLE_KARGS]
    (tree / "etc/fstab").write_text(f"UUID={m.root_fs_uuid}\t/\text4\terrors=remount-ro\t0\t1\n")
    kernel_cmdline = tree / "etc/kernel/cmdline"
    kernel_cmdline.parent.mkdir(parents=True, exist_ok=True)
    kernel_cmdline.write_text(" ".join(m.kernel_args) + "\n")
    r.note("making the filesystem and the disk")
    root_img = work / "root.ext4"
    make_ext4(r, root_img, tree, label="root", fs_uuid=m.root_fs_uuid, size_mib=fs_size_mib(tree_mib(tree)))
    root_mib = os.path.getsize(root_img) // MIB
    shutil.rmtree(tree)
    m.partitions = assemble_disk(r, disk, [
        Partition("biosboot", GPT_BIOS_BOOT, 1),
        Partition("root", GPT_ROOT_X86_64, root_mib, root_img),
    ])  # fmt: skip
    return m


# ---------------------------------------------------------------------------------------------
# entry points


def base_key() -> str:
    """Key of the base tarball: only what goes into the base, so variant edits do not redo debootstrap."""
    recipe = [inspect.getsource(f) for f in (build_base, configure_base, Runner.in_chroot)]
    recipe += [repr(v) for v in (SUITE, BASE_PACKAGES, DRACUT_PACKAGES, KERNEL_PACKAGES, EFI_PACKAGES, DRACUT_CONF,
                                  MARKER_SCRIPT, MARKER_UNIT, HOSTNAME, ROOT_PASSWORD)]  # fmt: skip
    return hashlib.sha256("\0".join(recipe).encode()).hexdigest()[:16]


def ensure_base(cache_root: Path, force: bool = False) -> Path:
    """The cached base system (``<cache>/base/<key>.tar.zst``), built first if needed."""
    key = base_key()
    bases = cache_root / "base"
    dest = bases / f"{key}.tar.zst"
    with flocked(bases / f".{key}.lock"):
        if dest.exists() and not force:
            return dest
        logfile = bases / f"{key}.log"
        with open(logfile, "w") as log, work_dir(bases, "base") as work:
            r = Runner(log)
            started = time.monotonic()
            try:
                build_base(r, dest, cache_root / "debs", work)
            except BaseException:
                _tail_log(logfile)
                raise
            r.note(f"base system built in {time.monotonic() - started:.0f} s: {dest}")
        for old in bases.glob("*.tar.zst"):
            if old != dest:
                with flocked(bases / f".{old.name.split('.')[0]}.lock"):
                    old.unlink(missing_ok=True)
    return dest


def ensure_image(keydir: Path, cache_root: Path, variant: str, fmt: str, force: bool = False) -> Path:
    """The cached sample ``variant`` in format ``fmt``, built first if needed."""
    dest = keydir / f"{variant}.{fmt}"
    with flocked(keydir / f".{variant}.{fmt}.lock"):
        if dest.exists() and dest.with_name(dest.name + ".json").exists() and not force:
            return dest
        if fmt == "qcow2":
            raw = ensure_image(keydir, cache_root, variant, "raw")
            manifest = json.loads(raw.with_name(raw.name + ".json").read_text())
            started = time.monotonic()
            with open(keydir / f"{variant}.qcow2.log", "w") as log, output_file(dest) as tmp:
                Runner(log).run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, tmp])
                manifest["format"] = "qcow2"
                manifest["build_seconds"] = round(time.monotonic() - started, 1)
                _finish(tmp, dest, manifest)
            return dest
        base = ensure_base(cache_root)
        logfile = keydir / f"{variant}.raw.log"
        with open(logfile, "w") as log, work_dir(keydir, variant) as work, output_file(dest) as tmp:
            r = Runner(log)
            started = time.monotonic()
            try:
                if variant == "classic":
                    m = build_classic(r, base, tmp, work)
                elif variant == "atomic-update":
                    m = build_atomic_update(r, base, tmp, work, keydir=keydir, cache_root=cache_root)
                else:
                    m = build_atomic(r, variant, base, tmp, work)
            except BaseException:
                _tail_log(logfile)
                raise
            m.builder_key = keydir.name
            m.build_seconds = round(time.monotonic() - started, 1)
            _finish(tmp, dest, asdict(m))
            r.note(f"{variant} built in {m.build_seconds:.0f} s")
    return dest


def _finish(tmp: Path, dest: Path, manifest: dict[str, object]) -> None:
    st = os.stat(tmp)
    manifest["apparent_bytes"] = st.st_size
    manifest["allocated_bytes"] = st.st_blocks * 512
    meta = dest.with_name(dest.name + ".json")
    with output_file(meta) as meta_tmp:
        meta_tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    # The manifest lands first (the caller renames the image next): an image without one is rebuilt.


def _tail_log(path: Path, lines: int = 40) -> None:
    with contextlib.suppress(OSError):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- last lines of {path} ---", *tail, sep="\n", file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make-sample-image",
        description="Build (or reuse from the cache) a sample installed-system disk image; print its path.",
    )
    parser.add_argument("--variant", choices=VARIANTS, default="atomic")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="raw")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: ~/.cache/liveimg/samples")
    parser.add_argument("--force", action="store_true", help="rebuild the image even if cached (not the base)")
    parser.add_argument("--rebuild-base", action="store_true", help="rebuild the cached base system too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("make-sample-image: must run as root (debootstrap, chroot, file ownership)", file=sys.stderr)
        return 2
    for tool in ("debootstrap", "unshare", "ostree", "mkfs.ext4", "sfdisk", "zstd", "cpio"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            print(f"make-sample-image: {tool} is missing (run scripts/setup-host)", file=sys.stderr)
            return 2
    with contextlib.suppress(OSError):
        os.nice(10)  # a background chore on a shared machine
    cache_root = (args.cache_dir or default_cache_dir()).absolute()
    key = builder_key()
    keydir = cache_root / key
    keydir.mkdir(parents=True, exist_ok=True)
    (cache_root / "debs").mkdir(exist_ok=True)
    (cache_root / "base").mkdir(exist_ok=True)
    with flocked(keydir / ".inuse", shared=True):
        prune(cache_root, key)
        try:
            if args.rebuild_base:
                ensure_base(cache_root, force=True)
            path = ensure_image(keydir, cache_root, args.variant, args.fmt, force=args.force or args.rebuild_base)
        except BuildError as exc:
            print(f"make-sample-image: {exc}", file=sys.stderr)
            return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
