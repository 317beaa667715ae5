"""Stage 6, boot-test: boot built artifacts in QEMU as a diskless machine would, and look inside.

``boot_test(outdir, options)`` reads ``manifest.json``, serves OUTDIR on 127.0.0.1 (the guest
reaches it as ``http://10.0.2.100:<port>/`` through QEMU's restricted user network and
nothing else), and boots one of these ways:

``pxelinux`` (default)
    The NIC's iPXE ROM gets ``pxelinux.0`` from QEMU's TFTP server; pxelinux loads the
    kernel and initramfs over TFTP with the ``pxelinux.cfg/default`` that liveimg's pxe
    stage writes (generated again for the test URL); dracut's livenet fetches the squashfs
    over HTTP.
``ipxe``
    The NIC's iPXE ROM runs the generated ``boot.ipxe``: kernel and initramfs over HTTP.
``kernel``
    QEMU's ``-kernel``/``-initrd`` with the same command line (no firmware network boot).
``disk``
    No network: the squashfs is attached as a read-only disk and ``root=live:/dev/vda``.
``iso-bios``
    No network: the live ISO (:mod:`liveimg.iso`) as a CD-ROM; SeaBIOS boots its El Torito
    image, isolinux, whose configuration has ``root=live:CDLABEL=<label>``.
``iso-uefi``
    The same ISO as a CD-ROM with UEFI (OVMF): the firmware boots the El Torito UEFI image,
    GRUB, which finds the ISO by its label and reads its ``EFI/BOOT/grub.cfg``.
``usb``
    The same ISO as a USB stick (xHCI): SeaBIOS boots its isohybrid MBR, which starts isolinux.
``usb-uefi``
    The same USB stick with OVMF: the firmware boots GRUB from the EFI partition of its GPT.
``uefi-pxe``
    OVMF's own network boot (its virtio-net driver and PXE, no option ROM) gets the build's
    UEFI boot file (``--efi``: shim, else GRUB) from QEMU's TFTP server; shim loads GRUB beside
    it, GRUB reads the ``grub.cfg`` that liveimg's pxe stage writes (again for the test URL) and
    loads the kernel and initramfs over TFTP (or HTTP, as that file says); dracut's livenet
    fetches the squashfs over HTTP.  With ``secure_boot``, the firmware is OVMF's Secure Boot
    build with Microsoft's keys enrolled and Secure Boot on: the firmware verifies shim, shim
    GRUB, and GRUB the kernel through shim.  A boot that Secure Boot stops ends at once with
    the reason ``secure-boot`` (see :data:`liveimg.console.SECURE_BOOT_FAILURES`).
``grub-bios``
    SeaBIOS; the NIC's iPXE ROM gets a BIOS GRUB network image (Debian's grub-pc-bin, made by
    ``grub-mkimage -O i386-pc-pxe`` into the TFTP root, its modules built in, its serial
    console on) from QEMU's TFTP server; GRUB reads the ``grub.cfg`` that liveimg's pxe stage
    writes (again for the test URL), where it writes it (``grub.cfg``, or the first of the UEFI
    chain's ``configs``), and loads the kernel and initramfs over TFTP (or HTTP, as that file
    says); dracut's livenet fetches the squashfs over HTTP.

A build with ``--embed-rootfs`` (:mod:`liveimg.embed`) boots the network ways with no HTTP
server at all: QEMU's TFTP server gives the boot loader the kernel and both initrds (``ipxe``:
its script's relative names resolve to TFTP too), and ``kernel`` gives QEMU the two initrds
as one file, as a boot loader lays them out.  The server is started only for a cloud-init seed;
:attr:`BootTestResult.http_server` says whether it was.

A build for an ``nbd://`` URL (:mod:`liveimg.livenbd`) reads the squashfs over NBD (the network ways):
``qemu-nbd`` exports it on 127.0.0.1 (:mod:`liveimg.nbdserve`), which the guest reaches as
``nbd://10.0.2.100:10809/<file>``.

For the ISO ways the ISO is written again into the work directory by the same writer, with the
build's label, kernel arguments and squashfs, the checker's initramfs and the test's console
arguments (as the network ways write the pxe stage's configurations again for their URL).

Looking inside.  Unless ``checks=False``, a small cpio is appended to (a copy of) the
initramfs -- the customisation feature of :mod:`liveimg.dracut.customize` -- holding a dracut
``pre-pivot`` hook.  The hook installs a oneshot unit in ``/run/systemd/system`` that the
booted system starts once ``multi-user.target`` is reached; it prints, on the console, what
``/`` is (``/dev/mapper/live-rw`` or an overlay), the firmware (``uefi`` if
``/sys/firmware/efi`` exists, else ``bios``) and the Secure Boot state (the ``SecureBoot`` EFI
variable, and ``mokutil --sb-state`` where the image has mokutil), whether
``/run/ostree-booted`` exists, ``ostree admin status``, the device-mapper table, the block
devices, the hostname, whether a NoCloud seed named on the command line can be fetched (and,
where the image has cloud-init, that the hostname is the seed's), where the image has them the
iSCSI sessions, the disks of their LUNs and podman's storage (its path, the device and file system
under it, the images in it) and, if asked, the result of writing N MiB (to show an overlay's
size).  With a seed and cloud-init in the image, the checker first waits for cloud-init's last
stage (up to 15 minutes) and reports its status, its stages' seconds and when it was done; a
status other than ``done`` is a problem.  No password, no login, and the system boots to its
usual target.  The unit's last line ends the watch; a known failure (dracut's emergency shell,
a kernel panic, a failed download, ...) ends it sooner.

``BootTestOptions.forwards`` (:class:`~liveimg.qemu.GuestForward`) let the guest reach more
services on the host's loopback (a test's iSCSI target), beside the artifacts' servers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from liveimg import bootsyntax, console, httpserve, qemu
from liveimg import run as runner
from liveimg.accel import AccelChoice, choose_accel
from liveimg.bootsyntax import GrubConfig
from liveimg.dracut import EmbeddedFile, append_cpio, hook_dir
from liveimg.errors import HostError, InternalError, InvalidOptions
from liveimg.iso import ISO_NAME, SYSLINUX_BIOS_DIR, build_iso, label_of
from liveimg.manifest import live_boot, read_manifest
from liveimg.nbdserve import NbdServer
from liveimg.progress import Progress, StageProgress
from liveimg.pxe import LiveBoot, PxeOptions, arg_key, kernel_args, write_pxe
from liveimg.serve.catalog import PXELINUX_DIR

log = logging.getLogger(__name__)

Via = Literal["pxelinux", "ipxe", "kernel", "disk", "iso-bios", "iso-uefi", "usb", "usb-uefi", "uefi-pxe", "grub-bios"]
VIAS: tuple[Via, ...] = (
    "pxelinux", "ipxe", "kernel", "disk", "iso-bios", "iso-uefi", "usb", "usb-uefi", "uefi-pxe", "grub-bios",
)  # fmt: skip
#: The ways that boot the live ISO (no network).
ISO_VIAS: tuple[Via, ...] = ("iso-bios", "iso-uefi", "usb", "usb-uefi")
#: The ways whose firmware is UEFI (OVMF).
UEFI_VIAS: tuple[Via, ...] = ("iso-uefi", "usb-uefi", "uefi-pxe")
#: The ways that can boot with Secure Boot on: the ISO's GRUB is liveimg's own, unsigned.
SECURE_BOOT_VIAS: tuple[Via, ...] = ("uefi-pxe",)
#: Debian's OVMF (package ovmf): UEFI for QEMU, its code and a blank variable store.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
#: OVMF's Secure Boot build (SMM) and a variable store with Microsoft's keys enrolled, Secure Boot on.
OVMF_SECURE_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
OVMF_SECURE_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")


#: Debian's GRUB for BIOS (package grub-pc-bin), the network image made from it for ``grub-bios``
#: (in the TFTP root), and the modules built into that image (none is loaded over the network).
GRUB_BIOS_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_BIOS_IMAGE = "grub-i386-pc.0"
GRUB_BIOS_MODULES = ("pxe", "tftp", "http", "normal", "linux", "echo", "test", "serial", "terminal")
#: Time limit of grub-mkimage (it writes an image of a few hundred KiB).
GRUB_MKIMAGE_TIMEOUT = 300.0

#: Where the guest reaches boot-test's HTTP server.
HTTP_GUEST_PORT = httpserve.GUEST_PORT

CHECK = "LIVEIMG-CHECK"
CHECK_END = "LIVEIMG-CHECK-END"
#: The checker's last line, alone or after what getty printed on the same console line (its
#: login prompt has no newline, and getty may print it while the checker reports).
CHECKS_DONE = console.Pattern("checks", rf"(?:^|\s){CHECK_END}$")

#: Run by the booted system (from /run, put there by the initramfs hook) once multi-user is reached.
CHECK_SCRIPT = """\
#!/bin/sh
# liveimg boot-test: report what the booted live system looks like, on the console.
exec >/dev/console 2>&1
say() { echo "LIVEIMG-CHECK $*"; }
prefix() { while IFS= read -r line; do echo "LIVEIMG-CHECK-$1 $line"; done; }
# cloud-init's status (status.json): each stage's seconds, its errors, and when it was done, in
# seconds after the kernel started (/proc/stat's btime).
CLOUD_INIT_REPORT='
import json, os
v1 = json.load(open("/run/cloud-init/status.json"))["v1"]
btime = next(int(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime "))
names = ("init-local", "init", "modules-config", "modules-final")
ran = [(n, v1[n]) for n in names if isinstance(v1.get(n), dict) and v1[n].get("start")]
errors = sum(len(v1[n].get("errors") or []) for n in names if isinstance(v1.get(n), dict))
for n, st in ran:
    for e in (st.get("errors") or [])[:5]:
        print("LIVEIMG-CHECK-CLOUDINIT error", n, " ".join(str(e).split())[:300])
finished = [st.get("finished") for n, st in ran]
done = bool(ran) and all(finished) and os.path.exists("/run/cloud-init/result.json")
state = ("error" if errors else "done") if done else "running"
stages = ",".join("%s:%.1f" % (n, (st.get("finished") or st["start"]) - st["start"]) for n, st in ran)
total = sum((st.get("finished") or st["start"]) - st["start"] for n, st in ran)
end = max(f for f in finished if f) - btime if any(finished) else -1
print("LIVEIMG-CHECK cloud-init-status=%s cloud-init-errors=%d cloud-init-seconds=%.1f cloud-init-done-at=%.1f"
      " cloud-init-stages=%s" % (state, errors, total, end, stages or "none"))
'
say "root=$(findmnt -no SOURCE / | head -n1) fstype=$(findmnt -no FSTYPE / | head -n1)"
if [ -d /sys/firmware/efi ]; then
    # The SecureBoot variable: 4 bytes of attributes, then 1 (on) or 0 (off).
    sb=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
    case "$(od -An -tu1 -j4 -N1 "$sb" 2>/dev/null | tr -d ' ')" in
        1) state=enabled ;;
        0) state=disabled ;;
        *) state=unknown ;;
    esac
    say "firmware=uefi secure-boot=$state"
    if command -v mokutil >/dev/null 2>&1; then
        say "mokutil-sb=$(mokutil --sb-state 2>/dev/null | sed -n 's/^SecureBoot \\([a-z]*\\).*/\\1/p' | head -n1)"
    fi
