"""Unit tests of liveimg.serve.http over real sockets on loopback, with http.client."""

from __future__ import annotations

import http.client
import os
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from liveimg.errors import HostError, InvalidOptions
from liveimg.serve import http as serve_http
from liveimg.serve.http import ArtifactServer, Request, Served, parse_address, parse_range

SIZE = 100_000
ETAG = "0123abcd"


@pytest.fixture
def payload(tmp_path: Path) -> bytes:
    data = random.Random(7).randbytes(SIZE)
    (tmp_path / "live.img").write_bytes(data)
    return data


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def server(tmp_path: Path, payload: bytes, lines: list[str]) -> Iterator[ArtifactServer]:
    files = {
        "images/live.img": Served.file(tmp_path / "live.img", etag=ETAG),
        "menu.ipxe": Served.text("#!ipxe\nboot\n"),
    }
    with ArtifactServer(files, log=lines.append) as running:
        yield running


def fetch(
    server: ArtifactServer, path: str, method: str = "GET", **headers: str
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def recorded(server: ArtifactServer, count: int) -> list[Request]:
    """The server's first ``count`` records, once it has made them (it records after answering)."""
    wait_for(lambda: len(server.requests) >= count)
    return server.requests[:count]


def test_full_get_has_length_validators_and_type(server: ArtifactServer, payload: bytes) -> None:
    response, body = fetch(server, "/images/live.img?cache=no")
    assert response.status == 200 and body == payload
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{ETAG}"'
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Last-Modified"].endswith(" GMT")
    menu, text = fetch(server, "/menu.ipxe")
    assert (menu.status, text) == (200, b"#!ipxe\nboot\n")
    assert menu.headers["Content-Type"].startswith("text/plain")
    assert menu.headers["ETag"].strip('"') == Served.text("#!ipxe\nboot\n").etag
    assert "Last-Modified" not in menu.headers


def test_head_sends_headers_only(server: ArtifactServer) -> None:
    response, body = fetch(server, "/images/live.img", "HEAD")
    assert (response.status, body) == (200, b"")
    assert response.headers["Content-Length"] == str(SIZE)
    assert recorded(server, 1)[0].bytes_sent == 0 and recorded(server, 1)[0].method == "HEAD"


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=99990-", 99990, SIZE - 1),
        ("bytes=-5", SIZE - 5, SIZE - 1),
        ("bytes=-200000", 0, SIZE - 1),
        ("bytes=99000-500000", 99000, SIZE - 1),
        ("bytes=0-0", 0, 0),
    ],
)
def test_single_ranges_are_206(server: ArtifactServer, payload: bytes, spec: str, first: int, last: int) -> None:
    response, body = fetch(server, "/images/live.img", Range=spec)
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert body == payload[first : last + 1]
    assert recorded(server, 1)[0].range == (first, last)


def test_ranges_of_generated_data(server: ArtifactServer) -> None:
    response, body = fetch(server, "/menu.ipxe", Range="bytes=2-5")
    assert (response.status, body) == (206, b"ipxe")


@pytest.mark.parametrize("spec", ["bytes=100000-", "bytes=200000-300000", "bytes=-0"])
def test_unsatisfiable_range_is_416(server: ArtifactServer, spec: str) -> None:
    response, body = fetch(server, "/images/live.img", Range=spec)
    assert (response.status, body) == (416, b"")
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=5-2", "items=0-1", "bytes=a-b", "bytes=-"])
def test_multi_and_bad_ranges_get_the_whole_body(server: ArtifactServer, payload: bytes, spec: str) -> None:
    response, body = fetch(server, "/images/live.img", Range=spec)
    assert (response.status, body) == (200, payload)


