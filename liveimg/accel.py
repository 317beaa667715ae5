"""Choose the accelerator for QEMU and libguestfs: KVM when it really works, TCG otherwise.

A ``/dev/kvm`` that opens is not proof: on some hosts (nested virtualisation, broken
hypervisors) a KVM guest hangs silently forever.  So the probe boots a tiny guest under
KVM, bounded by a timeout: a 512-byte boot sector that switches to 64-bit long mode,
runs SSE code, writes ``K`` to the serial port and then writes to QEMU's
``isa-debug-exit`` port, which makes QEMU exit at once with a known status.  Only if
that happens within the time limit is KVM chosen.

The answer is cached in ``~/.cache/liveimg/accel.json`` for the current boot of the host
(keyed by the kernel's boot id, the QEMU binary and the device), so it costs one probe
per boot.  ``LIVEIMG_ACCEL=kvm|tcg|auto`` (or the ``accel`` argument, which wins) forces
a choice.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import platform
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from liveimg import run as runner
from liveimg.errors import HostError, InvalidOptions, ToolError, ToolTimeout

log = logging.getLogger(__name__)

KVM_DEVICE = "/dev/kvm"
ENV_VAR = "LIVEIMG_ACCEL"
PROBE_TIMEOUT = 6.0
_EXIT_VALUE = 0x21  # written to isa-debug-exit; QEMU then exits with (0x21 << 1) | 1
PROBE_EXIT_STATUS = (_EXIT_VALUE << 1) | 1


class Accel(enum.StrEnum):
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator to use and why."""

    accel: Accel
    reason: str

    def qemu_args(self) -> list[str]:
        """QEMU arguments that select it (``-machine accel=``; with KVM, the host CPU)."""
        if self.accel is Accel.KVM:
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg"]

    def libguestfs_env(self) -> dict[str, str]:
        """Environment for libguestfs: the direct backend, and ``force_tcg`` unless KVM."""
        env = {"LIBGUESTFS_BACKEND": "direct"}
        if self.accel is Accel.TCG:
            env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        return env

    def libguestfs_settings(self) -> list[str]:
        """Backend settings for ``GuestFS.set_backend_settings``."""
        return ["force_tcg"] if self.accel is Accel.TCG else []


#: Source of the probe guest (GNU as syntax).  It enters 64-bit long mode with paging and
#: runs SSE instructions in a loop, as a Linux kernel does early on, because hosts exist
#: where KVM runs real-mode code but fails ("KVM internal error ... emulation failure")
#: or hangs as soon as a guest does what a kernel does.  :data:`PROBE_CODE` holds its
#: assembled bytes (``as --64 && ld -Ttext 0x7c00 --oformat binary``); a test
#: reassembles this source and compares.
PROBE_ASM = """\
    .code16
    .globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7c00, %sp
    inb $0x92, %al          # fast A20
    orb $2, %al
    outb %al, $0x92
    # page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD): identity-map 2 MiB
    movw $0x1000, %di
    movw $0x1800, %cx       # 3 pages of words
    xorw %ax, %ax
    rep stosw
    movl $0x2003, 0x1000
    movl $0x3003, 0x2000
    movl $0x0083, 0x3000
    movl %cr4, %eax
    orl $0x620, %eax        # PAE | OSFXSR | OSXMMEXCPT
    movl %eax, %cr4
    movl $0x1000, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx  # EFER
    rdmsr
    orl $0x100, %eax        # LME
    wrmsr
    lgdt gdtr
    movl %cr0, %eax
    andl $0xFFFFFFFB, %eax  # clear EM
    orl $0x80000003, %eax   # PG | PE | MP
    movl %eax, %cr0
    ljmp $0x08, $long_mode
    .code64
long_mode:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %ss
    movl $1000000, %ecx
1:  pxor %xmm0, %xmm0       # SSE, as a kernel uses
    addps %xmm0, %xmm0
    loop 1b
    movw $0x3f8, %dx
    movb $'K', %al
    outb %al, %dx
    movb $0x21, %al
    outb %al, $0xf4
2:  hlt
    jmp 2b
    .p2align 3
gdt:
    .quad 0
    .quad 0x00209A0000000000  # 64-bit code
    .quad 0x0000920000000000  # data
gdtr:
    .word gdtr - gdt - 1
    .long gdt
    .org 510
    .byte 0x55, 0xaa
"""

