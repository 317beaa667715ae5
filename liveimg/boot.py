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

Watching: :func:`watch_console` follows the console log as it grows and returns a
:class:`BootResult` on the first success pattern (the sample's marker line by default; a
login prompt or the multi-user target count too, when no marker follows within a grace
period), on the first known failure (dracut's emergency shell, "Could not boot", a kernel
panic, "Failed to find a root filesystem", curl and livenet download errors, ...), when QEMU
exits, or at the timeout.  :func:`boot` runs a machine and watches it::

    result = boot(machine, workdir, timeout=900)
    result.ok, result.outcome, result.seconds, result.marker["root"], result.last_lines

The sample images' marker line (scripts/sample_image.py) is::

    LIVEIMG-SAMPLE-READY ostree-booted=<yes|no> root=<source of /> fstype=<type> hostname=<name>
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import http.server
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Literal

from liveimg import run as runner
from liveimg.accel import Accel, AccelChoice, choose_accel
from liveimg.errors import InvalidOptions

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
#: Where the restricted user network lets the guest reach forwarded host ports.
GUEST_FORWARD_ADDR = "10.0.2.100"

MARKER = "LIVEIMG-SAMPLE-READY"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


@dataclass(frozen=True)
class Pattern:
    """A named regular expression searched in each console line (ANSI escapes and CRs removed)."""

    name: str
    regex: str

    def search(self, line: str) -> re.Match[str] | None:
        return re.search(self.regex, line)


#: The sample images' marker line: the best success signal.
MARKER_PATTERN = Pattern("marker", rf"\b{MARKER}\b")
#: Userspace is up: getty's login prompt or systemd's multi-user target.
LOGIN_PATTERN = Pattern("login-prompt", r"^\S+ login: ?$")
MULTI_USER_PATTERN = Pattern("multi-user", r"Reached target .*Multi-User System")
#: Default success patterns, best first.
DEFAULT_SUCCESS: tuple[Pattern, ...] = (MARKER_PATTERN, LOGIN_PATTERN, MULTI_USER_PATTERN)

#: Known ways a boot fails, checked on every line: the boot stops as soon as one matches.
DEFAULT_FAILURES: tuple[Pattern, ...] = (
    Pattern("kernel-panic", r"Kernel panic - not syncing"),
    Pattern("emergency-mode", r"Entering emergency mode|You are in emergency mode|Give root password for maintenance"),
    Pattern("dracut-could-not-boot", r"dracut-initqueue.*Could not boot"),
    Pattern("dracut-fatal", r"dracut(?:-[\w-]+)?(?:\[\d+\])?: FATAL:"),
    Pattern("no-root-filesystem", r"Failed to find a root filesystem"),
    Pattern("ostree-root-missing", r"ostree-prepare-root.*(?:Couldn't find specified OSTree root|No such file)"),
    Pattern("download-failed", r"failed to download live image|Failed to download|curl: \(\d+\)"),
    Pattern("no-bootable-device", r"No bootable device|Could not boot from|PXE-E\d\d|Boot failed: could not read"),
)


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    EXITED = "exited"  # QEMU stopped before either


@dataclass(frozen=True)
class BootResult:
    """How a boot went.

    ``seconds`` runs from the start of watching to the deciding line (or the timeout);
    ``reason`` is the name of the pattern that decided (``marker``, ``kernel-panic``, ...),
    ``timeout`` or ``qemu-exited``; ``line`` the console line that decided; ``marker`` the
    fields of the marker line, if one was seen; ``last_lines`` the last meaningful console
    lines, to show where the boot stopped.
    """

    outcome: Outcome
    reason: str
    seconds: float
    console_log: Path
    line: str | None = None
    marker: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    last_lines: tuple[str, ...] = ()
    exit_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        text = f"{self.outcome} ({self.reason}) after {self.seconds:.0f} s"
        if self.line:
            text += f": {self.line}"
        return text

    def explain(self) -> str:
        """Summary plus the last console lines, for a failing test."""
        tail = "\n".join(f"  | {line}" for line in self.last_lines)
        return f"{self.summary()}\nconsole log: {self.console_log}\n{tail}"


