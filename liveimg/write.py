"""Write an image (a hybrid ISO, or any disk image file) to a USB stick, safely.

:func:`probe_target` says what a device is and refuses what would destroy a user's system;
:func:`write_image` probes again, writes, and reads the device back.

What is refused, each with one line naming the device (:meth:`BlockDevice.describe`: node,
vendor, model, size, bus), as :class:`DeviceRefused`:

* a path that does not exist or is not a block device, or that udev does not know;
* a partition (the image is a whole disk: it goes on the whole disk);
* an optical drive, a read-only device, a reader without its medium (size 0);
* a disk smaller than the image;
* a disk in use: a filesystem mounted from it, from one of its partitions or from a
  device-mapper/LVM/RAID device stacked on them (their ``holders`` in sysfs), or active swap
  on any of those.  This is read from ``/proc/self/mountinfo`` (each mount's ``major:minor``
  and source) and ``/proc/swaps``, matched by device number;
* a disk that is not removable, unless ``allow_fixed`` (``--yes-this-disk``): removable means
  the kernel's ``removable`` flag, a disk on USB or FireWire, or an SD card.

What udev says comes from pyudev (the udev database and sysfs).  The device is then opened
with ``O_EXCL``, so the kernel itself refuses a disk that is mounted or held, even if it was
mounted after the checks, and with ``O_DIRECT`` so that progress is what reached the device.
After ``fsync`` the device's cached pages are dropped (``BLKFLSBUF``,
``POSIX_FADV_DONTNEED``) and it is read back with ``O_DIRECT`` and compared with the image
byte for byte: a stick that lost or changed data (a counterfeit capacity, a failing flash)
is a :class:`WriteVerifyFailed` naming the first byte that differs.

The last block written is padded with zeros up to the device's logical block size (the
device is larger than the image, so the padding stays on the device).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveimg.errors import HostError, ImageNotFound, InvalidOptions
from liveimg.progress import Progress

log = logging.getLogger(__name__)

#: Bytes written or compared per system call.
CHUNK = 4 << 20
#: ioctl(2) that writes back and drops a block device's buffer cache (linux/fs.h).
BLKFLSBUF = 0x1261
#: Where mountinfo and swaps are read; tests give a directory of fakes.
PROC = Path("/proc")
#: Buses whose disks are unplugged by design; ``ID_BUS`` or a parent's subsystem.
REMOVABLE_BUSES = frozenset({"usb", "ieee1394"})
#: A parent's subsystem that names the bus, the most telling first (a USB stick is also SCSI).
_BUS_ORDER = ("usb", "ieee1394", "mmc", "nvme", "virtio", "ata", "scsi")


class DeviceRefused(InvalidOptions):
    """``liveimg write`` will not write to this device; the message names it and says why."""


class WriteVerifyFailed(HostError):
    """What was read back from the device differs from the image."""


@dataclass(frozen=True)
class BlockDevice:
    """A whole disk as udev and sysfs describe it.

    ``size`` and ``logical_block_size`` are in bytes; ``devnum`` is ``(major, minor)``; ``bus``
    is ``usb``, ``ata``, ``nvme``, ``mmc``, ``virtio``, ``scsi``, ``loop`` or ``virtual``.
    """

    node: str
    sys_path: str
    devnum: tuple[int, int]
    vendor: str
    model: str
    size: int
    bus: str
    removable: bool
    read_only: bool
    logical_block_size: int = 512

    def describe(self) -> str:
        """``/dev/sdb (SanDisk Cruzer Blade, 14.9 GiB, usb, removable)``: one line naming the device."""
        name = " ".join(part for part in (self.vendor, self.model) if part) or "unknown model"
        kind = "removable" if self.removable else "not removable"
        return f"{self.node} ({name}, {human_size(self.size)}, {self.bus}, {kind})"


@dataclass(frozen=True)
class WriteOptions:
    """``allow_fixed`` writes to a disk that is not removable (``--yes-this-disk``);
    ``verify`` reads the device back and compares it with the image (the default)."""

    allow_fixed: bool = False
    verify: bool = True


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_image` did: the device, the image's size in bytes, whether it was read back."""

    device: BlockDevice
    image: Path
    size: int
    verified: bool


