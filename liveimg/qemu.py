"""A QEMU x86-64 guest: describe it, start it, and stop it once its console decides the boot.

This is the engine of ``liveimg boot-test``.  A machine is described by frozen dataclasses::

    Machine(memory_mib=2048, cpus=1, disks=(Disk(path, fmt="raw", mode="snapshot"),),
            kernel=DirectKernel(kernel, initrd, append) | None,
            netboot=NetworkBoot(tftp_root, bootfile) | None,
            network=True, restrict=True, forwards=(GuestForward(host_port, guest_port),),
            uefi=Uefi(ovmf_code, ovmf_vars_copy) | None)

and boots one way: from its first disk (a CD-ROM if that is one), from a kernel given directly
(QEMU's ``-kernel``), or over PXE (:class:`NetworkBoot`: QEMU's TFTP server serves ``tftp_root`` and its DHCP server
offers ``bootfile``; the caller fills the TFTP root, and ``liveimg boot-test`` puts there the
pxe stage's own configurations).  Asking for both a kernel and a network boot, or for
nothing to boot, is an :class:`~liveimg.errors.InvalidOptions`.  The firmware is SeaBIOS, or
OVMF with ``uefi`` (whose variable store, the caller's copy, is the one file QEMU writes).
With OVMF the network card has no option ROM: the firmware's own virtio-net driver and PXE
do a network boot, as a real machine's firmware would (and an unsigned iPXE ROM would be
refused under Secure Boot).  ``Uefi(..., secure=True)`` is OVMF's Secure Boot build, which
needs a q35 machine with SMM and its variable store in secure flash.

``qemu_argv(machine, console_log, accel=None)`` builds the command line, and it promises:

* QEMU never writes a disk image: ``snapshot=on`` keeps the guest's writes in a temporary
  overlay, ``readonly=on`` refuses them;
* the guest's network is QEMU's user network with ``restrict=on`` unless asked otherwise:
  the guest reaches only QEMU's own DHCP and TFTP servers and the ``guestfwd`` ports, each
  forwarded by ``socat`` to one port on 127.0.0.1 (where :mod:`liveimg.httpserve` listens);
  ``-nodefaults`` leaves no other network card;
* no display and no monitor; the serial console is written to ``console_log``; a reboot of
  the guest ends QEMU (``-no-reboot``);
* ``-machine pc`` (not q35: SeaBIOS did not offer the virtio NIC's iPXE ROM with q35; but
  ``q35,smm=on`` for OVMF's Secure Boot build, whose variables only SMM code may write), with
  the accelerator of :func:`liveimg.accel.choose_accel` (``-cpu max`` under TCG: x86-64-v2
  and later kernels need more than qemu64).

:func:`boot` starts a machine, watches its console with :func:`liveimg.console.watch_console`
and always stops the machine before it returns::

    result = boot(machine, workdir, timeout=900)
    result.ok, result.outcome, result.seconds, result.marker["root"], result.last_lines
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from liveimg import run as runner
from liveimg.accel import Accel, AccelChoice, choose_accel
from liveimg.console import DEFAULT_FAILURES, DEFAULT_SUCCESS, BootResult, Outcome, Pattern, watch_console
from liveimg.errors import InvalidOptions

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
#: Where the restricted user network lets the guest reach forwarded host ports.
GUEST_FORWARD_ADDR = "10.0.2.100"


@dataclass(frozen=True)
class Disk:
    """A disk image attached to the guest.  QEMU never writes to the file.

    ``mode="snapshot"``: the guest may write, into a temporary overlay that is thrown away
    (an installed system needs a writable root).  ``mode="readonly"``: the guest sees a
    read-only disk (a squashfs, an ISO).  ``bus``: a virtio drive (default), a CD-ROM on the
    IDE controller (the firmware boots it by El Torito), or a USB stick on an xHCI controller
    (the firmware boots it as a hard disk, as a stick written with an ISO).
    """

    path: Path
    fmt: Literal["raw", "qcow2"] = "raw"
    mode: Literal["snapshot", "readonly"] = "snapshot"
    bus: Literal["virtio", "cdrom", "usb"] = "virtio"


@dataclass(frozen=True)
class Uefi:
    """UEFI firmware (OVMF) instead of SeaBIOS: its code, read-only, and a copy of its variable
    store that the guest may write (the caller's copy, never the distribution's file).

    ``secure``: ``code`` is OVMF's Secure Boot build (``OVMF_CODE_4M.ms.fd``, with SMM), and
    the machine is made as that build needs it.
    """

    code: Path
    variables: Path
    secure: bool = False


@dataclass(frozen=True)
class DirectKernel:
    """Boot this kernel and initramfs with this command line (QEMU's ``-kernel``)."""

    kernel: Path
    initrd: Path | None
    append: str


@dataclass(frozen=True)
class NetworkBoot:
    """Boot over PXE from QEMU's TFTP server: ``tftp_root`` is served, ``bootfile`` offered by DHCP."""

    tftp_root: Path
    bootfile: str


@dataclass(frozen=True)
class Tap:
    """The guest's network card on a tap device instead of QEMU's user network: a real network.

    ``ifname`` is a tap device the caller made (and attached to a bridge), in the network
    namespace ``netns`` (None: QEMU's own); QEMU then runs in that namespace.  Nothing of
    QEMU's own network services (DHCP, TFTP, forwards) exists: what the guest reaches is what
    is on that network.  With ``mac`` the card has that address.
    """

    ifname: str
    netns: str | None = None
    mac: str | None = None

    def __post_init__(self) -> None:
        # Each goes into a QEMU option (commas separate) or an `ip netns exec` argument.
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", self.ifname):
            raise InvalidOptions(f"{self.ifname!r} is not a tap device name")
        if self.netns is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.netns):
            raise InvalidOptions(f"{self.netns!r} is not a network namespace name")
        if self.mac is not None and not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", self.mac):
            raise InvalidOptions(f"{self.mac!r} is not a MAC address (lower-case, colons)")


