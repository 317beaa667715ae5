"""Build ostree physical roots by hand, file by file, as ostree lays them out.

Works on any filesystem ``os`` reaches: pyfakefs in unit tests, a real directory when an image
is built from it.  The layout follows what ``ostree admin deploy`` (2022.7) writes; see
:mod:`liveimg.ostree.deployments` for the anatomy.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from liveimg.fsview import GuestTree, HostFS, MergedFS

#: Environment for ``ostree admin deploy`` in tests: without it ostree makes every deployment
#: directory immutable (``chattr +i``) and the test's temporary directory cannot be deleted.
OSTREE_ENV = {"OSTREE_SYSROOT_DEBUG": "mutable-deployments"}

ELF_MACHINES = {"x86_64": (0x3E, 2, 1), "aarch64": (0xB7, 2, 1), "ppc64le": (0x15, 2, 1), "s390x": (0x16, 2, 2)}


def elf_header(arch: str = "x86_64") -> bytes:
    """A 64-byte ELF header of an executable for ``arch``."""
    machine, ei_class, ei_data = ELF_MACHINES[arch]
    order = "<" if ei_data == 1 else ">"
    ident = b"\x7fELF" + bytes([ei_class, ei_data, 1]) + bytes(9)
    return ident + struct.pack(order + "HHI", 2, machine, 1) + bytes(64 - 24)


def csum(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def symlink(path: Path, target: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    os.symlink(target, path)
    return path


@dataclass
class Sysroot:
    """A physical root at ``root``; ``/boot`` is ``boot`` (a separate "partition") or ``root/boot``."""

    root: Path
    boot: Path

    @classmethod
    def create(cls, base: Path, *, separate_boot: bool = True) -> Sysroot:
        root = base / "root"
        boot = base / "boot" if separate_boot else root / "boot"
        (root / "ostree" / "deploy").mkdir(parents=True, exist_ok=True)
        (root / "boot").mkdir(parents=True, exist_ok=True)
        boot.mkdir(parents=True, exist_ok=True)
        return cls(root, boot)

    @property
    def separate_boot(self) -> bool:
        return self.boot != self.root / "boot"

    def tree(self) -> GuestTree:
        if self.separate_boot:
            return GuestTree(MergedFS({"/": HostFS(self.root, "root"), "/boot": HostFS(self.boot, "boot")}))
        return GuestTree(HostFS(self.root, "root"))

    def set_loader(self, bootversion: int, *, link: bool = True) -> Path:
        entries = self.boot / f"loader.{bootversion}" / "entries"
        entries.mkdir(parents=True, exist_ok=True)
        if link:
            symlink(self.boot / "loader", f"loader.{bootversion}")
        return entries

    def set_bootlink(self, bootversion: int, subbootversion: int | None) -> Path:
        """``/ostree/boot.N -> boot.N.M`` (newer ostree) or a plain ``boot.N`` directory; returns it resolved."""
        ostree = self.root / "ostree"
        if subbootversion is None:
            (ostree / f"boot.{bootversion}").mkdir(parents=True, exist_ok=True)
            return ostree / f"boot.{bootversion}"
        real = ostree / f"boot.{bootversion}.{subbootversion}"
        real.mkdir(parents=True, exist_ok=True)
        symlink(ostree / f"boot.{bootversion}", real.name)
        return real

    def add_deployment(
        self,
        osname: str = "fedora",
        commit: str = "a",
        *,
        serial: int = 0,
        bootcsum: str | None = None,
        bootversion: int = 1,
        subbootversion: int | None = 1,
        bootserial: int | None = None,
        kver: str = "6.8.5-301.fc40.x86_64",
        version: str | None = "1",
        entry: str | None = None,
        options: str = "root=UUID=1234 rw console=ttyS0 quiet",
        origin: str | None = "fedora:fedora/40/x86_64/silverblue",
        kernel_in_boot: bool = True,
        kernel_in_modules: bool = True,
        title: str | None = None,
        loader_link: bool = True,
        arch: str = "x86_64",
    ) -> dict[str, str]:
        """Add one deployment with its BLS entry; return its ids (checksum, bootcsum, ostree_arg, path, kver).

        ``bootserial`` defaults to the next free one for the bootcsum, as ostree assigns them.
        """
        checksum = csum(commit)
        bootcsum = bootcsum or csum("boot-" + kver)
        name = f"{checksum}.{serial}"
        deploy = self.root / "ostree" / "deploy" / osname / "deploy" / name
        pretty = f"Fedora Linux 40 ({osname})"
        write(deploy / "usr/lib/os-release", f'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\nPRETTY_NAME="{pretty}"\n')
        symlink(deploy / "etc/os-release", "../usr/lib/os-release")
        write(deploy / "usr/bin/true", elf_header(arch))
        symlink(deploy / "bin", "usr/bin")
        if kernel_in_modules:
            write(deploy / f"usr/lib/modules/{kver}/vmlinuz", f"kernel {kver}")
            write(deploy / f"usr/lib/modules/{kver}/initramfs.img", f"initramfs {kver}")
        if origin is not None:
            write(deploy.with_name(name + ".origin"), f"[origin]\nrefspec={origin}\n")
        bootdir = self.set_bootlink(bootversion, subbootversion)
        if bootserial is None:  # as ostree does: deployments sharing a bootcsum get serials 0, 1, ...
            taken = bootdir / osname / bootcsum
            bootserial = len(os.listdir(taken)) if taken.is_dir() else 0
        symlink(bootdir / osname / bootcsum / str(bootserial), f"../../../deploy/{osname}/deploy/{name}")
        bootcsumdir = f"ostree/{osname}-{bootcsum}"
        if kernel_in_boot:
            write(self.boot / bootcsumdir / f"vmlinuz-{kver}", f"kernel {kver}")
            write(self.boot / bootcsumdir / f"initramfs-{kver}.img", f"initramfs {kver}")
        entries = self.set_loader(bootversion, link=loader_link)
        arg = f"/ostree/boot.{bootversion}/{osname}/{bootcsum}/{bootserial}"
        lines = [f"title {title or pretty + ' (ostree)'}"]
        if version is not None:
            lines.append(f"version {version}")
        lines += [
            f"options {options} ostree={arg}",
            f"linux /{bootcsumdir}/vmlinuz-{kver}",
            f"initrd /{bootcsumdir}/initramfs-{kver}.img",
        ]
        write(entries / (entry or f"ostree-{version or 0}-{osname}.conf"), "\n".join(lines) + "\n")
        return {
            "checksum": checksum,
            "bootcsum": bootcsum,
            "ostree_arg": arg,
            "path": f"/ostree/deploy/{osname}/deploy/{name}",
            "kver": kver,
        }