else
    say "firmware=bios"
fi
if [ -e /run/ostree-booted ]; then say "ostree-booted=yes"; else say "ostree-booted=no"; fi
# A NoCloud seed on the command line (ds=nocloud-net;s=URL), and cloud-init in the image: report
# the system as cloud-init leaves it (its last stage runs after multi-user.target too).
seed=$(tr ' ' '\\n' </proc/cmdline | sed -n 's/^ds=nocloud[a-z-]*;\\(s\\|seedfrom\\)=\\(.*\\)$/\\2/p' | head -n1)
if [ -n "$seed" ] && command -v cloud-init >/dev/null 2>&1 && [ -e /run/cloud-init/enabled ]; then
    waited=0
    while [ ! -e /run/cloud-init/result.json ] && [ "$waited" -lt 900 ]; do
        sleep 2
        waited=$((waited + 2))
    done
fi
say "hostname=$(cat /proc/sys/kernel/hostname)"
say "uptime=$(cut -d' ' -f1 /proc/uptime)"
if command -v ostree >/dev/null 2>&1 && [ -e /run/ostree-booted ]; then
    ostree admin status 2>&1 | prefix OSTREE
fi
if command -v dmsetup >/dev/null 2>&1; then
    dmsetup table 2>&1 | prefix DMTABLE