@dataclass(frozen=True)
class GuestForward:
    """Guest connections to ``GUEST_FORWARD_ADDR:guest_port`` reach ``127.0.0.1:host_port``."""

    host_port: int
    guest_port: int = 8080

    def qemu_option(self, socat: str) -> str:
        return f"guestfwd=tcp:{GUEST_FORWARD_ADDR}:{self.guest_port}-cmd:{socat} - TCP:127.0.0.1:{self.host_port}"


@dataclass(frozen=True)
class Machine:
    """A QEMU guest: memory, disks, how it boots, and its (restricted) user network."""

    memory_mib: int = 2048
    cpus: int = 1
    disks: tuple[Disk, ...] = ()
    kernel: DirectKernel | None = None
    netboot: NetworkBoot | None = None
    network: bool = False
    restrict: bool = True
    forwards: tuple[GuestForward, ...] = ()
    extra_args: tuple[str, ...] = ()
    uefi: Uefi | None = None
    tap: Tap | None = None


def _qemu_path(path: Path) -> str:
    return os.fspath(path).replace(",", ",,")  # QEMU's option syntax doubles commas


def qemu_argv(machine: Machine, console_log: Path, accel: AccelChoice | None = None) -> list[str]:
    """The QEMU command line for ``machine``, its serial console written to ``console_log``."""
    if machine.kernel is not None and machine.netboot is not None:
        raise InvalidOptions("a machine boots either a kernel directly or over the network, not both")
    if not machine.disks and machine.kernel is None and machine.netboot is None and machine.tap is None:
        raise InvalidOptions("the machine has nothing to boot: give a disk, a kernel or a network boot")
    if machine.tap is not None and (machine.netboot is not None or machine.forwards or machine.network):
        raise InvalidOptions("a machine on a tap device has no QEMU user network: no netboot, forwards or network")
    choice = accel or choose_accel()
    accel_args = choice.qemu_args()
    secure = machine.uefi is not None and machine.uefi.secure
    argv = [QEMU, "-machine", "q35,smm=on" if secure else "pc", *accel_args]
    if choice.accel is Accel.TCG and "-cpu" not in accel_args:
        argv += ["-cpu", "max"]  # x86-64-v2 and later kernels (RHEL 9, Fedora) need more than qemu64
    argv += [
        "-m", str(machine.memory_mib), "-smp", str(machine.cpus),
        "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
        "-serial", f"file:{_qemu_path(console_log)}",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    if machine.uefi is not None:
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_qemu_path(machine.uefi.code)}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={_qemu_path(machine.uefi.variables)}"]  # fmt: skip
        if secure:
            # Only SMM code may write the flash: the OS cannot change the Secure Boot variables.
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    usb = False
    for index, disk in enumerate(machine.disks):
        access = "snapshot=on" if disk.mode == "snapshot" else "readonly=on"
        drive = f"file={_qemu_path(disk.path)},format={disk.fmt}"
        if disk.bus == "virtio":
            argv += ["-drive", f"{drive},if=virtio,index={index},{access}"]
        elif disk.bus == "cdrom":
            argv += ["-drive", f"{drive},if=ide,index={index},media=cdrom,{access}"]
        else:
            if not usb:
                argv += ["-device", "qemu-xhci,id=xhci"]
                usb = True
            argv += ["-drive", f"{drive},if=none,id=usb{index},{access}",
                     "-device", f"usb-storage,bus=xhci.0,drive=usb{index},bootindex={index}"]  # fmt: skip
    if machine.kernel is not None:
        argv += ["-kernel", os.fspath(machine.kernel.kernel), "-append", machine.kernel.append]
        if machine.kernel.initrd is not None:
            argv += ["-initrd", os.fspath(machine.kernel.initrd)]
    if machine.network or machine.netboot is not None or machine.forwards:
        netdev = ["user", "id=net0"]
        if machine.restrict:
            netdev.append("restrict=on")
        if machine.netboot is not None:
            netdev += [f"tftp={_qemu_path(machine.netboot.tftp_root)}", f"bootfile={machine.netboot.bootfile}"]
        if machine.forwards:
            socat = runner.require("socat")
            netdev += [fwd.qemu_option(socat) for fwd in machine.forwards]
        # With OVMF, no option ROM: the firmware's own virtio-net driver (see the module docstring).
        rom = ",romfile=" if machine.uefi is not None else ""
        argv += ["-netdev", ",".join(netdev), "-device", f"virtio-net-pci,netdev=net0{rom}"]
    if machine.tap is not None:
        mac = f",mac={machine.tap.mac}" if machine.tap.mac else ""
        rom = ",romfile=" if machine.uefi is not None else ""
        argv += ["-netdev", f"tap,id=net0,ifname={machine.tap.ifname},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=net0{mac}{rom}"]  # fmt: skip
    if machine.netboot is not None or (machine.tap is not None and machine.kernel is None and not machine.disks):
        argv += ["-boot", "order=n"]
    elif machine.kernel is None:
        cdrom = bool(machine.disks) and machine.disks[0].bus == "cdrom"
        argv += ["-boot", "order=d" if cdrom else "order=c"]
    argv += list(machine.extra_args)
    if machine.tap is not None and machine.tap.netns is not None:
        argv = ["ip", "netns", "exec", machine.tap.netns, *argv]
    return argv


