"""Unit tests of liveimg.qemu: the QEMU command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.accel import Accel, AccelChoice
from liveimg.errors import InvalidOptions
from liveimg.qemu import DirectKernel, Disk, GuestForward, Machine, NetworkBoot, Uefi, qemu_argv
from tests import support

TCG = AccelChoice(Accel.TCG, "test")
KVM = AccelChoice(Accel.KVM, "test")

# -- the QEMU command line -------------------------------------------------------------------------


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def test_direct_kernel_boot_argv(tmp_path: Path) -> None:
    machine = Machine(
        memory_mib=3072,
        disks=(Disk(tmp_path / "a,b.img"), Disk(tmp_path / "live.qcow2", fmt="qcow2", mode="readonly")),
        kernel=DirectKernel(tmp_path / "vmlinuz", tmp_path / "initrd.img", "root=UUID=x console=ttyS0,115200"),
    )
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-machine") == ["pc"]
    assert option(argv, "-accel") == ["tcg"]
    assert option(argv, "-cpu") == ["max"]
    assert option(argv, "-m") == ["3072"]
    assert option(argv, "-display") == ["none"]
    assert "-nodefaults" in argv  # no default NIC with an unrestricted network
    assert option(argv, "-serial") == [f"file:{tmp_path}/console.log"]
    assert option(argv, "-drive") == [
        f"file={tmp_path}/a,,b.img,format=raw,if=virtio,index=0,snapshot=on",
        f"file={tmp_path}/live.qcow2,format=qcow2,if=virtio,index=1,readonly=on",
    ]
    assert option(argv, "-kernel") == [str(tmp_path / "vmlinuz")]
    assert option(argv, "-initrd") == [str(tmp_path / "initrd.img")]
    assert option(argv, "-append") == ["root=UUID=x console=ttyS0,115200"]
    assert "-netdev" not in argv
    assert "-boot" not in argv


def test_kvm_uses_the_accelerators_cpu(tmp_path: Path) -> None:
    argv = qemu_argv(Machine(disks=(Disk(tmp_path / "d.img"),)), tmp_path / "c.log", KVM)
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-cpu") == ["host"]
    assert option(argv, "-boot") == ["order=c"]


def test_network_boot_argv_is_restricted(tmp_path: Path) -> None:
    support.need("socat")
    machine = Machine(netboot=NetworkBoot(tmp_path / "tftp", "pxelinux.0"), forwards=(GuestForward(41234, 8080),))
    argv = qemu_argv(machine, tmp_path / "c.log", TCG)
    socat = runner.require("socat")
    assert option(argv, "-netdev") == [
        f"user,id=net0,restrict=on,tftp={tmp_path}/tftp,bootfile=pxelinux.0,"
        f"guestfwd=tcp:10.0.2.100:8080-cmd:{socat} - TCP:127.0.0.1:41234"
    ]
    assert option(argv, "-device")[-1] == "virtio-net-pci,netdev=net0"
    assert option(argv, "-boot") == ["order=n"]


def test_unrestricted_network_must_be_asked_for(tmp_path: Path) -> None:
    machine = Machine(kernel=DirectKernel(tmp_path / "k", None, ""), network=True, restrict=False)
    argv = qemu_argv(machine, tmp_path / "c.log", TCG)
    assert option(argv, "-netdev") == ["user,id=net0"]
    assert "-initrd" not in argv


def test_machine_must_boot_one_way(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptions, match="not both"):
        qemu_argv(
            Machine(kernel=DirectKernel(tmp_path / "k", None, ""), netboot=NetworkBoot(tmp_path, "x")),
            tmp_path / "c",
            TCG,
        )
    with pytest.raises(InvalidOptions, match="nothing to boot"):
        qemu_argv(Machine(), tmp_path / "c", TCG)


def test_iso_as_a_cdrom_boots_by_el_torito(tmp_path: Path) -> None:
    machine = Machine(disks=(Disk(tmp_path / "live.iso", mode="readonly", bus="cdrom"),))
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    assert option(argv, "-drive") == [f"file={tmp_path}/live.iso,format=raw,if=ide,index=0,media=cdrom,readonly=on"]
    assert option(argv, "-boot") == ["order=d"]
    assert "-netdev" not in argv


def test_iso_as_a_usb_stick_boots_as_a_disk(tmp_path: Path) -> None:
    machine = Machine(disks=(Disk(tmp_path / "live.iso", mode="readonly", bus="usb"),))
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    assert option(argv, "-drive") == [f"file={tmp_path}/live.iso,format=raw,if=none,id=usb0,readonly=on"]
    assert option(argv, "-device") == [
        "virtio-rng-pci",
        "qemu-xhci,id=xhci",
        "usb-storage,bus=xhci.0,drive=usb0,bootindex=0",
    ]
    assert option(argv, "-boot") == ["order=c"]


def test_uefi_firmware_is_ovmf_in_flash(tmp_path: Path) -> None:
    code, variables = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), tmp_path / "OVMF_VARS_4M.fd"
    machine = Machine(disks=(Disk(tmp_path / "live.iso", mode="readonly", bus="cdrom"),), uefi=Uefi(code, variables))
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    assert option(argv, "-drive") == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        f"if=pflash,format=raw,unit=1,file={variables}",
        f"file={tmp_path}/live.iso,format=raw,if=ide,index=0,media=cdrom,readonly=on",
    ]


def test_a_uefi_network_boot_uses_the_firmwares_own_nic_driver(tmp_path: Path) -> None:
    code, variables = Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), tmp_path / "OVMF_VARS_4M.fd"
    machine = Machine(netboot=NetworkBoot(tmp_path / "tftp", "shimx64.efi"), uefi=Uefi(code, variables))
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    # no option ROM (iPXE): OVMF's virtio-net driver and PXE boot it, as a real machine's firmware
    assert "virtio-net-pci,netdev=net0,romfile=" in option(argv, "-device")
    assert option(argv, "-machine") == ["pc"] and "-global" not in argv
    assert option(argv, "-boot") == ["order=n"]


def test_secure_boot_firmware_gets_a_q35_machine_with_smm_and_secure_flash(tmp_path: Path) -> None:
    code, variables = Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd"), tmp_path / "OVMF_VARS_4M.ms.fd"
    machine = Machine(netboot=NetworkBoot(tmp_path / "tftp", "shimx64.efi"), uefi=Uefi(code, variables, secure=True))
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    assert option(argv, "-machine") == ["q35,smm=on"]
    assert option(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in option(argv, "-drive")


def test_a_bios_network_boot_keeps_the_nics_ipxe_rom(tmp_path: Path) -> None:
    machine = Machine(netboot=NetworkBoot(tmp_path / "tftp", "pxelinux.0"))
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    assert "virtio-net-pci,netdev=net0" in option(argv, "-device")