def test_if_range(server: ArtifactServer, payload: bytes) -> None:
    same, body = fetch(server, "/images/live.img", Range="bytes=0-9", **{"If-Range": f'"{ETAG}"'})
    assert (same.status, body) == (206, payload[:10])
    other, body = fetch(server, "/images/live.img", Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert (other.status, body) == (200, payload)
    dated, body = fetch(server, "/images/live.img", Range="bytes=0-9", **{"If-Range": "Sun, 06 Dec 2026 00:00:00 GMT"})
    assert (dated.status, body) == (200, payload)


@pytest.mark.parametrize("tag", [f'"{ETAG}"', f'W/"{ETAG}"', f'"x", "{ETAG}"', "*"])
def test_if_none_match_is_304(server: ArtifactServer, tag: str) -> None:
    response, body = fetch(server, "/images/live.img", **{"If-None-Match": tag})
    assert (response.status, body) == (304, b"")
    assert response.headers["ETag"] == f'"{ETAG}"'


def test_if_none_match_other_tag_is_200(server: ArtifactServer, payload: bytes) -> None:
    response, body = fetch(server, "/images/live.img", **{"If-None-Match": '"other"'})
    assert (response.status, body) == (200, payload)


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/images/../images/live.img",
        "/images/%2e%2e/images/live.img",
        "/./images/live.img",
        "http://127.0.0.1/images/live.img",
        "//images/live.img",
        "/images//live.img",
        "/images/",
        "/",
        "/images/live.img%00",
        "/%ff",
        "images/live.img",
    ],
)
def test_unknown_and_traversal_paths_are_404(server: ArtifactServer, path: str) -> None:
    response, body = fetch(server, path)
    assert response.status == 404
    assert ETAG.encode() not in body and len(body) < 100


def test_percent_decoding_is_done_once(tmp_path: Path, payload: bytes) -> None:
    files = {"a b/%41": Served(data=b"literal")}
    with ArtifactServer(files) as server:
        assert fetch(server, "/a%20b/%2541")[1] == b"literal"
        assert fetch(server, "/a%20b/A")[0].status == 404


def test_bad_names_in_the_map_are_refused() -> None:
    for name in ("../x", "a//b", "/abs", "a/./b", ""):
        with pytest.raises(InvalidOptions):
            ArtifactServer({name: Served(data=b"")})


def test_other_methods_are_405_with_allow(server: ArtifactServer, payload: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("DELETE", "/images/live.img")
    response = conn.getresponse()
    response.read()
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
    conn.request("GET", "/images/live.img")  # the connection is still good
    assert conn.getresponse().read() == payload
    conn.close()


def test_keep_alive_serves_many_requests_on_one_connection(server: ArtifactServer, payload: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.connect()
    sock = conn.sock
    for first in range(0, SIZE, 20_000):
        conn.request("GET", "/images/live.img", headers={"Range": f"bytes={first}-{first + 19_999}"})
        response = conn.getresponse()
        assert response.read() == payload[first : first + 20_000]
        conn.request("GET", "/nope")
        missing = conn.getresponse()
        missing.read()
        assert missing.status == 404
    assert conn.sock is sock  # never reconnected
    conn.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_aborted_client_does_not_hurt_the_next(tmp_path: Path) -> None:
    big = random.Random(3).randbytes(16 * 1024 * 1024)
    (tmp_path / "big").write_bytes(big)
    with ArtifactServer({"big": Served.file(tmp_path / "big")}) as server:
        fetch(server, "/nope")  # the server's own sockets exist before the count
        before = open_fds()
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(65536)
            # Reset, not a clean close: what a client killed mid-download leaves.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        wait_for(lambda: len([r for r in server.requests if r.path == "/big"]) == 5)
        aborted = [r for r in server.requests if r.path == "/big"]
        assert all(r.status == 200 and r.bytes_sent < len(big) for r in aborted)
        response, body = fetch(server, "/big", Range="bytes=1000-")
        assert (response.status, body) == (206, big[1000:])
        wait_for(lambda: open_fds() <= before)


def test_idle_keep_alive_connections_are_closed(tmp_path: Path, payload: bytes) -> None:
    with ArtifactServer({"x": Served.file(tmp_path / "live.img")}, idle_timeout=0.3) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(10)
            assert sock.recv(1) == b""  # the server hung up on a client that sent nothing
    assert ArtifactServer({}).idle_timeout == serve_http.IDLE_TIMEOUT > 0


def test_fifty_connects_queue_before_any_is_accepted() -> None:
    server = ArtifactServer({})  # bound and listening, not yet accepting
    try:
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=0.5) for _ in range(60)]
        for sock in socks:
            sock.close()
    finally:
        server.close()