def parse_marker(line: str) -> dict[str, str]:
    """The ``key=value`` fields after the marker word; ``{}`` if the line has no marker."""
    where = line.find(MARKER)
    if where < 0:
        return {}
    fields: dict[str, str] = {}
    for token in line[where + len(MARKER) :].split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def clean_line(raw: str) -> str:
    """A console line without ANSI escapes and control characters (a CR becomes a space)."""
    text = _ANSI.sub("", raw).replace("\r", " ")
    return "".join(ch for ch in text if ch == "\t" or ch >= " ").strip()


class ConsoleReader:
    """Yields complete lines of a growing log file (cleaned with :func:`clean_line`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._partial = b""

    def read_lines(self) -> list[str]:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 -- kept open while the log grows
            except FileNotFoundError:
                return []
        data = self._partial + self._file.read()
        *complete, self._partial = data.split(b"\n")
        return [clean_line(chunk.decode("utf-8", "replace")) for chunk in complete]

    def pending(self) -> str:
        """The unterminated last line read so far."""
        return clean_line(self._partial.decode("utf-8", "replace"))

    def flush(self) -> list[str]:
        """Lines so far, plus the unterminated last one (a login prompt ends without a newline)."""
        lines = self.read_lines()
        if self._partial:
            lines.append(clean_line(self._partial.decode("utf-8", "replace")))
            self._partial = b""
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def watch_console(
    console_log: Path,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    success: Sequence[Pattern] = DEFAULT_SUCCESS,
    failures: Sequence[Pattern] = DEFAULT_FAILURES,
    grace: float = 30.0,
    poll: float = 0.25,
    tail: int = 20,
    on_line: Callable[[str], None] | None = None,
) -> BootResult:
    """Follow ``console_log`` until a success or failure pattern, QEMU's exit, or ``timeout`` seconds.

    ``success`` is ordered best first: the first one ends the watch at once; a later one
    (a login prompt, say) ends it after ``grace`` seconds unless a better one shows up.
    A line matching a failure pattern ends the watch at once.  ``on_line`` is given every
    non-empty console line as it is read (for progress reports).
    """
    started = time.monotonic()
    reader = ConsoleReader(console_log)
    recent: list[str] = []
    fallback: tuple[int, Pattern, str, float] | None = None  # (rank, pattern, line, seconds)
    marker: dict[str, str] = {}

    def result(
        outcome: Outcome, reason: str, line: str | None, seconds: float, status: int | None = None
    ) -> BootResult:
        return BootResult(
            outcome=outcome,
            reason=reason,
            seconds=round(seconds, 1),
            console_log=console_log,
            line=line,
            marker=MappingProxyType(dict(marker)),
            last_lines=tuple(recent[-tail:]),
            exit_status=status,
        )

    try:
        while True:
            exited = process.poll() if process is not None else None
            now = time.monotonic() - started
            lines = reader.read_lines() if exited is None else reader.flush()
            if exited is None and fallback is None and LOGIN_PATTERN in success:
                # A login prompt ends without a newline: look at the unterminated line too.
                pending = reader.pending()
                if pending and LOGIN_PATTERN.search(pending):
                    lines += reader.flush()
            for line in lines:
                if not line:
                    continue
                recent.append(line)
                del recent[: -tail * 4]
                if on_line is not None:
                    on_line(line)
                for pattern in failures:
                    if pattern.search(line):
                        return result(Outcome.FAILURE, pattern.name, line, now)
                for rank, pattern in enumerate(success):
                    if pattern.search(line):
                        if pattern is MARKER_PATTERN or MARKER in pattern.regex:
                            marker.update(parse_marker(line))
                        if rank == 0:
                            return result(Outcome.SUCCESS, pattern.name, line, now)
                        if fallback is None or rank < fallback[0]:
                            fallback = (rank, pattern, line, now)
                        break
            if fallback is not None and (now - fallback[3] >= grace or exited is not None):
                return result(Outcome.SUCCESS, fallback[1].name, fallback[2], fallback[3])
            if exited is not None:
                return result(Outcome.EXITED, "qemu-exited", f"QEMU exited with status {exited}", now, exited)
            if now >= timeout:
                return result(Outcome.TIMEOUT, "timeout", None, now)
            time.sleep(poll)
    finally:
        reader.close()


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
