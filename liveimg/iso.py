"""The live ISO: the same live system on a CD, a virtual CD in a BMC, or a USB stick.

:func:`write_iso` writes a hybrid ISO with pycdlib (ISO 9660 with Joliet and Rock Ridge), laid
out as lorax lays out its live media::

    LiveOS/squashfs.img              the live file (the squashfs, or the erofs image)
    images/pxeboot/vmlinuz           the kernel, and the same extent as isolinux/vmlinuz
    images/pxeboot/initrd.img        the live initramfs, and the same extent as isolinux/initrd.img
    isolinux/isolinux.bin            the El Torito BIOS boot image (no emulation, boot info table)
    isolinux/ldlinux.c32             syslinux's core module, which isolinux.bin loads
    isolinux/isolinux.cfg            root=live:CDLABEL=<label> rd.live.image ...; and again with
                                     rd.live.check (dracut's media check) as a second entry,
                                     where the initramfs has checkisomd5
    isolinux/boot.cat                the El Torito boot catalog
    images/efiboot.img               the El Torito UEFI boot image: a FAT holding EFI/BOOT/BOOTX64.EFI
    EFI/BOOT/grub.cfg                the UEFI menu: the same entries, for GRUB

with an isohybrid MBR (syslinux's ``isohdpfx.bin``; a partition over the whole image and one,
type 0xef, over ``efiboot.img``, and a GPT as ``isohybrid --uefi`` makes) so that the same file
boots from a disk or USB stick with BIOS.  ``BOOTX64.EFI`` is GRUB, made by
``grub-mkimage`` (Debian's grub-efi-amd64-bin) with its modules built in and a first
configuration that finds the ISO by its label and reads ``EFI/BOOT/grub.cfg`` there; the FAT
is made by ``mkfs.fat`` and filled by mtools, without mounting anything.  The kernel command
line is the PXE configs' (:func:`liveimg.pxe.live_kernel_args`) with
``root=live:CDLABEL=<label>`` and without the network's ``ip=dhcp`` and cloud-init seed; every
value goes through :mod:`liveimg.bootsyntax`.  Last, ``implantisomd5`` (isomd5sum) writes the
image's MD5 into its primary volume descriptor, which dracut's ``rd.live.check`` verifies
with ``checkisomd5`` where the image has it.

The volume label is ``--iso-label``, else made from the image's ``ID``, ``VERSION_ID`` and
architecture as lorax makes it from the product, version and architecture, in ISO 9660's
d-characters (:func:`liveimg.bootsyntax.iso_label_from`).

Reproducible: every time in the image (the volume descriptors', every directory record's and
Rock Ridge's, the FAT's) is ``$SOURCE_DATE_EPOCH`` (the time of writing when unset), in UTC
whatever the host's time zone; the MBR's disk signature and the FAT's serial number are derived
from the label and that time; grub-mkimage's output depends on its input only.  pycdlib
stamps its records with the current local time as it makes them; they are all set again
before the image is written.

The ISO is written through :class:`~liveimg.staging.AtomicOutput`: the old file or the whole new
one, never a part.  :func:`make_iso` makes it from a finished OUTDIR (its ``manifest.json``),
so that a PXE build need not be repeated; the build's ``iso`` stage calls the same writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycdlib
from pycdlib import dates as pycdlib_dates
from pycdlib.pycdlibexception import PyCdlibException

from liveimg import bootsyntax
from liveimg import run as runner
from liveimg.bootsyntax import GrubConfig, Source, SyslinuxConfig
from liveimg.dracut.initramfs import Initramfs
from liveimg.errors import HostError, InternalError
from liveimg.manifest import live_boot, read_manifest, sha256_file, write_manifest
from liveimg.outdir import OutdirLock
from liveimg.progress import Progress
from liveimg.pxe import LiveBoot, PxeOptions, live_kernel_args
from liveimg.reproducible import source_date_epoch
from liveimg.staging import AtomicOutput

log = logging.getLogger(__name__)

#: The ISO's name in OUTDIR.
ISO_NAME = "live.iso"
#: Debian's isolinux (package isolinux) and syslinux's BIOS modules (syslinux-common).
ISOLINUX_DIR = Path("/usr/lib/ISOLINUX")
SYSLINUX_BIOS_DIR = Path("/usr/lib/syslinux/modules/bios")
#: syslinux's isohybrid MBR for isolinux.bin: its first 432 bytes are the boot code.
ISOHDPFX = "isohdpfx.bin"
#: What the isohybrid MBR checks at offset 0x40 of isolinux.bin before it jumps there.
ISOLINUX_SIGNATURE = b"\xfb\xc0\x78\x70"
#: The Joliet volume identifier holds 16 UCS-2 characters (ECMA-119's 32 bytes).
JOLIET_LABEL = 16
#: The image's paths: (ISO 9660 level-1 name, Rock Ridge and Joliet path).
LIVE = ("/LIVEOS/SQUASHFS.IMG;1", "/LiveOS/squashfs.img")
PXEBOOT_KERNEL = ("/IMAGES/PXEBOOT/VMLINUZ.;1", "/images/pxeboot/vmlinuz")
PXEBOOT_INITRD = ("/IMAGES/PXEBOOT/INITRD.IMG;1", "/images/pxeboot/initrd.img")
ISOLINUX_KERNEL = ("/ISOLINUX/VMLINUZ.;1", "/isolinux/vmlinuz")
ISOLINUX_INITRD = ("/ISOLINUX/INITRD.IMG;1", "/isolinux/initrd.img")
ISOLINUX_BIN = ("/ISOLINUX/ISOLINUX.BIN;1", "/isolinux/isolinux.bin")
LDLINUX = ("/ISOLINUX/LDLINUX.C32;1", "/isolinux/ldlinux.c32")
ISOLINUX_CFG = ("/ISOLINUX/ISOLINUX.CFG;1", "/isolinux/isolinux.cfg")
BOOT_CAT = ("/ISOLINUX/BOOT.CAT;1", "/isolinux/boot.cat")
EFIBOOT_IMG = ("/IMAGES/EFIBOOT.IMG;1", "/images/efiboot.img")
EFI_GRUB_CFG = ("/EFI/BOOT/GRUB.CFG;1", "/EFI/BOOT/grub.cfg")
DIRECTORIES = (
    ("/LIVEOS", "/LiveOS"),
    ("/IMAGES", "/images"),
    ("/IMAGES/PXEBOOT", "/images/pxeboot"),
    ("/ISOLINUX", "/isolinux"),
    ("/EFI", "/EFI"),
    ("/EFI/BOOT", "/EFI/BOOT"),
)
#: Debian's GRUB for x86-64 UEFI (package grub-efi-amd64-bin), and the modules built into BOOTX64.EFI.
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")
GRUB_MODULES = ("normal", "configfile", "search", "search_label", "iso9660", "fat", "part_msdos", "part_gpt",
                "linux", "gzio", "echo", "test", "all_video", "serial", "terminal")  # fmt: skip
#: The FAT of the UEFI boot image: its label, and room beside BOOTX64.EFI (KiB).
EFI_FAT_LABEL = "EFIBOOT"
EFI_FAT_SLACK_KIB = 512
#: Time limit of implantisomd5, which reads the whole ISO.
IMPLANT_TIMEOUT = 3600.0
#: Time limit of grub-mkimage, mkfs.fat and mtools (each makes a few MiB).
EFI_TOOL_TIMEOUT = 300.0


@dataclass(frozen=True)
class IsoOptions:
    """``--iso``: a live ISO beside the PXE artifacts.  ``label``: its volume label (default: the OS's)."""

    label: str | None = None

    def __post_init__(self) -> None:
        if self.label is not None:
            bootsyntax.iso_label(self.label)


@dataclass(frozen=True)
class IsoContent:
    """The files that go into the ISO (host paths)."""

    kernel: Path
    initramfs: Path
    live: Path  # the live file: LiveOS/squashfs.img


@dataclass(frozen=True)
class IsoResult:
    """An ISO written: where, its label, its kernel command line, size and sha256."""

    path: Path
    label: str
    kernel_args: tuple[str, ...]
    size: int
    sha256: str
    media_check: bool = False  # the menus' second entry, with rd.live.check

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``iso`` entry."""
        return {
            "file": self.path.name,
            "label": self.label,
            "kernel_args": list(self.kernel_args),
            "size": self.size,
            "sha256": self.sha256,
            "media_check": self.media_check,
        }


def default_label(os_id: str | None, version_id: str | None, arch: str | None) -> str:
    """The volume label lorax would choose (``<name>-<version>-<arch>``), in d-characters."""
    return bootsyntax.iso_label_from(os_id or "linux", version_id, arch)


def iso_kernel_args(boot: LiveBoot, options: PxeOptions, label: str) -> list[str]:
    """The ISO's kernel command line: the PXE configs' with ``root=live:CDLABEL=<label>``, no network."""
    root = f"root=live:CDLABEL={bootsyntax.iso_label(label, source=Source.CALLER)}"
    return live_kernel_args(boot, options, root, url=None)


#: dracut's media check: checkisomd5 verifies the implanted MD5 before the live image is used.
MEDIA_CHECK = "rd.live.check"


#: The program dracut's media check runs, which dracut takes into the initramfs from the image.
CHECKISOMD5 = "checkisomd5"


def has_media_check(initramfs: Path) -> bool:
    """Whether ``initramfs`` (the image's, read as guest data) has ``checkisomd5``: without it,
    dracut refuses to boot with ``rd.live.check``."""
    with Initramfs(initramfs) as reader:
        return bool(reader.find(f"usr/bin/{CHECKISOMD5}") or reader.find(f"bin/{CHECKISOMD5}"))


def _entries(boot: LiveBoot, args: Sequence[str], media_check: bool) -> list[tuple[str, str, list[str]]]:
    """(name, menu title, kernel arguments) of each menu entry: the live system (the default),
    and, with ``media_check``, the same after dracut's media check, as lorax offers it."""
    title = bootsyntax.label(boot.title)
    entries = [("live", f"{title} (live)", list(args))]
    if media_check and MEDIA_CHECK not in args:
        entries.append(("check", f"Check the medium, then {title} (live)", [*args, MEDIA_CHECK]))
    return entries


def isolinux_config(boot: LiveBoot, args: Sequence[str], *, media_check: bool = True) -> str:
    """``isolinux/isolinux.cfg``: the entries, the first booted after 5 s; ``args`` are checked kernel arguments."""
    config = SyslinuxConfig("isolinux configuration generated by liveimg")
    config.directive("DEFAULT", "live")
    config.directive("PROMPT", "0")
    config.directive("TIMEOUT", "50")
    for name, title, entry_args in _entries(boot, args, media_check):
        config.directive("LABEL", name)
        config.directive("MENU LABEL", title, indent=2)
        config.directive("KERNEL", ISOLINUX_KERNEL[1], indent=2)
        config.directive("APPEND", f"initrd={ISOLINUX_INITRD[1]}", *entry_args, indent=2)
    return config.text()


def grub_config(boot: LiveBoot, args: Sequence[str], label: str, *, media_check: bool = True) -> str:
    """``EFI/BOOT/grub.cfg``: the same entries, from the ISO found by its label."""
    config = GrubConfig("GRUB configuration generated by liveimg (the live ISO, UEFI)")
    config.command("search", "--no-floppy", "--set=root", "--label", bootsyntax.iso_label(label))
    config.command("set", "default=0")
    config.command("set", "timeout=5")
    for _, title, entry_args in _entries(boot, args, media_check):
        config.begin("menuentry", title)
        config.command("linux", PXEBOOT_KERNEL[1], *(bootsyntax.grub_linux_word(a) for a in entry_args))
        config.command("initrd", PXEBOOT_INITRD[1])
        config.end()
    return config.text()


def grub_early_config(label: str) -> str:
    """The configuration built into BOOTX64.EFI: find the ISO by its label, read its grub.cfg."""
    config = GrubConfig("liveimg: the live ISO's GRUB, from its El Torito UEFI image")
    config.command("search", "--no-floppy", "--set=root", "--label", bootsyntax.iso_label(label))
    config.command("configfile", EFI_GRUB_CFG[1])
    return config.text()


def _host_file(directory: Path, name: str, packages: str = "isolinux and syslinux-common") -> Path:
    path = directory / name
    if not path.is_file():
        raise HostError(f"{path} is missing", hint=f"install the Debian packages {packages}")
    return path


def efi_boot_image(dest: Path, label: str, when: int, work: Path, *, extra_kib: int = 0) -> None:
    """The El Torito UEFI boot image at ``dest``: a FAT holding GRUB as ``EFI/BOOT/BOOTX64.EFI``
    (``extra_kib`` more free space than usual: :func:`write_iso` grows the ISO with it)."""
    _host_file(GRUB_EFI_DIR, "linux.mod", "grub-efi-amd64-bin")
    early = work / "early.cfg"
    early.write_text(grub_early_config(label))
    grub = work / "BOOTX64.EFI"
    runner.run(["grub-mkimage", "-O", "x86_64-efi", "-d", GRUB_EFI_DIR, "-p", "/EFI/BOOT", "-c", early,
                "-o", grub, *GRUB_MODULES], timeout=EFI_TOOL_TIMEOUT, package="grub-common")  # fmt: skip
    os.utime(grub, (when, when))  # mcopy -m keeps it
    size_kib = (grub.stat().st_size // 1024 + EFI_FAT_SLACK_KIB + 1023) // 1024 * 1024 + extra_kib
    serial = hashlib.sha256(f"liveimg-efi\0{label}\0{when}".encode()).hexdigest()[:8]
    runner.run(["mkfs.fat", "-C", "--invariant", "-i", serial, "-n", EFI_FAT_LABEL, dest, str(size_kib)],
               timeout=EFI_TOOL_TIMEOUT, package="dosfstools")  # fmt: skip
    # mtools stamps what it makes with SOURCE_DATE_EPOCH when it is set.
    env = {"SOURCE_DATE_EPOCH": str(when), "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC0"}  # FAT times are local
    runner.run(["mmd", "-i", dest, "::/EFI", "::/EFI/BOOT"], timeout=EFI_TOOL_TIMEOUT, env=env, package="mtools")
    runner.run(["mcopy", "-m", "-i", dest, grub, "::/EFI/BOOT/BOOTX64.EFI"], timeout=EFI_TOOL_TIMEOUT, env=env,
               package="mtools")  # fmt: skip


def write_iso(
    dest: Path,
    content: IsoContent,
    boot: LiveBoot,
    args: Sequence[str],
    label: str,
    *,
    media_check: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the hybrid live ISO at ``dest`` (atomically) from ``content``; see the module.

    ``args`` are the checked kernel arguments of :func:`iso_kernel_args`; ``media_check``: the
    menus offer a second entry with ``rd.live.check``; ``on_progress`` gets (bytes written,
    bytes in all) as the image is written.
    """
    label = bootsyntax.iso_label(label, source=Source.CALLER)
    bootsyntax.command_line(args)
    isolinux_bin = _host_file(ISOLINUX_DIR, "isolinux.bin")
    ldlinux = _host_file(SYSLINUX_BIOS_DIR, "ldlinux.c32")
    mbr = _host_file(ISOLINUX_DIR, ISOHDPFX).read_bytes()
    if len(mbr) != 432 or isolinux_bin.read_bytes()[0x40:0x44] != ISOLINUX_SIGNATURE:
        raise HostError(f"{ISOLINUX_DIR}: isolinux.bin and {ISOHDPFX} are not syslinux's isohybrid pair")
    for path in (content.kernel, content.initramfs, content.live):
        if not path.is_file():
            raise InternalError(f"{path} is missing: the ISO is made of a build's files")
    epoch = source_date_epoch()
    when = epoch if epoch is not None else int(time.time())
    config = isolinux_config(boot, args, media_check=media_check).encode()
    grub_cfg = grub_config(boot, args, label, media_check=media_check).encode()
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.efi.", dir=dest.parent))
    except OSError as exc:
        raise HostError(f"cannot create a work directory beside {dest}: {exc.strerror}") from exc
    try:
        efiboot = work / "efiboot.img"
        extra_kib = 0
        for _attempt in range(2):
            efiboot.unlink(missing_ok=True)  # mkfs.fat -C makes a new file only
            efi_boot_image(efiboot, label, when, work, extra_kib=extra_kib)
            image = _assemble(content, label, when, config, grub_cfg, efiboot, isolinux_bin, ldlinux, mbr)
            room = _gpt_backup_room(image)
            if room >= GPT_BACKUP_BYTES:
                break
            # pycdlib pads the image to a whole cylinder and writes the GPT's backup over its last
            # 16.5 KiB: had the padding less room than that, it would overwrite the last file's
            # end.  A bigger UEFI image moves the end of the data past the next cylinder.
            image.close()
            extra_kib = -(-(room + GPT_BACKUP_BYTES) // ISO_BLOCK) * ISO_BLOCK // 1024
        else:
            raise InternalError(f"the ISO's padding leaves {room} bytes for the GPT's backup (need {GPT_BACKUP_BYTES})")
        _write_iso(image, dest, when, on_progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: The GPT's backup at the end of a hybrid image: 128 entries of 128 bytes and the header's sector.
GPT_BACKUP_BYTES = 128 * 128 + 512
ISO_BLOCK = 2048


def _gpt_backup_room(image: pycdlib.PyCdlib) -> int:
    """The bytes between the end of the image's data and the end of its padding to a whole
    cylinder (isohybrid's geometry), where pycdlib writes the GPT's backup."""
    hybrid = image.isohybrid_mbr
    if hybrid is None:
        raise InternalError("pycdlib made no isohybrid MBR")
    cylinder = int(hybrid.geometry_heads) * int(hybrid.geometry_sectors) * 512
    return -(int(image.pvd.space_size) * int(image.logical_block_size)) % cylinder


def _assemble(  # noqa: PLR0917 (the pieces write_iso checked and made)
    content: IsoContent,
    label: str,
    when: int,
    config: bytes,
    grub_cfg: bytes,
    efiboot: Path,
    isolinux_bin: Path,
    ldlinux: Path,
    mbr: bytes,
) -> pycdlib.PyCdlib:
    """The ISO, laid out but not written (pycdlib reads the files when it writes)."""
    iso = pycdlib.PyCdlib()
    try:
        iso.new(
            interchange_level=3,  # files over 4 GiB (a big live image) take several extents
            sys_ident="LINUX",
            vol_ident=label[:JOLIET_LABEL],  # Joliet's, in UCS-2; the ISO 9660 one is set below
            app_ident_str="LIVEIMG",
            joliet=3,
            rock_ridge="1.09",
        )
        # blkid reads the whole label from the two: the Joliet one, then the rest of this one.
        iso.pvd.volume_identifier = label.ljust(bootsyntax.MAX_ISO_LABEL).encode()
        for iso_path, long_path in DIRECTORIES:
            iso.add_directory(iso_path, rr_name=long_path.rsplit("/", 1)[1], joliet_path=long_path)

        def add(source: Path | bytes, where: tuple[str, str]) -> None:
            name = where[1].rsplit("/", 1)[1]
            if isinstance(source, bytes):
                iso.add_fp(io.BytesIO(source), len(source), where[0], rr_name=name, joliet_path=where[1])
            else:
                iso.add_file(str(source), where[0], rr_name=name, joliet_path=where[1])

        def link(target: tuple[str, str], where: tuple[str, str]) -> None:
            # A second name for the same extent (lorax's images/pxeboot and isolinux copies).
            iso.add_hard_link(iso_old_path=target[0], iso_new_path=where[0], rr_name=where[1].rsplit("/", 1)[1])
            iso.add_hard_link(iso_old_path=target[0], joliet_new_path=where[1])

        add(content.live, LIVE)
        add(content.kernel, PXEBOOT_KERNEL)
        add(content.initramfs, PXEBOOT_INITRD)
        link(PXEBOOT_KERNEL, ISOLINUX_KERNEL)
        link(PXEBOOT_INITRD, ISOLINUX_INITRD)
        add(isolinux_bin, ISOLINUX_BIN)
        add(ldlinux, LDLINUX)
        add(config, ISOLINUX_CFG)
        add(efiboot, EFIBOOT_IMG)
        add(grub_cfg, EFI_GRUB_CFG)
        iso.add_eltorito(
            ISOLINUX_BIN[0],
            bootcatfile=BOOT_CAT[0],
            rr_bootcatname="boot.cat",
            joliet_bootcatfile=BOOT_CAT[1],
            boot_load_size=4,
            boot_info_table=True,
        )
        # The catalog's second section: the UEFI image, for firmware that looks for platform 0xef.
        iso.add_eltorito(EFIBOOT_IMG[0], bootcatfile=BOOT_CAT[0], efi=True)
        disk_id = int.from_bytes(hashlib.sha256(f"liveimg-iso\0{label}\0{when}".encode()).digest()[:4], "little")
        # With the UEFI image: a GPT too, and an MBR entry (type 0xef) for it, as isohybrid --uefi.
        iso.add_isohybrid(mbr_id=disk_id, efi=True)
        hybrid = iso.isohybrid_mbr
        if hybrid is None:
            raise InternalError("pycdlib made no isohybrid MBR")
        # pycdlib carries its own copy of the MBR's code; the one matching the isolinux.bin on
        # this machine is syslinux's, from the same package.
        hybrid.header, hybrid.mbr = mbr[:32], mbr[32:]
        # pycdlib gives the GPT random GUIDs (and its backup other ones): derived ones, the same in both.
        for gpt in (hybrid.primary_gpt, hybrid.secondary_gpt):
            gpt.header.disk_guid = _guid(label, when, "disk")
            for index, part in enumerate(gpt.parts):
                part.part_guid = _guid(label, when, f"partition {index}")
        _set_times(iso, when)
    except BaseException as exc:
        with contextlib.suppress(PyCdlibException):  # not open when new() failed
            iso.close()
        if isinstance(exc, PyCdlibException):
            raise InternalError(f"pycdlib refused the ISO: {exc}") from exc
        raise
    return iso


def _write_iso(iso: pycdlib.PyCdlib, dest: Path, when: int, on_progress: Callable[[int, int], None] | None) -> None:
    """Write the assembled ``iso`` at ``dest`` (atomically), then close it."""
    try:
        output = AtomicOutput(dest)
        with output as tmp:

            def progress(done: int, total: int, _opaque: Any) -> None:
                if on_progress is not None:
                    on_progress(done, total)

            try:
                iso.write(str(tmp), progress_cb=progress)
                _set_modification_dates(tmp, when)
                # isomd5sum's MD5 in the primary volume descriptor, for rd.live.check (last: it covers the rest)
                runner.run(["implantisomd5", "--force", tmp], timeout=IMPLANT_TIMEOUT, package="isomd5sum")
            except OSError as exc:  # a full disk said as such
                raise output.error(exc) from exc
    except PyCdlibException as exc:
        raise InternalError(f"pycdlib refused the ISO {dest}: {exc}") from exc
    finally:
        iso.close()


def _guid(label: str, when: int, what: str) -> uuid.UUID:
    """A GUID for the GPT's ``what``, from the label and the time (a version-4 layout, not random)."""
    digest = hashlib.sha256(f"liveimg-iso\0{label}\0{when}\0{what}".encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


# --- times ----------------------------------------------------------------------------------------


def _dr_date(when: int) -> pycdlib_dates.DirectoryRecordDate:
    t = time.gmtime(when)
    return pycdlib_dates.DirectoryRecordDate.from_fields(t.tm_year - 1900, t.tm_mon, t.tm_mday, t.tm_hour,
                                                         t.tm_min, t.tm_sec, 0)  # fmt: skip


def _vd_date(when: int) -> pycdlib_dates.VolumeDescriptorDate:
    t = time.gmtime(when)
    date = pycdlib_dates.VolumeDescriptorDate()
    date.parse(time.strftime("%Y%m%d%H%M%S", t).encode() + b"00" + b"\0")
    return date


_RR_TIMES = ("creation_time", "access_time", "modification_time", "attribute_change_time", "backup_time",
             "expiration_time", "effective_time")  # fmt: skip


def _records(iso: pycdlib.PyCdlib) -> Iterator[Any]:
    """Every directory record of every volume descriptor's tree, once each."""
    seen: set[int] = set()
    vds = [*iso.pvds, *iso.svds]
    stack = [vd.root_dir_record for vd in vds]
    while stack:
        record = stack.pop()
        if id(record) in seen:
            continue
        seen.add(id(record))
        yield record
        if record.is_dir():
            stack.extend(record.children)


def _set_times(iso: pycdlib.PyCdlib, when: int) -> None:
    """Every time pycdlib stamped, set to ``when`` in UTC (see the module)."""
    for vd in [*iso.pvds, *iso.svds]:
        vd.volume_creation_date = _vd_date(when)
        vd.volume_modification_date = _vd_date(when)
        vd.volume_effective_date = _vd_date(when)
    for record in _records(iso):
        record.date = _dr_date(when)
        rr = record.rock_ridge
        if rr is None:
            continue
        for entries in (rr.dr_entries, rr.ce_entries):
            tf = entries.tf_record if entries is not None else None
            if tf is None:
                continue
            for name in _RR_TIMES:
                old = getattr(tf, name)
                if old is not None:
                    new = _vd_date(when) if isinstance(old, pycdlib_dates.VolumeDescriptorDate) else _dr_date(when)
                    setattr(tf, name, new)


#: ECMA-119 8.4: volume descriptors from sector 16, 2048 bytes each, until the terminator (type
#: 255); a primary (1) or supplementary (2, Joliet) one has its modification date at byte 830.
_VD_START, _VD_SIZE, _VD_MODIFIED = 16 * 2048, 2048, 830
_VD_PRIMARY, _VD_SUPPLEMENTARY, _VD_TERMINATOR = 1, 2, 255


def _set_modification_dates(path: Path, when: int) -> None:
    """Set each volume descriptor's modification date to ``when``: pycdlib writes the time of writing."""
    date = _vd_date(when).record()
    with open(path, "r+b") as f:
        for index in range(64):  # a real image has a handful; the bound keeps a bug from running on
            f.seek(_VD_START + index * _VD_SIZE)
            head = f.read(6)
            if len(head) < 6 or head[1:6] != b"CD001":
                raise InternalError(f"{path}: no ISO 9660 volume descriptor terminator after pycdlib wrote it")
            if head[0] == _VD_TERMINATOR:
                return
            if head[0] in (_VD_PRIMARY, _VD_SUPPLEMENTARY):
                f.seek(_VD_START + index * _VD_SIZE + _VD_MODIFIED)
                f.write(date)
    raise InternalError(f"{path}: more than 64 volume descriptors")


# --- from a build, or from a finished OUTDIR ------------------------------------------------------


def build_iso(
    outdir: Path,
    boot: LiveBoot,
    pxe: PxeOptions,
    label: str,
    progress: Progress,
    *,
    initramfs: Path | None = None,
    dest: Path | None = None,
) -> IsoResult:
    """The ISO of the artifacts in ``outdir`` (``dest``, default ``outdir/live.iso``), its label ``label``.

    ``initramfs`` replaces the build's (``liveimg boot-test`` gives its copy with the checker).
    """
    dest = dest or outdir / ISO_NAME
    args = iso_kernel_args(boot, dataclasses.replace(pxe, cloud_init=None), label)
    content = IsoContent(outdir / boot.kernel, initramfs or outdir / boot.initramfs, outdir / boot.squashfs)
    with progress.stage("iso", unit="bytes") as stage:
        media_check = has_media_check(content.initramfs)
        if not media_check:
            log.warning("iso: the initramfs has no %s (the image lacks isomd5sum): no media check entry", CHECKISOMD5)

        def on_progress(done: int, total: int) -> None:
            stage.update(done, total)

        write_iso(dest, content, boot, args, label, media_check=media_check, on_progress=on_progress)
    return IsoResult(dest, label, tuple(args), dest.stat().st_size, sha256_file(dest), media_check)


def label_of(manifest: Mapping[str, Any]) -> str:
    """The label a build's ISO gets: its manifest's, else the one made from its OS."""
    iso = manifest.get("iso") or {}
    if iso.get("label"):
        return bootsyntax.iso_label(str(iso["label"]), source=Source.GUEST)
    os_info = manifest.get("os") or {}
    return default_label(os_info.get("id"), os_info.get("version_id"), os_info.get("arch"))


def make_iso(outdir: Path | str, options: IsoOptions | None = None, progress: Progress | None = None) -> IsoResult:
    """Make ``OUTDIR/live.iso`` from a finished OUTDIR of ``liveimg build``, and record it in its manifest.

    The kernel arguments are those the build's PXE configs got (``manifest.json``'s ``boot``);
    the label ``options.label``, else the OS's.  OUTDIR is locked as a build locks it (a build
    writing it meanwhile is refused), the ISO written atomically, then ``manifest.json``.
    """
    opts = options or IsoOptions()
    outdir = Path(outdir).absolute()
    lock = OutdirLock(outdir.parent / f".{outdir.name}.liveimg.lock", outdir)
    try:
        manifest = read_manifest(outdir)
        boot = live_boot(manifest)
        label = opts.label or label_of(manifest)
        pxe = PxeOptions(
            kernel_args=tuple(manifest["boot"].get("kernel_args", ())),
            keep_image_args=bool(manifest["boot"].get("keep_image_args", True)),
        )
        result = build_iso(outdir, boot, pxe, label, progress or Progress())
        manifest["iso"] = result.manifest()
        artifacts = manifest.setdefault("artifacts", {})
        artifacts[ISO_NAME] = {"size": result.size, "sha256": result.sha256}
        write_manifest(outdir, manifest)
    finally:
        lock.release()
    log.info("wrote %s (%d bytes, label %s)", result.path, result.size, label)
    return result


__all__ = [
    "ISO_NAME",
    "IsoContent",
    "IsoOptions",
    "IsoResult",
    "build_iso",
    "default_label",
    "iso_kernel_args",
    "isolinux_config",
    "label_of",
    "make_iso",
    "write_iso",
]
