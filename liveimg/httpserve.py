"""Serve a directory to a QEMU guest over HTTP, on the host's loopback only.

:class:`HttpServer` (or :func:`serve_directory`) serves the regular files below one directory
on 127.0.0.1, on a port the kernel picks, from a background thread, for as long as its ``with``
block lasts, with :class:`liveimg.serve.http.ArtifactServer` (keep-alive, ``Content-Length``,
``sendfile``, single byte ranges: what dracut's livenet needs to fetch a live image with curl).
Files placed in the directory after the server started are served too.  ``requests`` lists
what was served.

A guest on QEMU's restricted user network reaches the server only through the
:class:`~liveimg.qemu.GuestForward` that ``forward()`` gives, at the URL ``guest_url(name)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from liveimg.errors import InvalidOptions
from liveimg.qemu import GUEST_FORWARD_ADDR, GuestForward
from liveimg.serve.http import ArtifactServer, Served, bad_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One request the server answered (for tests and logs)."""

    method: str
    path: str
    status: int
    bytes_sent: int


class DirectoryFiles(Mapping[str, Served]):
    """The regular files below ``root`` as a served map, looked up when asked for.

    A name is a ``/``-separated path with no empty, ``.`` or ``..`` segment; its directories
    must be real directories (a symlinked directory is not entered), and it must end at a
    regular file.  A symlink as the last segment is followed: whoever fills ``root`` chose it
    (boot-test links its artifacts in, and falls back to a symlink across filesystems), the
    client only names it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def __getitem__(self, name: str) -> Served:
        if bad_name(name):
            raise KeyError(name)
        *dirs, leaf = name.split("/")
        where = self.root
        try:
            for part in dirs:
                where = where / part
                if not stat.S_ISDIR(os.lstat(where).st_mode):
                    raise KeyError(name)
            info = os.stat(where / leaf)
        except OSError:
            raise KeyError(name) from None
        if not stat.S_ISREG(info.st_mode):
            raise KeyError(name)
        return Served(path=where / leaf, size=info.st_size)

    def __iter__(self) -> Iterator[str]:
        for top, _dirs, files in os.walk(self.root):
            for leaf in sorted(files):
                name = os.path.relpath(os.path.join(top, leaf), self.root).replace(os.sep, "/")
                if name in self:
                    yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: The port on the guest side of the server's forward (:meth:`HttpServer.forward`), by default.
GUEST_PORT = 8080


class HttpServer:
    """Serve ``directory`` on 127.0.0.1 (an ephemeral port) from a background thread.

    Use as a context manager.  ``requests`` lists what was served.
    """

    def __init__(self, directory: Path, guest_port: int = GUEST_PORT) -> None:
        if not directory.is_dir():
            raise InvalidOptions(f"{directory} is not a directory")
        self.directory = directory
        self.guest_port = guest_port
        self._server: ArtifactServer | None = None

    def __enter__(self) -> HttpServer:
        self._server = ArtifactServer(DirectoryFiles(self.directory), "127.0.0.1", 0, log=self._log).__enter__()
        log.debug("serving %s on 127.0.0.1:%d", self.directory, self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.__exit__(*exc)

    @staticmethod
    def _log(line: str) -> None:
        log.debug("http %s", line)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the HTTP server is not running")
        return self._server.port

    @property
    def requests(self) -> list[Request]:
        """The files served (200 and 206 answers, HEAD included), in order."""
        if self._server is None:
            return []
        return [
            Request(r.method, r.path, r.status, r.bytes_sent) for r in self._server.requests if r.status in (200, 206)
        ]

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
def serve_directory(directory: Path, guest_port: int = GUEST_PORT) -> Iterator[HttpServer]:
    """``with serve_directory(d) as server:`` -- shorthand for :class:`HttpServer`."""
    with HttpServer(directory, guest_port) as server:
        yield server