#: The assembled probe, up to its last non-zero byte (the rest of the sector is zeros
#: and the 0x55 0xAA signature).
PROBE_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007ce4920c02e692bf0010b9001831c0f3ab66c70600100320000066c70600200330"
    "000066c7060030830000000f20e0660d200600000f22e066b8001000000f22d866b9800000c00f32660d0001"
    "00000f300f0116b87c0f20c06683e0fb660d030000800f22c0ea767c0800b8100000008ed88ed0b940420f00"
    "660fefc00f58c0e2f766baf803b04beeb021e6f4f4ebfd0f1f440000000000000000000000000000009a2000"
    "00000000009200001700a07c"
)


def boot_sector() -> bytes:
    """The 512-byte BIOS boot sector of the probe guest (see :data:`PROBE_ASM`)."""
    return PROBE_CODE + bytes(510 - len(PROBE_CODE)) + b"\x55\xaa"


def _kvm_opens(device: str) -> str | None:
    """None if the device opens read-write, else why not."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{device}: {exc.strerror or exc}"
    os.close(fd)
    return None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "liveimg"


def _cache_key(qemu: str, device: str) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    parts = [boot_id, device]
    for path in (qemu, device):
        try:
            st = os.stat(path)
            parts.append(f"{path}:{st.st_ino}:{st.st_mtime_ns}:{st.st_rdev}")
        except OSError:
            parts.append(f"{path}:missing")
    return "|".join(parts)


def probe_kvm(qemu: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Boot the probe sector under KVM; None if it ran, else why it did not."""
    with tempfile.TemporaryDirectory(prefix="liveimg-accel-") as tmp:
        disk = Path(tmp, "probe.img")
        disk.write_bytes(boot_sector())
        argv = [
            qemu, "-machine", "pc,accel=kvm", "-m", "16", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-monitor", "none",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x01",
            "-drive", f"file={disk},format=raw,if=ide,index=0",
        ]  # fmt: skip
        try:
            result = runner.run(argv, timeout=timeout, check=False)
        except ToolTimeout:
            return f"a KVM guest did not run within {timeout:g} s"
        except ToolError as exc:
            return str(exc)
    if result.returncode == PROBE_EXIT_STATUS and "K" in result.stdout:
        return None
    last = (result.stderr.strip().splitlines() or [""])[-1]
    return f"the KVM probe guest exited with status {result.returncode}" + (f": {last}" if last else "")


def choose_accel(
    accel: str | None = None,
    *,
    qemu: str = "qemu-system-x86_64",
    device: str = KVM_DEVICE,
    timeout: float = PROBE_TIMEOUT,
    cache_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> AccelChoice:
    """Decide between KVM and TCG.

    ``accel`` (``kvm``, ``tcg`` or ``auto``/None) wins over ``$LIVEIMG_ACCEL``; ``auto``
    probes, bounded by ``timeout`` seconds, and caches the answer in ``cache_dir``.
    """
    env = os.environ if environ is None else environ
    wanted = (accel or env.get(ENV_VAR) or "auto").strip().lower()
    if wanted not in ("kvm", "tcg", "auto"):
        raise InvalidOptions(f"unknown accelerator {wanted!r}", hint="use kvm, tcg or auto")
    if wanted == "tcg":
        return AccelChoice(Accel.TCG, "forced")
    if wanted == "kvm":
        why_not = _kvm_opens(device)
        if why_not:
            raise HostError(f"KVM was forced but {why_not}", hint=f"use tcg, or give access to {device}")
        return AccelChoice(Accel.KVM, "forced")

    why_not = _kvm_opens(device)
    if why_not:
        return AccelChoice(Accel.TCG, why_not)
    if platform.machine() not in ("x86_64", "AMD64", "i686", "i386"):
        # The probe's boot sector is x86 code; elsewhere trust the device.
        return AccelChoice(Accel.KVM, f"{device} opens (no probe on {platform.machine()})")
    qemu_path = runner.which(qemu)
    if qemu_path is None:
        return AccelChoice(Accel.TCG, f"{qemu} is not installed, cannot probe KVM")

    cache = (cache_dir or default_cache_dir()) / "accel.json"
    key = _cache_key(qemu_path, device)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return AccelChoice(Accel(cached["accel"]), str(cached["reason"]) + " (cached)")
    except (OSError, ValueError, KeyError):
        pass

    why_not = probe_kvm(qemu_path, timeout)
    choice = AccelChoice(Accel.TCG, why_not) if why_not else AccelChoice(Accel.KVM, "a KVM probe guest ran")
    log.info("accelerator: %s (%s)", choice.accel, choice.reason)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "accel": str(choice.accel), "reason": choice.reason}))
        tmp.replace(cache)
    except OSError as exc:  # a read-only home must not break the build
        log.debug("cannot cache the accelerator choice in %s: %s", cache, exc)
    return choice