def human_size(size: int) -> str:
    """``14.9 GiB``, ``512.0 MiB``, ``4096 B``: one decimal, binary units."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def _clean(text: str, limit: int = 64) -> str:
    """A vendor or model string as the device reports it, made one tidy printable line.

    udev's ``*_ENC`` values escape bytes as ``\\xNN``; a device is free to put anything there.
    """
    text = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:limit]


def _attr(device: Any, name: str) -> str:
    try:
        value = device.attributes.asstring(name)
    except (KeyError, UnicodeDecodeError, OSError):
        return ""
    return str(value).strip()


def _udev() -> Any:
    try:
        import pyudev  # noqa: PLC0415  # only `liveimg write` needs udev
    except ImportError as exc:
        raise HostError(
            "pyudev is not installed", hint="pip install pyudev, or install the Debian package python3-pyudev"
        ) from exc
    return pyudev


def _udev_device(pyudev: Any, path: str) -> Any:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DeviceRefused(
            f"{path}: no such device", hint="name a whole disk such as /dev/sdb; lsblk lists them"
        ) from None
    except OSError as exc:
        raise DeviceRefused(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISBLK(info.st_mode):
        raise DeviceRefused(f"{path}: not a block device", hint="name a whole disk such as /dev/sdb; lsblk lists them")
    context = pyudev.Context()
    number = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    try:
        return pyudev.Devices.from_device_number(context, "block", info.st_rdev)
    except pyudev.DeviceNotFoundError:
        pass
    # /sys/dev/block lacks it (umockdev 0.17 files a block device outside a block/ directory,
    # as NVMe's, under /sys/dev/char): its name in /sys/class/block, if that is the same number.
    try:
        found = pyudev.Devices.from_name(context, "block", os.path.basename(os.path.realpath(path)))
    except pyudev.DeviceNotFoundError:
        found = None
    if found is None or _attr(found, "dev") != number:
        raise DeviceRefused(f"{path}: udev knows no block device {number}")
    return found


def _describe(device: Any, node: str) -> BlockDevice:
    ancestors = list(device.ancestors)
    # A partition shows its disk's vendor, model and bus (udev copies them only with its rules).
    props = dict(ancestors[0].properties) if device.device_type == "partition" and ancestors else {}
    props.update((key, value) for key, value in device.properties.items() if value)
    vendor = _clean(props.get("ID_VENDOR_ENC") or props.get("ID_VENDOR", "").replace("_", " "))
    model = _clean(props.get("ID_MODEL_ENC") or props.get("ID_MODEL", "").replace("_", " "))
    for parent in (p for p in ancestors if p.subsystem in ("scsi", "nvme", "mmc")):  # without a udev database
        vendor = vendor or _clean(_attr(parent, "vendor"))
        model = model or _clean(_attr(parent, "model") or _attr(parent, "name"))  # an SD card has a name
    subsystems = {parent.subsystem for parent in ancestors}
    bus = str(props.get("ID_BUS", ""))
    if not bus:
        bus = next((name for name in _BUS_ORDER if name in subsystems), "")
    name = os.path.basename(device.sys_path)
    if not bus:
        bus = "loop" if name.startswith("loop") else "virtual" if "/devices/virtual/" in device.sys_path else "unknown"
    if not model and _attr(device, "dm/name"):
        model = f"device-mapper {_clean(_attr(device, 'dm/name'))}"
    if bus == "loop" and not model:
        backing = _attr(device, "loop/backing_file")
        model = f"loop device on {_clean(backing, 4096)}" if backing else "loop device"
    sd_card = any(parent.subsystem == "mmc" and _attr(parent, "type") == "SD" for parent in ancestors)
    removable = _attr(device, "removable") == "1" or bus in REMOVABLE_BUSES or sd_card
    removable = removable or bool(subsystems & REMOVABLE_BUSES)
    try:
        sectors = int(_attr(device, "size") or "0")
        block = int(_attr(device, "queue/logical_block_size") or "512")
    except ValueError:
        sectors, block = 0, 512
    major, minor = (int(part) for part in (_attr(device, "dev") or "0:0").split(":"))
    return BlockDevice(
        node=node,
        sys_path=str(device.sys_path),
        devnum=(major, minor),
        vendor=vendor,
        model=model,
        size=sectors * 512,  # sysfs counts 512-byte sectors whatever the block size
        bus=bus,
        removable=removable,
        read_only=_attr(device, "ro") == "1",
        logical_block_size=block if block > 0 and block & (block - 1) == 0 else 512,
    )


def _stack(pyudev: Any, device: Any) -> dict[tuple[int, int], str]:
    """The device numbers of a disk, its partitions and everything stacked on them
    (device-mapper, LVM, RAID: sysfs ``holders``), each with its node and how it relates."""
    found: dict[tuple[int, int], str] = {}
    todo: list[tuple[Any, str]] = [(device, "")]
    todo += [(child, "") for child in device.children if child.subsystem == "block"]
    while todo:
        dev, via = todo.pop()
        try:
            major, minor = (int(part) for part in _attr(dev, "dev").split(":"))
        except ValueError:
            continue
        node = str(dev.device_node or "/dev/" + os.path.basename(dev.sys_path))
        if (major, minor) in found:
            continue
        found[(major, minor)] = f"{node} (on {via})" if via else node
        try:
            holders = sorted(os.listdir(os.path.join(dev.sys_path, "holders")))
        except OSError:
            holders = []
        for name in holders:
            with contextlib.suppress(pyudev.DeviceNotFoundError):
                todo.append((pyudev.Devices.from_name(pyudev.Context(), "block", name), via or node))
    return found


def _unescape(field: str) -> str:
    """mountinfo and swaps write space, tab, newline and backslash as ``\\040`` and the like."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _rdev(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (os.major(info.st_rdev), os.minor(info.st_rdev)) if stat.S_ISBLK(info.st_mode) else None