fi
lsblk -b -n -r -o NAME,MAJ:MIN,SIZE,TYPE,FSTYPE 2>&1 | prefix BLOCK
# The seed: can the live system fetch it?
if [ -n "$seed" ]; then
    if ! command -v curl >/dev/null 2>&1; then
        say "seed=no-curl"
    elif meta=$(curl -fsS --max-time 60 "${seed%/}/meta-data" 2>/dev/null); then
        say "seed=ok seed-hostname=$(printf '%s\\n' "$meta" | sed -n 's/^local-hostname: *//p' | head -n1)"
    else
        say "seed=failed"
    fi
    if command -v cloud-init >/dev/null 2>&1; then say "cloud-init=yes"; else say "cloud-init=no"; fi
    if [ -e /run/cloud-init/status.json ] && command -v python3 >/dev/null 2>&1; then
        python3 -c "$CLOUD_INIT_REPORT" 2>/dev/null || say "cloud-init-status=unreadable"
    fi
fi
# iSCSI sessions, and the disks of their LUNs (udev's by-path names).
if command -v iscsiadm >/dev/null 2>&1; then
    iscsiadm -m session 2>/dev/null | prefix ISCSI
    for link in /dev/disk/by-path/ip-*-iscsi-*-lun-*; do
        [ -e "$link" ] || continue
        case "${link##*-lun-}" in '' | *[!0-9]*) continue ;; esac
        echo "LIVEIMG-CHECK-LUN ${link##*/} $(readlink -f "$link")"
    done
fi
# The container engine's storage: where it is, on which device, and the images it holds.
if command -v podman >/dev/null 2>&1; then
    store=$(podman info --format '{{.Store.GraphRoot}}' 2>/dev/null | head -n1)
    if [ -n "$store" ]; then
        say "container-engine=podman container-storage=$store" \\
            "container-device=$(findmnt -no SOURCE --target "$store" | head -n1)" \\
            "container-fstype=$(findmnt -no FSTYPE --target "$store" | head -n1)"
    fi
    podman images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' 2>&1 | prefix IMAGES
