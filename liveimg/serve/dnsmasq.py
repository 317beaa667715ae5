"""DHCP and TFTP for ``liveimg serve``: dnsmasq, configured for a :class:`~liveimg.serve.catalog.Plan`.

:func:`config` writes dnsmasq's configuration (no DNS, no system files read):

* ``full``: dnsmasq is the network's DHCP server, leasing addresses from a range of the
  interface's subnet (a lab network of diskless machines, nothing else answering DHCP);
* ``proxy``: another DHCP server leases the addresses; dnsmasq answers only PXE clients, with
  the boot file (proxy DHCP, PXE's own mechanism for this), and leases nothing;
* ``none``: no DHCP; with TFTP, dnsmasq serves only the TFTP tree (the network's DHCP server
  names the boot file and this host as ``next-server``).

The boot file depends on the client: a client running iPXE (DHCP option 77, user class
``iPXE``) gets the iPXE menu's URL; a UEFI x86-64 client (option 93, client architecture 7
or 9) the UEFI boot file (shim or GRUB); any other (option 93 = 0, BIOS) the BIOS loader.

:class:`Dnsmasq` runs it in the foreground (``--keep-in-foreground``), its log on stderr relayed
line by line, its leases and TFTP tree in a private directory, for as long as its ``with``
block lasts.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import ipaddress
import json
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from liveimg import run as runner
from liveimg.errors import HostError, InvalidOptions, ToolError
from liveimg.serve.catalog import BiosLoader, Plan

log = logging.getLogger(__name__)

#: How long dnsmasq may take to fail at start (a port in use, an interface missing) before it counts as started.
START_GRACE = 1.0
#: DHCP option 93 (RFC 4578): the client architectures booted with the UEFI x86-64 file.
UEFI_X86_64_ARCHES = (7, 9)
#: dnsmasq's last log lines kept (a server runs for weeks: the rest go to ``on_line`` only).
LOG_KEPT = 50
#: How long a full-DHCP lease lasts.
LEASE_TIME = "1h"

_INTERFACE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


class DhcpMode(enum.Enum):
    FULL = "full"
    PROXY = "proxy"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Network:
    """The interface dnsmasq listens on, and its IPv4 address and subnet."""

    interface: str
    address: ipaddress.IPv4Interface

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.address.network


def check_interface(name: str) -> str:
    """``name`` if it can be a Linux interface name, else an InvalidOptions."""
    if not _INTERFACE.fullmatch(name) or name in (".", ".."):
        raise InvalidOptions(f"{name!r} is not a network interface name", hint="give one `ip link` lists")
    return name


def network_of(interface: str) -> Network:
    """The first IPv4 address of ``interface`` (``ip -json addr``), with its prefix."""
    done = runner.run(["ip", "-json", "-4", "addr", "show", "dev", check_interface(interface)], check=False,
                      package="iproute2")  # fmt: skip
    if done.returncode != 0:
        raise InvalidOptions(f"there is no network interface {interface}", hint="give one `ip link` lists")
    for link in json.loads(done.stdout or "[]"):
        for info in link.get("addr_info", ()):
            if info.get("family") == "inet":
                return Network(interface, ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
    raise InvalidOptions(
        f"{interface} has no IPv4 address", hint=f"give it one: ip addr add ADDRESS/PREFIX dev {interface}"
    )


def lease_range(network: Network) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The addresses full DHCP leases: the last 200 of the subnet's upper half (fewer in a small
    subnet), never the server's own."""
    subnet, own = network.subnet, network.address.ip
    first_host, last_host = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
    start = max(first_host + (last_host - first_host + 1) // 2, last_host - 199)
    pool = [ipaddress.IPv4Address(n) for n in range(start, last_host + 1) if n != int(own)]
    if len(pool) < 1:
        raise InvalidOptions(f"{network.interface}'s subnet {subnet} has no addresses to lease",
                             hint="give the interface a larger subnet (a /24)")  # fmt: skip
    return pool[0], pool[-1]


def config(plan: Plan, mode: DhcpMode, *, tftp_root: Path | None, network: Network | None,
           leases: Path | None = None) -> str:  # fmt: skip
    """dnsmasq's configuration for ``plan`` (see the module docstring).

    ``tftp_root``: the TFTP tree (:func:`~liveimg.serve.catalog.write_tree`), or None for no
    TFTP.  ``network``: the interface to listen on (needed for DHCP).  ``leases``: the lease file
    (full DHCP).
    """
    if mode is not DhcpMode.NONE and network is None:
        raise InvalidOptions(f"--dhcp {mode} needs --interface", hint="name the interface the machines are on")
    if mode is not DhcpMode.NONE and tftp_root is None:
        raise InvalidOptions("PXE firmware loads its boot file over TFTP: --dhcp needs --tftp")
    lines = ["# dnsmasq configuration generated by liveimg serve", "port=0", "no-resolv", "no-hosts", "log-dhcp"]
    if network is not None:
        lines += [f"interface={network.interface}", "bind-interfaces"]
    else:
        lines += ["bind-dynamic"]
    if tftp_root is not None:
        lines += ["enable-tftp", f"tftp-root={_value(str(tftp_root))}"]
    if mode is DhcpMode.NONE or network is None:
        return "\n".join(lines) + "\n"
    if mode is DhcpMode.FULL:
        first, last = lease_range(network)
        lines += [f"dhcp-range={first},{last},{network.subnet.netmask},{LEASE_TIME}", "dhcp-authoritative"]
        if leases is not None:
            lines.append(f"dhcp-leasefile={_value(str(leases))}")
        lines.append("dhcp-option=option:router")  # no router: a lab network leads nowhere else
    else:
        lines.append(f"dhcp-range={network.subnet.network_address},proxy,{network.subnet.netmask}")
    lines += ["dhcp-userclass=set:ipxe,iPXE"]
    lines += [f"dhcp-match=set:efi64,option:client-arch,{arch}" for arch in UEFI_X86_64_ARCHES]
    server = str(network.address.ip)
    for rule in boot_rules(plan):
        tags = ",".join(f"tag:{'' if want else '!'}{tag}" for tag, want in (("ipxe", rule.ipxe), ("efi64", rule.efi64))
                        if want is not None)  # fmt: skip
        if mode is DhcpMode.FULL or rule.file.startswith("http"):
            # In proxy mode iPXE takes the script's URL from the proxy's offer as well.
            lines.append(f"dhcp-boot={tags},{_value(rule.file)},,{server}")
        else:
            arch = "x86-64_EFI" if rule.efi64 else "x86PC"
            lines.append(f'pxe-service={tags},{arch},"liveimg",{_value(rule.file)},{server}')
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BootRule:
    """A boot file and the clients it is for: ``ipxe`` and ``efi64`` say whether the client must
    run iPXE (option 77) and be UEFI x86-64 (option 93), True or False, or None for either."""

    kind: str  # "ipxe" (the iPXE menu's URL), "bios" (the BIOS loader) or "efi64" (the UEFI boot file)
    ipxe: bool | None
    efi64: bool | None
    file: str


def boot_rules(plan: Plan) -> list[BootRule]:
    """The boot file for each kind of client, by ``plan.loader`` (see
    :class:`~liveimg.serve.catalog.BiosLoader`); the rules exclude one another, so exactly one (or,
    for a UEFI client with no UEFI build, none) matches a client.  dnsmasq and Kea both use them.
    """
    if plan.loader is not BiosLoader.PXELINUX:
        rules = [BootRule("ipxe", True, None, plan.ipxe_url), BootRule("bios", False, False, plan.bios_file)]
    else:  # iPXE on BIOS gets pxelinux too
        rules = [BootRule("ipxe", True, True, plan.ipxe_url), BootRule("bios", None, False, plan.bios_file)]
    if plan.uefi_file is not None:
        rules.append(BootRule("efi64", False, True, plan.uefi_file))
    return rules


def _value(text: str) -> str:
    """``text`` as one dnsmasq value: no separator or line break in it (paths and URLs we made)."""
    if any(c in text for c in ',\n\r\0"#') or text != text.strip():
        raise InvalidOptions(f"dnsmasq cannot be given {text!r}", hint='use a path or address without , " or #')
    return text


def guarded(argv: list[str]) -> list[str]:
    """``argv`` (dnsmasq's) run so that dnsmasq dies with liveimg, even when liveimg is killed.

    A program :func:`liveimg.run.spawn` starts is killed when liveimg dies (its parent-death
    signal), but dnsmasq started as root changes to its own user, and the kernel then forgets
    that signal: a SIGKILLed ``liveimg serve`` would leave it serving.  As root, dnsmasq therefore
    runs in a PID namespace of its own, under a shell that is the namespace's first process and
    keeps the signal (``unshare --kill-child``; the shell runs dnsmasq as a child, not by exec):
    when liveimg dies, the shell is killed, and with it every process of the namespace.  Not as
    root, dnsmasq keeps its user and the signal, and runs as it is.
    """
    if os.geteuid() != 0:
        return argv
    return ["unshare", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", '"$0" "$@"; exit $?', *argv]


class Dnsmasq:
    """``with Dnsmasq(conf, on_line) as d:`` runs dnsmasq with ``conf`` (a file) until the block ends.

    ``on_line`` gets each line dnsmasq logs.  Its start fails (:class:`~liveimg.errors.ToolError`,
    with dnsmasq's last message) if dnsmasq exits within :data:`START_GRACE` seconds.
    """

    def __init__(self, conf: Path, on_line: Callable[[str], None] | None = None) -> None:
        self.conf = conf
        self.on_line = on_line or (lambda line: log.info("dnsmasq: %s", line))
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_KEPT)  # for a failed start's message
        self._stack = contextlib.ExitStack()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Dnsmasq:
        dnsmasq = runner.require("dnsmasq", "dnsmasq-base")
        argv = [dnsmasq, "--keep-in-foreground", "--log-facility=-", f"--conf-file={self.conf}", "--pid-file="]
        with self._stack as stack:
            proc: subprocess.Popen[bytes] = stack.enter_context(
                runner.spawn(guarded(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )
            self._thread = threading.Thread(target=self._relay, args=(proc,), name="dnsmasq-log", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + START_GRACE
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            if proc.poll() is not None:
                self._thread.join(5)
                # Its last line is "FAILED to start up": the one before says why.
                why = [line for line in self.lines if not line.endswith("FAILED to start up")]
                raise ToolError(argv, proc.returncode, "\n".join(why[-3:]) or "dnsmasq exited at once")
            self._stack = stack.pop_all()
        return self

    def _relay(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            self.on_line(line)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()
        if self._thread is not None:
            self._thread.join(5)


def need_root(what: str) -> None:
    """A :class:`~liveimg.errors.HostError` unless we are root: DHCP and TFTP listen on ports 67 and 69."""
    if os.geteuid() != 0:
        raise HostError(f"{what} needs root (it listens on ports 67 and 69)",
                        hint="run liveimg serve as root, or serve HTTP only (--dhcp none, no --tftp)")  # fmt: skip