def in_use(devices: dict[tuple[int, int], str], proc: Path | None = None) -> str | None:
    """How one of ``devices`` is in use -- ``/dev/sdb1 is mounted on /media/stick``, ``... is
    active swap`` -- or None.

    A mount matches by the ``major:minor`` mountinfo gives it, or by its source's device number
    (btrfs reports an anonymous ``0:N``); swap by its file's device number.  ``proc`` is
    :data:`PROC` unless given.
    """
    proc = proc or PROC
    try:
        mountinfo = (proc / "self/mountinfo").read_text(errors="replace")
    except OSError as exc:
        raise HostError(f"cannot read {proc / 'self/mountinfo'}: {exc.strerror}") from exc
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        tail = line.split(" - ", 1)[1].split()
        source = _unescape(tail[1]) if len(tail) > 1 else ""
        try:
            major, minor = (int(part) for part in fields[2].split(":"))
        except ValueError:
            continue
        for number in ((major, minor), _rdev(source) if source.startswith("/") else None):
            if number in devices:
                return f"{devices[number]} is mounted on {_unescape(fields[4])}"
    try:
        swaps = (proc / "swaps").read_text(errors="replace")
    except FileNotFoundError:  # a kernel without swap support
        swaps = ""
    for line in swaps.splitlines()[1:]:
        fields = line.split()
        if fields and (number := _rdev(_unescape(fields[0]))) in devices:
            return f"{devices[number]} is active swap"
    return None


