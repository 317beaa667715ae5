"""Export a file to a QEMU guest over NBD, on the host's loopback only (``boot-test`` of an ``nbd://`` build).

:class:`NbdServer` runs ``qemu-nbd`` (Debian's qemu-utils) on 127.0.0.1, on a free port, exporting
one file read-only under one export name, for as many clients as come (``--shared=0``) and
across their reconnections (``--persistent``), for as long as its ``with`` block lasts; the
program is always stopped when the block ends.  A guest on QEMU's restricted user network
reaches it only through the :class:`~liveimg.qemu.GuestForward` that ``forward()`` gives, at the
URL ``guest_url()`` (``nbd://10.0.2.100:<guest port>``, the export name appended by the caller).
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from types import TracebackType

from liveimg import bootsyntax
from liveimg import run as runner
from liveimg.errors import ToolError
from liveimg.qemu import GUEST_FORWARD_ADDR, GuestForward

#: How long qemu-nbd may take to listen.
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class NbdServer:
    """``with NbdServer(file, export, log) as server:`` -- ``file`` exported read-only as ``export``."""

    def __init__(self, path: Path, export: str, log_path: Path, guest_port: int = bootsyntax.NBD_PORT) -> None:
        self.path = path
        self.export = export
        self.log_path = log_path
        self.guest_port = guest_port
        self.port = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> NbdServer:
        self.port = _free_port()
        argv = ["qemu-nbd", "--read-only", "--persistent", "--shared=0", "--format=raw", "--bind=127.0.0.1",
                f"--port={self.port}", f"--export-name={self.export}", str(self.path)]  # fmt: skip
        with self._stack as stack:
            log_file = stack.enter_context(self.log_path.open("wb"))
            proc = stack.enter_context(runner.spawn(argv, stderr=log_file, stdout=log_file, package="qemu-utils"))
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise ToolError(argv, proc.returncode, self.log_path.read_text(errors="replace"))
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise ToolError(
                            argv, None, message=f"qemu-nbd did not listen within {START_TIMEOUT:.0f} s"
                        ) from None
                    time.sleep(0.1)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def forward(self) -> GuestForward:
        """The guest forward that makes this server reachable from a restricted guest."""
        return GuestForward(self.port, self.guest_port)

    def guest_url(self) -> str:
        """The base URL the guest reaches the server at (through :meth:`forward`)."""
        return f"nbd://{GUEST_FORWARD_ADDR}:{self.guest_port}"


__all__ = ["NbdServer"]