fi
write=$(sed -n 's/.*liveimg.check.write=\\([0-9][0-9]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$write" ]; then
    if dd if=/dev/zero of=/var/tmp/liveimg-check-fill bs=1M count="$write" conv=fsync 2>/dev/null; then
        say "write=ok mib=$write"
    else
        say "write=failed mib=$write"
    fi
    rm -f /var/tmp/liveimg-check-fill
fi
echo "LIVEIMG-CHECK-END"
"""

CHECK_UNIT = """\
[Unit]
Description=liveimg boot-test checks
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh /run/liveimg-check.sh
"""

#: Sourced by dracut in the initramfs just before switching root; /run survives the switch.
CHECK_HOOK = """\
# liveimg boot-test: start the checks in the booted system once it reaches multi-user
mkdir -p /run/systemd/system/multi-user.target.wants
cp /etc/liveimg-check/liveimg-check.service /run/systemd/system/liveimg-check.service
ln -sf ../liveimg-check.service /run/systemd/system/multi-user.target.wants/liveimg-check.service
cp /etc/liveimg-check/check.sh /run/liveimg-check.sh
"""


#: The guest RAM boot-test accepts, in MiB (QEMU's ``-m``): below, no kernel boots; above, no host here has it.
MIN_MEMORY_MIB = 128
MAX_MEMORY_MIB = 1 << 20


@dataclass(frozen=True)
class BootTestOptions:
    """How to boot-test.  ``write_mib`` writes that much in the booted system (overlay tests)."""

    via: Via = "pxelinux"
    timeout: float = 1800.0
    memory_mib: int = 3072
    kernel_args: tuple[str, ...] = ()
    checks: bool = True
    write_mib: int | None = None
    workdir: Path | None = None
    accel: str | None = None
    secure_boot: bool = False
    forwards: tuple[qemu.GuestForward, ...] = ()

    def __post_init__(self) -> None:
        if self.via not in VIAS:
            raise InvalidOptions(f"unknown boot method {self.via!r}", hint="use " + ", ".join(VIAS))
        if self.secure_boot and self.via not in SECURE_BOOT_VIAS:
            raise InvalidOptions(
                f"--secure-boot does not apply to --via {self.via}",
                hint="use --via " + " or ".join(SECURE_BOOT_VIAS) + " (the live ISO's GRUB is not signed)",
            )
        memory = self.memory_mib
        if isinstance(memory, bool) or not isinstance(memory, int) or not MIN_MEMORY_MIB <= memory <= MAX_MEMORY_MIB:
            raise InvalidOptions(
                f"memory {memory!r} MiB is out of range",
                hint=f"give the guest's RAM in MiB, from {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}",
            )
        if self.write_mib is not None and not self.checks:
            raise InvalidOptions("the write test runs with the in-guest checks")
        ports = [f.guest_port for f in self.forwards]
        if len(set(ports)) != len(ports) or {HTTP_GUEST_PORT, bootsyntax.NBD_PORT} & set(ports):
            raise InvalidOptions(
                f"the guest forwards' ports {ports} repeat, or take the artifacts' servers' "
                f"({HTTP_GUEST_PORT} HTTP, {bootsyntax.NBD_PORT} NBD)"
            )


@dataclass(frozen=True)
class BootTestResult:
    """How the boot went and what the booted system said about itself."""

    boot: console.BootResult
    checks: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ostree_status: tuple[str, ...] = ()
    dm_table: tuple[str, ...] = ()
    block_devices: tuple[str, ...] = ()
    cloud_init_errors: tuple[str, ...] = ()  # cloud-init's errors (status.json), with a seed
    iscsi_sessions: tuple[str, ...] = ()  # ``iscsiadm -m session``
    luns: tuple[str, ...] = ()  # iSCSI LUNs: ``<udev by-path name> <device>``
    container_images: tuple[str, ...] = ()  # podman's images: ``<repository>:<tag> <id>``
    problems: tuple[str, ...] = ()
    workdir: Path = Path()
    http_server: bool = True  # whether boot-test served the artifacts over HTTP (not for an embedded live file)

    @property
    def ok(self) -> bool:
        return self.boot.ok and not self.problems

    @property
    def overlay_bytes(self) -> int | None:
        """Size of the device-mapper snapshot's copy-on-write device (``rd.live.overlay.size``), if any."""
        cow = None
        for line in self.dm_table:
            fields = line.split()
            if line.startswith("live-rw:") and len(fields) > 5 and fields[3] == "snapshot":
                cow = fields[5]
        for line in self.block_devices:
            fields = line.split()
            if cow is not None and len(fields) >= 3 and fields[1] == cow and fields[2].isdigit():
                return int(fields[2])
        return None

    def summary(self) -> str:
        text = self.boot.summary()
        if self.problems:
            text += "; " + "; ".join(self.problems)
        return text


#: The steps of a boot as the serial console shows them, in order: what the progress reports.
#: A step seen implies the ones before it (the firmware and the boot loader print nothing there).
BOOT_STEPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kernel", re.compile(r"Linux version \d")),
    ("initramfs", re.compile(r"Run /init as init process|Running in initrd|dracut-cmdline")),
    ("live image", re.compile(r"Found device .*/dev/mapper/live-rw|Reached target .*Initrd Root File System")),
    ("switch root", re.compile(r"Switching root|Reached target .*Switch Root")),
    ("system", re.compile(r"Reached target .*Multi-User System|\blogin: ?$")),
    ("checks", re.compile(rf"^{CHECK}")),
)