def probe_target(device: str | os.PathLike[str], size: int, *, allow_fixed: bool = False,
                 proc: Path | None = None) -> BlockDevice:  # fmt: skip
    """Describe ``device`` and check that an image of ``size`` bytes may be written to it.

    Raises :class:`DeviceRefused` (see the module's docstring for what is refused and in which
    order); ``proc`` is where ``self/mountinfo`` and ``swaps`` are read (:data:`PROC` unless given).
    """
    pyudev = _udev()
    path = os.fspath(device)
    udev_device = _udev_device(pyudev, path)
    if udev_device.device_type == "partition":
        disk = udev_device.find_parent("block", "disk")
        target = _describe(udev_device, path)
        whole = str(disk.device_node) if disk is not None and disk.device_node else "its disk"
        raise DeviceRefused(
            f"refusing {target.describe()}: it is a partition of {whole}",
            hint=f"write to the whole disk: liveimg write IMAGE {whole}",
        )
    target = _describe(udev_device, path)

    def refuse(reason: str, hint: str | None = None) -> DeviceRefused:
        return DeviceRefused(f"refusing {target.describe()}: {reason}", hint=hint)

    if udev_device.device_type != "disk":
        raise refuse(f"it is not a disk but a {udev_device.device_type or 'device of no type'}")
    if udev_device.properties.get("ID_CDROM") == "1":
        raise refuse("it is an optical drive")
    if target.read_only:
        raise refuse("it is read-only", hint="a stick or SD card may have a write-protect switch")
    if target.size == 0:
        raise refuse("it has no medium", hint="insert the card or stick")
    if target.size < size:
        raise refuse(f"the image is larger than it ({human_size(size)}, {size} bytes)")
    busy = in_use(_stack(pyudev, udev_device), proc)
    if busy is not None:
        raise refuse(busy, hint=f"{'swapoff' if busy.endswith('swap') else 'unmount'} it first, or pick another device")
    if not target.removable and not allow_fixed:
        raise refuse("it is not a removable disk", hint="if it really is the disk to overwrite, add --yes-this-disk")
    return target


def image_size(image: str | os.PathLike[str]) -> int:
    """The size in bytes of the image file to write (a regular file, not empty)."""
    path = Path(image)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageNotFound(f"{path}: no such file") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidOptions(f"{path}: not a regular file", hint="liveimg write copies an image file to a device")
    if info.st_size == 0:
        raise InvalidOptions(f"{path}: the image is empty")
    return info.st_size


