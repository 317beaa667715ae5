"""Boot kernels and disks in QEMU, over PXE if asked, and watch the serial console.

This is the engine of ``liveimg boot-test``: it proves that artifacts really boot.  Nothing
here touches the network beyond the host's loopback and QEMU's user-mode network.

Describing a machine (frozen dataclasses)::

    Machine(memory_mib=2048, cpus=1, disks=(Disk(path, fmt="raw", mode="snapshot"),),
            kernel=DirectKernel(kernel, initrd, append) | None,
            netboot=NetworkBoot(tftp_root, bootfile) | None,
            network=True, restrict=True, forwards=(GuestForward(host_port, guest_port),))

``qemu_argv(machine, console_log, accel=None) -> list[str]`` builds the command line:
``qemu-system-x86_64 -machine pc`` (not q35: SeaBIOS did not offer the virtio NIC's iPXE ROM
with q35) with the accelerator of :func:`liveimg.accel.choose_accel`, ``-nodefaults`` (so no
unrestricted default NIC), ``-display none``, the serial console written to ``console_log``,
disks as virtio drives that QEMU never writes to (``snapshot=on`` keeps guest writes in a
temporary overlay, ``readonly=on`` refuses them), and QEMU's user network with
``restrict=on``: the guest then reaches only QEMU's own DHCP and TFTP servers and the
``guestfwd`` ports, each of them forwarded by ``socat`` to one port on 127.0.0.1.

Network boot: a :class:`NetworkBoot` names the TFTP root QEMU serves and the file its DHCP
server offers (the TFTP root is filled by the caller: ``liveimg boot-test`` puts there the
pxe stage's own configurations).  :class:`HttpServer` serves a directory on
127.0.0.1 from a thread (GET and HEAD with ``Content-Length``, files of any size, single
byte ranges), as dracut's livenet needs; ``server.forward()`` gives the
:class:`GuestForward` and ``server.guest_url(name)`` the URL the guest must use.

Watching: :func:`boot` starts a machine, watches its console with
:func:`liveimg.console.watch_console` and stops it::

    result = boot(machine, workdir, timeout=900)
    result.ok, result.outcome, result.seconds, result.marker["root"], result.last_lines
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from liveimg import run as runner
from liveimg.accel import Accel, AccelChoice, choose_accel
from liveimg.console import DEFAULT_FAILURES, DEFAULT_SUCCESS, BootResult, Outcome, Pattern, watch_console
from liveimg.errors import InvalidOptions

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
#: Where the restricted user network lets the guest reach forwarded host ports.
GUEST_FORWARD_ADDR = "10.0.2.100"


# ---------------------------------------------------------------------------------------------
# describing and starting a machine


@dataclass(frozen=True)
class Disk:
    """A disk image attached as a virtio drive.  QEMU never writes to the file.

    ``mode="snapshot"``: the guest may write, into a temporary overlay that is thrown away
    (an installed system needs a writable root).  ``mode="readonly"``: the guest sees a
    read-only disk (a squashfs, an ISO).
    """

    path: Path
    fmt: Literal["raw", "qcow2"] = "raw"
    mode: Literal["snapshot", "readonly"] = "snapshot"


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


def _qemu_path(path: Path) -> str:
    return os.fspath(path).replace(",", ",,")  # QEMU's option syntax doubles commas


def qemu_argv(machine: Machine, console_log: Path, accel: AccelChoice | None = None) -> list[str]:
    """The QEMU command line for ``machine``, its serial console written to ``console_log``."""
    if machine.kernel is not None and machine.netboot is not None:
        raise InvalidOptions("a machine boots either a kernel directly or over the network, not both")
    if not machine.disks and machine.kernel is None and machine.netboot is None:
        raise InvalidOptions("the machine has nothing to boot: give a disk, a kernel or a network boot")
    choice = accel or choose_accel()
    accel_args = choice.qemu_args()
    argv = [QEMU, "-machine", "pc", *accel_args]
    if choice.accel is Accel.TCG and "-cpu" not in accel_args:
        argv += ["-cpu", "max"]  # x86-64-v2 and later kernels (RHEL 9, Fedora) need more than qemu64
    argv += [
        "-m", str(machine.memory_mib), "-smp", str(machine.cpus),
        "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
        "-serial", f"file:{_qemu_path(console_log)}",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    for index, disk in enumerate(machine.disks):
        access = "snapshot=on" if disk.mode == "snapshot" else "readonly=on"
        argv += ["-drive", f"file={_qemu_path(disk.path)},format={disk.fmt},if=virtio,index={index},{access}"]
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
        argv += ["-netdev", ",".join(netdev), "-device", "virtio-net-pci,netdev=net0"]
    if machine.netboot is not None:
        argv += ["-boot", "order=n"]
    elif machine.kernel is None:
        argv += ["-boot", "order=c"]
    argv += list(machine.extra_args)
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


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class Request:
    """One request the server answered (for tests and logs)."""

    method: str
    path: str
    status: int
    bytes_sent: int


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s: " + format, self.address_string(), *args)

    def send_head(self) -> IO[bytes] | None:  # type: ignore[override]
        self._range: tuple[int, int] | None = None
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if spec and path.is_file():
            size = path.stat().st_size
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    first = int(match.group(1))
                    last = int(match.group(2)) if match.group(2) else size - 1
                else:
                    first, last = max(0, size - int(match.group(2))), size - 1
                last = min(last, size - 1)
                if first > last:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                f = open(path, "rb")  # noqa: SIM115 -- closed by the caller, as in the base class
                self.send_response(206)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self.send_header("Content-Length", str(last - first + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self._range = (first, last)
                return f
        return super().send_head()

    def copyfile(self, source: IO[bytes], outputfile: IO[bytes]) -> None:  # type: ignore[override]
        first, count = 0, None
        if self._range is not None:
            first, count = self._range[0], self._range[1] - self._range[0] + 1
        try:
            sent = self.connection.sendfile(source, first, count)
        except (BrokenPipeError, ConnectionResetError):
            sent = 0
        self.server.record(Request(self.command, self.path, 206 if self._range else 200, sent))

    def do_HEAD(self) -> None:
        super().do_HEAD()
        self.server.record(Request("HEAD", self.path, 200, 0))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), self._make_handler)

    def _make_handler(self, request: socket.socket, client: tuple[str, int], server: _Server) -> _Handler:
        return _Handler(request, client, server, directory=os.fspath(self.directory))

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class HttpServer:
    """Serve ``directory`` on 127.0.0.1 (an ephemeral port) from a background thread.

    Use as a context manager.  ``requests`` lists what was served.
    """

    def __init__(self, directory: Path, guest_port: int = 8080) -> None:
        if not directory.is_dir():
            raise InvalidOptions(f"{directory} is not a directory")
        self.directory = directory
        self.guest_port = guest_port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HttpServer:
        self._server = _Server(self.directory)
        self._thread = threading.Thread(target=self._server.serve_forever, name="liveimg-http", daemon=True)
        self._thread.start()
        log.debug("serving %s on 127.0.0.1:%d", self.directory, self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the HTTP server is not running")
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[Request]:
        return list(self._server.requests) if self._server is not None else []

    def url(self, name: str = "") -> str:
        """URL of ``name`` for the host."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def forward(self) -> GuestForward:
        """The guest forward that makes this server reachable from a restricted guest."""
        return GuestForward(self.port, self.guest_port)

    def guest_url(self, name: str = "") -> str:
        """URL of ``name`` for the guest (through :meth:`forward`)."""
        return f"http://{GUEST_FORWARD_ADDR}:{self.guest_port}/{name}"


@contextlib.contextmanager
def serve_directory(directory: Path, guest_port: int = 8080) -> Iterator[HttpServer]:
    """``with serve_directory(d) as server:`` -- shorthand for :class:`HttpServer`."""
    with HttpServer(directory, guest_port) as server:
        yield server