def boot(
    machine: Machine,
    workdir: Path,
    *,
    timeout: float = 900.0,
    success: Sequence[Pattern] = DEFAULT_SUCCESS,
    failures: Sequence[Pattern] = DEFAULT_FAILURES,
    grace: float = 30.0,
    accel: AccelChoice | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BootResult:
    """Start ``machine``, watch its console until it succeeds, fails or times out, then stop it.

    ``workdir`` receives ``console.log`` (the serial console) and ``qemu.log`` (QEMU's own
    messages).  The machine is always stopped when this returns.  ``on_line`` sees each
    console line (see :func:`watch_console`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    console = workdir / "console.log"
    console.write_bytes(b"")
    argv = qemu_argv(machine, console, accel)
    log.info("booting: %s", " ".join(argv))
    with open(workdir / "qemu.log", "wb") as qemu_log, runner.spawn(argv, stdout=qemu_log, stderr=qemu_log) as proc:
        result = watch_console(
            console, timeout=timeout, process=proc, success=success, failures=failures, grace=grace, on_line=on_line
        )
    if result.outcome is Outcome.EXITED:
        with contextlib.suppress(OSError):
            err = (workdir / "qemu.log").read_text(errors="replace").strip().splitlines()
            if err:
                result = dataclasses.replace(result, line=f"{result.line}: {err[-1]}")
    log.info("boot %s", result.summary())
    return result