@contextlib.contextmanager
def _open_device(target: BlockDevice, flags: int) -> Iterator[tuple[int, bool]]:
    """The device opened with ``flags`` and ``O_DIRECT`` if it allows it; yields (fd, direct)."""
    fd: int | None = None
    direct = True
    try:
        try:
            fd = os.open(target.node, flags | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            direct = False
            fd = os.open(target.node, flags | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise DeviceRefused(
                f"refusing {target.describe()}: the kernel says it is in use",
                hint="a mounted filesystem, swap, LVM, RAID or another program holds it",
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise HostError(f"{target.node}: permission denied", hint="run liveimg write as root") from exc
        if exc.errno == errno.EROFS:
            raise DeviceRefused(f"refusing {target.describe()}: it is read-only") from exc
        if exc.errno in (errno.ENOMEDIUM, errno.ENXIO, errno.ENODEV, errno.ENOENT):
            raise DeviceRefused(f"refusing {target.describe()}: it went away or has no medium") from exc
        raise HostError(f"{target.node}: {exc.strerror}") from exc
    try:
        yield fd, direct
    finally:
        os.close(fd)


def _aligned_buffer() -> memoryview:
    """A page-aligned buffer of :data:`CHUNK` bytes, as ``O_DIRECT`` needs.

    The mapping is left to the garbage collector: closing it explicitly fails while a slice of
    the view is alive, which an exception on the way out may keep.
    """
    return memoryview(mmap.mmap(-1, CHUNK))


def _fill(fd: int, view: memoryview) -> int:
    """Read into ``view`` until it is full or the file ends; the number of bytes read."""
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _drop_cache(fd: int) -> None:
    """Forget what the kernel caches of the device, so that reading it back reads the medium."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, BLKFLSBUF)
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write(image: Path, size: int, target: BlockDevice, progress: Progress) -> None:
    block = target.logical_block_size
    with (
        _open_device(target, os.O_WRONLY | os.O_EXCL) as (fd, direct),
        open(image, "rb", buffering=0) as source,
    ):
        info = os.fstat(fd)
        if (os.major(info.st_rdev), os.minor(info.st_rdev)) != target.devnum:
            raise DeviceRefused(f"refusing {target.describe()}: {target.node} changed while it was checked")
        if os.lseek(fd, 0, os.SEEK_END) < size:
            raise DeviceRefused(f"refusing {target.describe()}: the image is larger than it")
        os.lseek(fd, 0, os.SEEK_SET)
        view = _aligned_buffer()
        with progress.stage("write", total=size, unit="bytes") as st:
            done = 0
            while done < size:
                got = _fill(source.fileno(), view[: min(CHUNK, size - done)])
                if got == 0:
                    raise InvalidOptions(f"{image}: the image shrank while it was written")
                padded = _round_up(got, block)
                view[got:padded] = bytes(padded - got)
                written = 0
                while written < padded:
                    written += os.write(fd, view[written:padded])
                done += got
                st.advance(got)
                if not direct and done % (64 * CHUNK) == 0:
                    os.fdatasync(fd)  # without O_DIRECT, keep the bar close to what reached the device
            st.message(f"syncing {target.node}")
            os.fsync(fd)
            _drop_cache(fd)


def _verify(image: Path, size: int, target: BlockDevice, progress: Progress) -> None:
    block = target.logical_block_size
    with (
        _open_device(target, os.O_RDONLY) as (fd, _direct),
        open(image, "rb", buffering=0) as source,
    ):
        _drop_cache(fd)
        view = _aligned_buffer()
        with progress.stage("verify", total=size, unit="bytes") as st:
            done = 0
            while done < size:
                want = source.read(min(CHUNK, size - done))
                if not want:
                    raise InvalidOptions(f"{image}: the image shrank while it was read back")
                got = _fill(fd, view[: _round_up(len(want), block)])
                have = view[: min(got, len(want))]
                if got < len(want) or have != want:
                    first = next((i for i in range(len(have)) if have[i] != want[i]), None)
                    where = (
                        f"differs from {image} at byte {done + first}"
                        if first is not None
                        else (f"ended at byte {done + got}, before the image's end")
                    )
                    raise WriteVerifyFailed(
                        f"read-back check failed: {target.describe()} {where}",
                        hint="the stick may be failing or smaller than it claims; write again or use another",
                    )
                done += len(want)
                st.advance(len(want))


def write_image(
    image: str | os.PathLike[str],
    device: str | os.PathLike[str],
    options: WriteOptions | None = None,
    progress: Progress | None = None,
    *,
    expect: BlockDevice | None = None,
) -> WriteResult:
    """Write ``image`` to the whole disk ``device``, then read it back and compare.

    Everything :func:`probe_target` refuses is refused here too (it runs again, just before the
    device is opened).  ``expect`` is the device a user agreed to (from an earlier
    :func:`probe_target`): if ``device`` is now another disk, it is refused.  Progress goes to
    ``progress`` as the stages ``write`` and ``verify``, in bytes.  Raises
    :class:`DeviceRefused`, :class:`WriteVerifyFailed`, or another
    :class:`~liveimg.errors.LiveImgError`; on a failure the device holds part of the image.
    """
    options = options or WriteOptions()
    progress = progress or Progress()
    path = Path(image)
    size = image_size(path)
    target = probe_target(device, size, allow_fixed=options.allow_fixed)
    if expect is not None and expect != target:
        raise DeviceRefused(f"refusing {target.describe()}: it is not the device agreed to, {expect.describe()}")
    log.info("writing %s (%d bytes) to %s", path, size, target.describe())
    _write(path, size, target, progress)
    if options.verify:
        _verify(path, size, target, progress)
    return WriteResult(device=target, image=path, size=size, verified=options.verify)
