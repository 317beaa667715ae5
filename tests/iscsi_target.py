"""A real iSCSI target for the tests: Debian's userspace target (tgtd), reachable by a QEMU guest.

The guest reaches host services only through its restricted user network's forwards, which end
at 127.0.0.1.  A target listening there would answer a SendTargets discovery with
``TargetAddress=127.0.0.1:PORT`` (tgtd reports the address the connection came in on), which
means the guest itself: its login would go nowhere.  So tgtd runs in a network namespace of its
own, where the guest's address for it, ``10.0.2.100:3260``, is a local address; two socat
relays join the forward's port on 127.0.0.1 to it (TCP on the host, a Unix socket across the
namespaces, TCP in the namespace)::

    guest 10.0.2.100:3260 -> QEMU's forward -> 127.0.0.1:<port> -> <sock> -> [netns] 10.0.2.100:3260 tgtd

The target's state is a sparse file (the LUN) and tgtd's own configuration, made with ``tgtadm``
on a control port of its own (``-C N``: another tgtd on the host is never touched).  Everything
ends with the context: the relays and tgtd are stopped, the namespace goes with tgtd.

:func:`send_targets` is an initiator's SendTargets discovery (RFC 3720, a discovery session with
no authentication), and :func:`login_status` a normal session's login, enough to check the target
from the host without open-iscsi.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from liveimg.qemu import GUEST_FORWARD_ADDR, GuestForward
from tests.support import free_port

#: Where the guest reaches the target (its restricted network's forward address, iSCSI's port).
PORTAL_ADDR = GUEST_FORWARD_ADDR
PORTAL_PORT = 3260
TGT_IPC_DIR = Path("/var/run/tgtd")


@dataclass
class Target:
    """A running target: its name, the LUN's file, the host port QEMU forwards to, its log."""

    iqn: str
    lun_file: Path
    host_port: int
    control_port: int
    log: Path

    def forward(self) -> GuestForward:
        """The guest forward: 10.0.2.100:3260 in the guest is this target."""
        return GuestForward(self.host_port, PORTAL_PORT)

    def tgtadm(self, *args: str) -> str:
        argv = ["tgtadm", "--lld", "iscsi", "-C", str(self.control_port), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def _wait(what: str, ready: object, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with status {proc.returncode}: {log.read_text(errors='replace')}")
        time.sleep(0.2)
    raise AssertionError(f"{what} was not ready after {timeout:g} s: {log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def tgt_target(work: Path, iqn: str, lun_file: Path, *, initiator: str | None = None) -> Iterator[Target]:
    """tgtd exporting ``lun_file`` as LUN 1 of target ``iqn`` (see the module docstring).

    With ``initiator``, only that initiator name may discover the target and log in to it (a
    name ACL; tgt 1.0.85 lets in whoever matches any entry, so there is no address entry then),
    else every initiator may.
    """
    TGT_IPC_DIR.mkdir(parents=True, exist_ok=True)
    log = work / "tgtd.log"
    short = Path(tempfile.mkdtemp(prefix="liveimg-iscsi-", dir="/tmp"))  # a Unix socket path is short
    sock = short / "relay.sock"
    procs: list[subprocess.Popen[bytes]] = []
    control = 0
    try:
        with open(log, "ab") as out:
            control = random.randrange(1000, 32000)  # tgtd takes control ports below 32768
            while (TGT_IPC_DIR / f"socket.{control}").exists():
                control = random.randrange(1000, 32000)
            script = 'ip link set lo up && ip addr add "$1/32" dev lo && exec tgtd -f -C "$2" --iscsi "portal=$1:$3"'
            tgtd = subprocess.Popen(
                ["unshare", "--net", "--", "sh", "-c", script, "sh", PORTAL_ADDR, str(control), str(PORTAL_PORT)],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(tgtd)
            target = Target(iqn, lun_file, free_port(), control, log)

            def shows() -> bool:
                try:
                    target.tgtadm("--mode", "target", "--op", "show")
                except subprocess.CalledProcessError:
                    return False
                return True

            _wait("tgtd", shows, tgtd, log)
            target.tgtadm("--mode", "target", "--op", "new", "--tid", "1", "--targetname", iqn)
            target.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1",
                          "--backing-store", str(lun_file))  # fmt: skip
            if initiator is None:
                target.tgtadm("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")
            else:
                target.tgtadm("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-name", initiator)
            # the relay inside the namespace (the same process as tgtd's: unshare execs), then the host's
            inner = subprocess.Popen(
                ["nsenter", f"--net=/proc/{tgtd.pid}/ns/net", "socat", f"UNIX-LISTEN:{sock},fork",
                 f"TCP:{PORTAL_ADDR}:{PORTAL_PORT}"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(inner)
            _wait("the namespace's relay", sock.exists, inner, log)
            outer = subprocess.Popen(
                ["socat", f"TCP-LISTEN:{target.host_port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{sock}"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(outer)

            def listens() -> bool:
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", target.host_port)) == 0

            _wait("the host's relay", listens, outer, log)
        yield target
    finally:
        for proc in reversed(procs):
            if proc is procs[0] and proc.poll() is None:
                # tgtd ignores SIGTERM while it has targets; what it wrote is in the LUN's file already
                proc.kill()
            _stop(proc)
        shutil.rmtree(short, ignore_errors=True)
        if procs:
            for name in (f"socket.{control}", f"socket.{control}.lock"):
                (TGT_IPC_DIR / name).unlink(missing_ok=True)


# -- a SendTargets discovery, as an initiator does it (RFC 3720 10.12, 10.13, 10.10, 10.11) ---


def _pdu(opcode: int, flags: int, data: bytes, rest: bytes) -> bytes:
    """A PDU: the 48-byte basic header (opcode, flags, the data length, ``rest`` from byte 8), the data, padded."""
    header = struct.pack(">BBH", opcode, flags, 0) + struct.pack(">I", len(data))  # AHS length 0 in the top byte
    header += rest.ljust(40, b"\0")
    return header + data + b"\0" * (-len(data) % 4)


def _read_pdu(sock: socket.socket) -> tuple[bytes, bytes]:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the target closed the connection")
            buf += chunk
        return buf

    header = exactly(48)
    length = int.from_bytes(header[5:8], "big")
    data = exactly(length + (-length % 4))[:length]
    return header, data


def _keys(data: bytes) -> list[tuple[str, str]]:
    return [tuple(item.split("=", 1)) for item in data.decode().split("\0") if "=" in item]  # type: ignore[misc]


def _login(sock: socket.socket, keys: str) -> tuple[int, int, int, int]:
    """Log in straight to the operational stage (no authentication), asking to go to full feature:
    the status class and detail, the target's StatSN and ExpCmdSN."""
    isid = bytes([0x80, 0, 0x23, 0x45, 0, 1])  # a random-type ISID
    rest = isid + b"\0\0" + struct.pack(">I", 1) + b"\0" * 4 + struct.pack(">II", 1, 0)
    sock.sendall(_pdu(0x43, 0x80 | (1 << 2) | 3, keys.encode(), rest))
    header, _ = _read_pdu(sock)
    assert header[0] & 0x3F == 0x23, f"not a login response: opcode {header[0]:#x}"
    stat_sn, exp_cmd_sn = struct.unpack(">II", header[24:32])
    return header[36], header[37], stat_sn, exp_cmd_sn


def login_status(host: str, port: int, initiator: str, target: str, timeout: float = 10.0) -> tuple[int, int]:
    """A normal session's login to ``target``: the status class and detail (0, 0: logged in;
    2, 2: this initiator is not authorised).  The connection is closed right after."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        keys = (
            f"InitiatorName={initiator}\0TargetName={target}\0SessionType=Normal\0HeaderDigest=None\0DataDigest=None\0"
        )
        status_class, detail, _, _ = _login(sock, keys)
        return status_class, detail


def send_targets(host: str, port: int, initiator: str, timeout: float = 10.0) -> list[tuple[str, str]]:
    """A discovery session's ``SendTargets=All``: the (key, value) pairs the target answers
    (``TargetName``, ``TargetAddress``, ...).  An AssertionError if the login is refused."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        keys = f"InitiatorName={initiator}\0SessionType=Discovery\0HeaderDigest=None\0DataDigest=None\0"
        status_class, detail, stat_sn, exp_cmd_sn = _login(sock, keys)
        assert (status_class, detail) == (0, 0), f"login refused: status class {status_class}, detail {detail}"
        # Text: SendTargets=All (final, a new task tag, no target transfer tag)
        rest = b"\0" * 8 + struct.pack(">I", 2) + b"\xff\xff\xff\xff" + struct.pack(">II", exp_cmd_sn, stat_sn + 1)
        sock.sendall(_pdu(0x04, 0x80, b"SendTargets=All\0", rest))
        header, data = _read_pdu(sock)
        assert header[0] & 0x3F == 0x24, f"not a text response: opcode {header[0]:#x}"
        return _keys(data)