def test_many_clients_at_once(server: ArtifactServer, payload: bytes) -> None:
    with ThreadPoolExecutor(max_workers=60) as pool:
        bodies = list(pool.map(lambda _: fetch(server, "/images/live.img")[1], range(60)))
    assert bodies == [payload] * 60


def test_request_log_lines(server: ArtifactServer, lines: list[str]) -> None:
    fetch(server, "/images/live.img", Range="bytes=0-99")
    recorded(server, 1)  # the server logs after it answers: one request at a time keeps the order
    fetch(server, "/nope")
    recorded(server, 2)
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /images/live.img HTTP/1\.1" 206 100',
        lines[0],
    )
    assert lines[1].endswith('"GET /nope HTTP/1.1" 404 10')
    assert [(r.client, r.method, r.path, r.status) for r in recorded(server, 2)] == [
        ("127.0.0.1", "GET", "/images/live.img", 206),
        ("127.0.0.1", "GET", "/nope", 404),
    ]


def test_a_file_whose_size_changed_is_500(tmp_path: Path, payload: bytes, lines: list[str]) -> None:
    served = Served.file(tmp_path / "live.img", etag=ETAG)
    with open(tmp_path / "live.img", "ab") as f:
        f.write(b"more")
    with ArtifactServer({"live.img": served}, log=lines.append) as server:
        response, _ = fetch(server, "/live.img")
        recorded(server, 1)
    assert response.status == 500
    assert any("changed since serving began" in line for line in lines)


def test_serve_forever_in_the_foreground_until_shutdown(payload: bytes, tmp_path: Path) -> None:
    server = ArtifactServer({"x": Served.file(tmp_path / "live.img")}, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        assert fetch(server, "/x")[1] == payload
    finally:
        server.shutdown()
        thread.join(10)
        server.close()
    assert not thread.is_alive()


def test_ipv6(payload: bytes, tmp_path: Path) -> None:
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.fail("this machine has no IPv6 loopback")  # our hosts have one; say so if not
    with ArtifactServer({"x": Served.file(tmp_path / "live.img")}, host="::1") as server:
        conn = http.client.HTTPConnection("::1", server.port, timeout=10)
        conn.request("GET", "/x")
        assert conn.getresponse().read() == payload
        conn.close()


def test_a_port_in_use_is_a_host_error() -> None:
    with ArtifactServer({}) as first:
        with pytest.raises(HostError, match="choose another port"):
            ArtifactServer({}, port=first.port)


def test_bad_hosts_are_invalid_options() -> None:
    with pytest.raises(InvalidOptions):
        ArtifactServer({}, host="localhost")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:8080", ("0.0.0.0", 8080)), ("[::]:80", ("::", 80)), ("[fe80::1]:0", ("fe80::1", 0))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:80", "1.2.3.4:", "1.2.3.4:99999", "::1:80", "[::1]", ":80"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(InvalidOptions, match="ADDR:PORT"):
        parse_address(text)


def test_parse_range_table() -> None:
    assert parse_range("bytes=0-9", 5) == (0, 4)
    assert parse_range("BYTES = 1-2", 5) == (1, 2)
    assert parse_range("bytes=0-", 0) is False
    assert parse_range("bytes=-3", 0) is False
    assert parse_range("bytes=1-2,3-4", 5) is None