class _BootSteps:
    """Turns console lines into progress: the step reached, as done/total, and a message each."""

    def __init__(self, stage: StageProgress) -> None:
        self.stage = stage
        self.reached = 0

    def __call__(self, line: str) -> None:
        for index in range(len(BOOT_STEPS) - 1, self.reached - 1, -1):
            name, pattern = BOOT_STEPS[index]
            if pattern.search(line):
                self.reached = index + 1
                self.stage.update(self.reached)
                self.stage.message(f"{name} after {self.stage.seconds:.0f} s")
                return


def with_checks(initramfs: Path, dest: Path, scratch: Path) -> Path:
    """A copy of ``initramfs`` with the checker appended (see the module docstring)."""
    hooks = hook_dir(initramfs, "pre-pivot")
    files = {"check.sh": CHECK_SCRIPT, "liveimg-check.service": CHECK_UNIT, "hook.sh": CHECK_HOOK}
    for name, text in files.items():
        (scratch / name).write_text(text)
    append_cpio(
        initramfs,
        dest,
        files=[
            EmbeddedFile(scratch / "check.sh", "/etc/liveimg-check/check.sh", 0o755),
            EmbeddedFile(scratch / "liveimg-check.service", "/etc/liveimg-check/liveimg-check.service", 0o644),
            EmbeddedFile(scratch / "hook.sh", f"/{hooks}/99-liveimg-check.sh", 0o755),
        ],
    )
    return dest


_CHECK_LINE = re.compile(rf"{CHECK} (.*)$")


#: The checker's groups of lines (``LIVEIMG-CHECK-<GROUP> <line>``): ``ostree admin status``, the
#: device-mapper table, the block devices, cloud-init's errors, the iSCSI sessions, the iSCSI LUNs
#: (``<by-path name> <device>``) and the container images (``<repository>:<tag> <id>``).
CHECK_GROUPS = ("OSTREE", "DMTABLE", "BLOCK", "CLOUDINIT", "ISCSI", "LUN", "IMAGES")


