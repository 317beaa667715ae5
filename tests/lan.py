"""A network made by the test, served by ``liveimg serve``, booted by QEMU's network card.

:class:`Lan` makes a network namespace with a bridge (the server's address on it) and one tap
device per machine, and removes them all when its ``with`` block ends.  :meth:`Lan.serve` runs
``liveimg serve`` in the namespace as a user runs it (``python -m liveimg serve``: dnsmasq for
DHCP and TFTP, liveimg's HTTP server) and :meth:`Lan.boot` boots a QEMU guest whose only network
card is on a tap device of the bridge, from its firmware's PXE: nothing of QEMU's own network
services is used, and nothing outside the namespace can be reached.

:func:`checked_outdir` gives a copy of a build whose initramfs carries boot-test's checker (its
manifest updated to match), so that the booted system reports what it is on the console.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveimg import qemu
from liveimg.boottest import CHECKS_DONE, judge, parse_checks, with_checks
from liveimg.console import BootResult
from liveimg.manifest import sha256_file

REPO = Path(__file__).resolve().parents[1]
#: The bridge's subnet: inside the namespace only, so any private range will do.
SERVER = "10.77.0.1"
PREFIX = 24
#: A network's own DHCP server, beside liveimg serve's proxy DHCP (:meth:`Lan.other_dhcp_server`).
OTHER_DHCP = "10.77.0.2"
HTTP_PORT = 8080
#: How long `liveimg serve` may take to check the builds and start.
SERVE_START = 120.0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def checked_outdir(out: Path, dest: Path) -> Path:
    """``dest``: ``out``'s files (hard links) with boot-test's checker appended to the initramfs,
    and a manifest whose artifacts match."""
    dest.mkdir(parents=True)
    for path in out.rglob("*"):
        rel = path.relative_to(out)
        if path.is_dir():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        elif path.name != "manifest.json":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest / rel)
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    initramfs = manifest["boot"]["initramfs"]
    (dest / initramfs).unlink()
    scratch = dest.parent / f"{dest.name}.scratch"
    scratch.mkdir()
    with_checks(out / initramfs, dest / initramfs, scratch)
    shutil.rmtree(scratch)
    path = dest / initramfs
    manifest["artifacts"][initramfs] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return dest


@dataclass
class Served:
    """A running ``liveimg serve``: what it said it serves, and every line it printed since."""

    proc: subprocess.Popen[str]
    info: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)

    def lines(self, kind: str) -> list[str]:
        return [e["line"] for e in list(self.events) if e.get("event") == kind]


@dataclass
class Booted:
    result: BootResult
    fields: dict[str, str]
    problems: list[str]


class Lan:
    """``with Lan() as lan:`` a namespace, a bridge at :data:`SERVER`, removed when the block ends."""

    def __init__(self) -> None:
        self.netns = f"liveimg-t{os.getpid()}"
        self.taps = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Lan:
        ip("netns", "add", self.netns)
        self._stack.callback(ip, "netns", "delete", self.netns)
        self._in("link", "set", "lo", "up")
        self._in("link", "add", "br0", "type", "bridge")
        self._in("addr", "add", f"{SERVER}/{PREFIX}", "dev", "br0")
        self._in("link", "set", "br0", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _in(self, *args: str) -> None:
        ip("-n", self.netns, *args)

    def veth(self) -> str:
        """A new client interface on the bridge (a veth pair), for a DHCP client in the namespace."""
        name = f"vc{self.taps}"
        self.taps += 1
        self._in("link", "add", name, "type", "veth", "peer", "name", f"vb{name[2:]}")
        self._in("link", "set", f"vb{name[2:]}", "master", "br0")
        self._in("link", "set", f"vb{name[2:]}", "up")
        self._in("link", "set", name, "up")
        return name

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``argv`` run in the namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip

    @contextlib.contextmanager
    def other_dhcp_server(self, leases: Path) -> Iterator[list[str]]:
        """A plain DHCP server on the bridge (no boot file), in a namespace of its own, as a network's
        own DHCP server would be beside ``liveimg serve --dhcp proxy``; yields its log lines."""
        other = f"{self.netns}-dhcp"
        ip("netns", "add", other)
        try:
            ip("-n", self.netns, "link", "add", "vd0", "type", "veth", "peer", "name", "vd1", "netns", other)
            self._in("link", "set", "vd0", "master", "br0")
            self._in("link", "set", "vd0", "up")
            ip("-n", other, "addr", "add", f"{OTHER_DHCP}/{PREFIX}", "dev", "vd1")
            ip("-n", other, "link", "set", "vd1", "up")
            argv = ["ip", "netns", "exec", other, "dnsmasq", "--keep-in-foreground", "--log-facility=-",
                    "--pid-file=", "--port=0", "--no-resolv", "--no-hosts", "--interface=vd1", "--bind-interfaces",
                    "--dhcp-range=10.77.0.20,10.77.0.60,1h", f"--dhcp-leasefile={leases}", "--log-dhcp"]  # fmt: skip
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            lines: list[str] = []

            def read() -> None:
                assert proc.stderr is not None
                lines.extend(proc.stderr)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            try:
                yield lines
            finally:
                proc.terminate()
                proc.wait(30)
                reader.join(10)
        finally:
            ip("netns", "delete", other)

    def tap(self) -> str:
        name = f"tap{self.taps}"
        self.taps += 1
        self._in("tuntap", "add", "dev", name, "mode", "tap")
        self._in("link", "set", name, "master", "br0")
        self._in("link", "set", name, "up")
        return name

    @contextlib.contextmanager
    def serve(self, outdirs: Sequence[Path], *options: str) -> Iterator[Served]:
        """``liveimg serve OUTDIRS --http SERVER:PORT --interface br0 OPTIONS`` in the namespace, until
        the block ends."""
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "liveimg", "--progress", "json", "serve",
                *map(str, outdirs), "--http", f"{SERVER}:{HTTP_PORT}", "--interface", "br0", *options]  # fmt: skip
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        events: list[dict[str, Any]] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = json.loads(line)
                events.append(event)
                lines.put(event)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + SERVE_START
            while True:
                event = lines.get(timeout=max(1.0, deadline - time.monotonic()))
                if event is None:
                    proc.wait(10)
                    raise AssertionError(
                        f"liveimg serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
                    )
                if event.get("event") == "serving":
                    break
            yield Served(proc, event, events)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            reader.join(10)

    def boot(self, manifest: dict[str, Any], workdir: Path, *, uefi: qemu.Uefi | None = None,
             timeout: float = 1800.0, memory_mib: int = 2048) -> Booted:  # fmt: skip
        """Boot a diskless guest from its network card on a new tap device; judge what it reports."""
        tap = qemu.Tap(self.tap(), netns=self.netns, mac=f"52:54:00:77:00:{self.taps:02x}")
        machine = qemu.Machine(memory_mib=memory_mib, tap=tap, uefi=uefi)
        result = qemu.boot(machine, workdir, timeout=timeout, success=[CHECKS_DONE])
        fields, status, table, blocks = parse_checks(result.console_log)
        problems = judge(manifest, fields, status, table, blocks, uefi=uefi is not None) if result.ok else []
        return Booted(result, fields, problems)
