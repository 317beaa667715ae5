"""Serve a directory to a QEMU guest over HTTP, on the host's loopback only.

:class:`HttpServer` (or :func:`serve_directory`) serves the files below one directory on
127.0.0.1, on a port the kernel picks, from a background thread, for as long as its ``with``
block lasts.  It answers GET and HEAD with ``Content-Length``, for files of any size (sent
with ``sendfile``), and single byte ranges (``Range: bytes=A-B``, ``A-`` or ``-N``: 206 with
``Content-Range``; 416 for a range that starts past the end): what dracut's livenet needs to
fetch a live image with curl.  ``requests`` lists what was served.

A guest on QEMU's restricted user network reaches the server only through the
:class:`~liveimg.qemu.GuestForward` that ``forward()`` gives, at the URL ``guest_url(name)``.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from liveimg.errors import InvalidOptions
from liveimg.qemu import GUEST_FORWARD_ADDR, GuestForward

log = logging.getLogger(__name__)


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
