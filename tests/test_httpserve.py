"""Unit tests of liveimg.httpserve: what a booting guest's fetches need, over real sockets on loopback."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.httpserve import HttpServer
from liveimg.qemu import GuestForward
from tests import support


def test_http_server_get_head_range(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "file.bin").write_bytes(data)
    with HttpServer(tmp_path) as server:
        assert server.url("file.bin") == f"http://127.0.0.1:{server.port}/file.bin"
        assert server.guest_url("file.bin") == "http://10.0.2.100:8080/file.bin"
        assert server.forward() == GuestForward(server.port, 8080)
        with urllib.request.urlopen(server.url("file.bin")) as resp:
            assert resp.headers["Content-Length"] == str(len(data))
            assert resp.read() == data
        head = urllib.request.Request(server.url("file.bin"), method="HEAD")
        with urllib.request.urlopen(head) as resp:
            assert resp.headers["Content-Length"] == str(len(data))
        ranged = urllib.request.Request(server.url("file.bin"), headers={"Range": "bytes=1000-1009"})
        with urllib.request.urlopen(ranged) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 1000-1009/{len(data)}"
            assert resp.read() == data[1000:1010]
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url("nope"))
        assert missing.value.code == 404
        # A request is recorded once its response is sent: the client may read it a moment before.
        deadline = time.monotonic() + 10
        while len(server.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(r.method, r.path, r.bytes_sent) for r in server.requests] == [
            ("GET", "/file.bin", len(data)),
            ("HEAD", "/file.bin", 0),
            ("GET", "/file.bin", 10),
        ]


def test_http_server_large_sparse_file_with_curl(tmp_path: Path) -> None:
    """What livenet's curl does, on a file past 4 GiB (sparse: nothing big is transferred but the tail)."""
    support.need("curl")
    big = tmp_path / "live-rootfs.squashfs.img"
    size = 5 * 1024**3 + 12345
    with open(big, "wb") as f:
        f.seek(size - 4)
        f.write(b"TAIL")
    with HttpServer(tmp_path) as server:
        head = runner.run(["curl", "-sIL", "--fail", server.url(big.name)])
        assert f"Content-Length: {size}" in head.stdout
        out = tmp_path / "tail"
        runner.run(["curl", "--location", "--retry", "3", "--fail", "-s", "-r", f"{size - 8}-", "-o", out,
                    server.url(big.name)])  # fmt: skip
        assert out.read_bytes() == b"\0\0\0\0TAIL"
        small = tmp_path / "initrd.img"
        small.write_bytes(b"x" * 3_000_000)
        fetched = tmp_path / "fetched"
        runner.run(["curl", "--location", "--retry", "3", "--fail", "-s", "-o", fetched, server.url(small.name)])
        assert fetched.read_bytes() == small.read_bytes()