def read_checks(console_log: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The key=value pairs the checker printed, and its groups of lines (:data:`CHECK_GROUPS`)."""
    fields: dict[str, str] = {}
    groups: dict[str, list[str]] = {name: [] for name in CHECK_GROUPS}
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return fields, groups
    for raw in text.splitlines():
        line = console.clean_line(raw)
        for group, lines in groups.items():
            marker = f"{CHECK}-{group} "
            if marker in line:
                lines.append(line.split(marker, 1)[1])
                break
        else:
            match = _CHECK_LINE.search(line)
            if match:
                for token in match.group(1).split():
                    key, sep, value = token.partition("=")
                    if sep:
                        fields[key] = value
    return fields, groups


def parse_checks(console_log: Path) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """The key=value pairs, ostree status, dm table and block device lines the checker printed."""
    fields, groups = read_checks(console_log)
    return fields, groups["OSTREE"], groups["DMTABLE"], groups["BLOCK"]


def judge(
    manifest: Mapping[str, Any],
    fields: Mapping[str, str],
    ostree_status: Sequence[str],
    dm_table: Sequence[str],
    block_devices: Sequence[str] = (),
    *,
    uefi: bool = False,
    secure_boot: bool = False,
) -> list[str]:
    """What is wrong with the booted system, judged from the checker's report.

    ``uefi``: the boot was meant to be through UEFI firmware (else BIOS, when the checker says);
    ``secure_boot``: with Secure Boot on (the ``SecureBoot`` variable, and mokutil if the image
    has it, must say so).
    """
    problems: list[str] = []
    root, fstype = fields.get("root", ""), fields.get("fstype", "")
    if not (root.startswith("/dev/mapper/live-") or fstype == "overlay"):
        problems.append(f"/ is {root or '?'} ({fstype or '?'}), not the live overlay")
    if (uefi or secure_boot) and fields.get("firmware") != "uefi":
        problems.append(f"the firmware is {fields.get('firmware', '?')}, not UEFI (no /sys/firmware/efi)")
    elif not uefi and fields.get("firmware", "bios") != "bios":
        problems.append(f"the firmware is {fields['firmware']}, not BIOS (/sys/firmware/efi exists)")
    elif secure_boot:
        if fields.get("secure-boot") != "enabled":
            problems.append(f"Secure Boot is {fields.get('secure-boot', '?')}, not enabled (the SecureBoot variable)")
        if fields.get("mokutil-sb", "enabled") != "enabled":
            problems.append(f"mokutil --sb-state says {fields['mokutil-sb'] or '?'}, not enabled")
    deployment = manifest.get("deployment")
    if deployment:
        if fields.get("ostree-booted") != "yes":
            problems.append("/run/ostree-booted is missing: ostree did not set up the deployment")
        wanted = f"{deployment['checksum']}.{deployment['serial']}"
        booted = [line for line in ostree_status if line.lstrip().startswith("*")]
        if not booted:
            problems.append("ostree admin status shows no booted deployment")
        elif wanted not in booted[0] or deployment["osname"] not in booted[0]:
            problems.append(f"booted deployment is {booted[0].strip()!r}, not {deployment['osname']} {wanted}")
    if "write" in fields and fields["write"] != "ok":
        problems.append(f"writing {fields.get('mib', '?')} MiB in the live system failed")
    cloud_init = fields.get("cloud-init-status")
    if cloud_init is not None and cloud_init != "done":
        errors = fields.get("cloud-init-errors", "?")
        problems.append(f"cloud-init's status is {cloud_init} ({errors} errors in /run/cloud-init/status.json)")
    if fields.get("seed", "ok") != "ok":
        problems.append(f"the live system could not fetch the cloud-init seed ({fields['seed']})")
    elif fields.get("cloud-init") == "yes" and fields.get("seed-hostname"):
        hostname, wanted = fields.get("hostname"), fields["seed-hostname"]
        if hostname != wanted:
            problems.append(f"hostname is {hostname!r}, not the seed's {wanted!r}")
    if not any(line.startswith("live-rw:") for line in dm_table) and fstype != "overlay":
        problems.append("device-mapper has no live-rw device")
    # An EROFS live image must have been read as such (lsblk: NAME MAJ:MIN SIZE TYPE FSTYPE).
    erofs_live = (manifest.get("rootfs") or {}).get("type") == "erofs"
    if erofs_live and block_devices and not any(line.split()[4:5] == ["erofs"] for line in block_devices):
        problems.append("no block device of the live system holds the erofs live image")
    return problems


def _place(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        os.symlink(src.absolute(), dest)


def boot_test(
    outdir: Path | str, options: BootTestOptions | None = None, progress: Progress | None = None
) -> BootTestResult:
    """Boot the artifacts in ``outdir`` (made by ``liveimg build``) and check the booted system.

    ``progress`` gets a ``boot`` stage counting :data:`BOOT_STEPS`, with a message per step.
    """
    opts = options or BootTestOptions()
    progress = progress or Progress()
    outdir = Path(outdir).absolute()
    manifest = read_manifest(outdir)
    live = live_boot(manifest)
    if opts.via == "uefi-pxe" and live.efi is None:
        raise InvalidOptions(f"{outdir} has no UEFI network boot chain (shim, GRUB)", hint="rebuild it with --efi")
    base = opts.workdir or outdir.with_name(outdir.name + ".boot-test")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{opts.via}-", dir=base))
    serve = work / "srv"
    serve.mkdir()
    initramfs = outdir / live.initramfs
    if opts.checks:
        initramfs = with_checks(initramfs, serve / live.initramfs, work)
    else:
        _place(initramfs, serve / live.initramfs)
    _place(outdir / live.kernel, serve / live.kernel)
    _place(outdir / live.squashfs, serve / live.squashfs)
    if live.embedded is not None:
        _place(outdir / live.embedded, serve / live.embedded)
    if opts.via == "uefi-pxe" and live.efi is not None:
        for name in (live.efi.grub, live.efi.shim):
            if name is not None:
                _place(outdir / name, serve / name)
    if (outdir / "cloud-init").is_dir():
        shutil.copytree(outdir / "cloud-init", serve / "cloud-init")
    # An embedded live file needs no server; a cloud-init seed still does.
    need_http = live.embedded is None or bool(manifest["boot"].get("cloud_init"))
    serving = httpserve.serve_directory(serve, HTTP_GUEST_PORT) if need_http else contextlib.nullcontext(None)
    build_url = (manifest.get("pxe") or {}).get("url")
    with serving as server, contextlib.ExitStack() as servers:
        nbd = None
        if isinstance(build_url, str) and bootsyntax.is_nbd(build_url):
            # An nbd:// build reads the live file over NBD: a real NBD server exports it (liveimg.livenbd).
            nbd = servers.enter_context(NbdServer(serve / live.squashfs, live.squashfs, work / "qemu-nbd.log"))
        guest_server = nbd or server
        url = guest_server.guest_url().rstrip("/") if guest_server is not None else None
        extra = ["console=ttyS0,115200", *opts.kernel_args]
        if manifest["boot"].get("cloud_init"):
            extra.append(f"ds=nocloud-net;s={url}/cloud-init/")
        if opts.write_mib is not None:
            extra.append(f"liveimg.check.write={opts.write_mib}")
        pxe_options = PxeOptions(
            url=url,
            kernel_args=(*manifest["boot"].get("kernel_args", ()), *extra),
            keep_image_args=bool(manifest["boot"].get("keep_image_args", True)),
        )
        args = kernel_args(live, pxe_options, url)
        machine = _machine(opts, live, serve, pxe_options, server, iso_label=label_of(manifest), nbd=nbd)
        success = [CHECKS_DONE] if opts.checks else list(console.DEFAULT_SUCCESS)
        log.info("boot-test %s via %s: %s", outdir, opts.via, " ".join(args))
        with progress.stage(f"boot via {opts.via}", total=len(BOOT_STEPS), unit="steps") as stage:
            result = qemu.boot(
                machine, work, timeout=opts.timeout, success=success, accel=_accel(opts), on_line=_BootSteps(stage)
            )
        requests = server.requests if server is not None else []
    if server is not None:
        (work / "http.log").write_text("".join(f"{r.method} {r.path} {r.status} {r.bytes_sent}\n" for r in requests))
    else:
        log.info("boot-test %s via %s: no HTTP server (the live file is embedded)", outdir, opts.via)
    if not opts.checks:
        return BootTestResult(result, workdir=work, http_server=server is not None)
    fields, groups = read_checks(result.console_log)
    ostree_status, dm_table, blocks = groups["OSTREE"], groups["DMTABLE"], groups["BLOCK"]
    uefi = opts.via in UEFI_VIAS
    problems = judge(manifest, fields, ostree_status, dm_table, blocks, uefi=uefi, secure_boot=opts.secure_boot)
    problems = problems if result.ok else []
    return BootTestResult(
        boot=result,
        checks=MappingProxyType(fields),
        ostree_status=tuple(ostree_status),
        dm_table=tuple(dm_table),
        block_devices=tuple(blocks),
        cloud_init_errors=tuple(groups["CLOUDINIT"]),
        iscsi_sessions=tuple(groups["ISCSI"]),
        luns=tuple(groups["LUN"]),
        container_images=tuple(groups["IMAGES"]),
        problems=tuple(problems),
        workdir=work,
        http_server=server is not None,
    )


def _test_iso(live: LiveBoot, serve: Path, pxe_options: PxeOptions, label: str) -> Path:
    """The build's ISO made again in ``serve`` (the checker's initramfs, the test's arguments)."""
    # A network boot's arguments (the seed's URL) mean nothing without the network.
    user = tuple(a for a in pxe_options.kernel_args if arg_key(a) != "ds")
    options = PxeOptions(kernel_args=user, keep_image_args=pxe_options.keep_image_args)
    dest = serve / ISO_NAME
    build_iso(serve, live, options, label, Progress(), dest=dest)
    return dest


def _ovmf(work: Path, *, secure: bool) -> qemu.Uefi:
    """OVMF (its Secure Boot build with Microsoft's keys if ``secure``) with a copy of its variables in ``work``."""
    code, template = (OVMF_SECURE_CODE, OVMF_SECURE_VARS) if secure else (OVMF_CODE, OVMF_VARS)
    for path in (code, template):
        if not path.is_file():
            raise HostError(f"{path} is missing", hint="install the Debian package ovmf")
    variables = work / template.name  # the guest's own copy: it may write it
    shutil.copyfile(template, variables)
    return qemu.Uefi(code, variables, secure=secure)


def _grub_cfg(live: LiveBoot) -> str:
    """Where :func:`~liveimg.pxe.write_pxe` writes ``grub.cfg`` (relative to the TFTP root)."""
    return "grub.cfg" if live.efi is None else live.efi.configs[0]


def grub_bios_prefix(config: str) -> str:
    """GRUB's prefix for ``config`` (a TFTP path ending in ``grub.cfg``): GRUB reads ``$prefix/grub.cfg``."""
    directory, _, name = config.rpartition("/")
    if name != "grub.cfg":
        raise InternalError(f"GRUB reads grub.cfg, not {config}")
    return f"(tftp){'/' if directory else ''}{directory}"


def grub_bios_image(tftp_root: Path, config: str, work: Path) -> str:
    """Make the BIOS GRUB network image in ``tftp_root``, reading ``config`` there; its TFTP name.

    A :class:`~liveimg.errors.HostError` if Debian's grub-pc-bin is not installed.
    """
    if not (GRUB_BIOS_DIR / "pxeboot.img").is_file() or not (GRUB_BIOS_DIR / "linux.mod").is_file():
        raise HostError(f"{GRUB_BIOS_DIR} has no BIOS GRUB", hint="install the Debian package grub-pc-bin")
    # GRUB's menu and messages on the serial console too.  GRUB's first parser runs this file:
    # no comment line (it would be an unknown command, and its error would fail the next one).
    early = GrubConfig("liveimg boot-test: the BIOS GRUB's built-in configuration")
    early.command("serial", "--unit=0", "--speed=115200")
    early.command("terminal_input", "serial", "console")
    early.command("terminal_output", "serial", "console")
    (work / "grub-bios-early.cfg").write_text(early.text().split("\n", 1)[1])
    runner.run(["grub-mkimage", "-O", "i386-pc-pxe", "-d", GRUB_BIOS_DIR, "-p", grub_bios_prefix(config),
                "-c", work / "grub-bios-early.cfg", "-o", tftp_root / GRUB_BIOS_IMAGE, *GRUB_BIOS_MODULES],
               timeout=GRUB_MKIMAGE_TIMEOUT, package="grub-common")  # fmt: skip
    return GRUB_BIOS_IMAGE


def _initrds(live: LiveBoot, serve: Path) -> Path:
    """The initrd QEMU's ``-initrd`` loads: the initramfs, or with an embedded live file both initrds
    in one file, one after the other as a boot loader lays them out (each ends 4-byte aligned)."""
    if live.embedded is None:
        return serve / live.initramfs
    joined = serve / "initrds.img"
    with open(joined, "wb") as out:
        for name in live.initrds:
            with open(serve / name, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            out.write(b"\0" * (-out.tell() % 4))
    return joined


def _accel(opts: BootTestOptions) -> AccelChoice | None:
    return choose_accel(opts.accel) if opts.accel else None


def _machine(
    opts: BootTestOptions,
    live: LiveBoot,
    serve: Path,
    pxe_options: PxeOptions,
    server: httpserve.HttpServer | None,
    *,
    iso_label: str | None = None,
    nbd: NbdServer | None = None,
) -> qemu.Machine:
    guest_server = nbd or server
    url = guest_server.guest_url().rstrip("/") if guest_server is not None else None
    args = kernel_args(live, pxe_options, url)
    forwards = (*(s.forward() for s in (server, nbd) if s is not None), *opts.forwards)
    if opts.via == "kernel":
        kernel = qemu.DirectKernel(serve / live.kernel, _initrds(live, serve), " ".join(args))
        return qemu.Machine(memory_mib=opts.memory_mib, kernel=kernel, network=True, forwards=forwards)
    if opts.via in ISO_VIAS:
        if iso_label is None:
            raise InternalError(f"a boot via {opts.via} needs the ISO's label")
        iso = _test_iso(live, serve, pxe_options, iso_label)
        disk = qemu.Disk(iso, mode="readonly", bus="usb" if opts.via.startswith("usb") else "cdrom")
        uefi = _ovmf(serve.parent, secure=opts.secure_boot) if opts.via in UEFI_VIAS else None
        return qemu.Machine(memory_mib=opts.memory_mib, disks=(disk,), uefi=uefi)
    if opts.via == "disk":
        # No network at all: the squashfs is the first virtio disk.
        args = ["root=live:/dev/vda" if a.startswith("root=live:") else a for a in args if a != "ip=dhcp"]
        kernel = qemu.DirectKernel(serve / live.kernel, serve / live.initramfs, " ".join(args))
        disk = qemu.Disk(serve / live.squashfs, mode="readonly")
        return qemu.Machine(memory_mib=opts.memory_mib, kernel=kernel, disks=(disk,))
    # Network boot with the pxe stage's own configs, written for the test URL into the TFTP root.
    write_pxe(serve, live, pxe_options)
    if opts.via == "uefi-pxe":
        if live.efi is None:
            raise InternalError("a boot via uefi-pxe needs the build's UEFI boot chain")
        # Shim, GRUB and the grub.cfg files are in the TFTP root (boot_test, write_pxe).
        return qemu.Machine(
            memory_mib=opts.memory_mib,
            netboot=qemu.NetworkBoot(serve, live.efi.bootfile),
            network=True,
            forwards=forwards,
            uefi=_ovmf(serve.parent, secure=opts.secure_boot),
        )
    if opts.via == "grub-bios":
        bootfile = grub_bios_image(serve, _grub_cfg(live), serve.parent)
    elif opts.via == "pxelinux":
        for src in (PXELINUX_DIR / "pxelinux.0", SYSLINUX_BIOS_DIR / "ldlinux.c32"):
            if not src.is_file():
                raise HostError(f"{src} is missing", hint="install the Debian packages pxelinux and syslinux-common")
            shutil.copyfile(src, serve / src.name)
        bootfile = "pxelinux.0"
    else:
        bootfile = "boot.ipxe"
    return qemu.Machine(
        memory_mib=opts.memory_mib, netboot=qemu.NetworkBoot(serve, bootfile), network=True, forwards=forwards
    )
