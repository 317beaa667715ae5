"""`liveimg serve` as a command: its options, its address, and HTTP serving as any user."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from liveimg.errors import InvalidOptions
from liveimg.serve.dnsmasq import DhcpMode, Network
from liveimg.serve.service import LOCK_NAME, PRIVATE_PREFIX, ServeOptions, base_url, parse_http, remove_abandoned
from tests.serve.fakebuild import KVER, fake_build
from tests.support import free_port, need, need_file, need_root, unprivileged_user

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:8080", ("192.0.2.1", 8080)),
        (":8081", ("0.0.0.0", 8081)),
        ("8082", ("0.0.0.0", 8082)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_http_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_http(text) == expected


@pytest.mark.parametrize("text", ["host.example:80", "192.0.2.1", "192.0.2.1:0", "192.0.2.1:70000", "::1:80", ""])
def test_bad_http_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidOptions):
        parse_http(text)


def test_the_url_machines_use() -> None:
    assert base_url(ServeOptions(http="192.0.2.1:8080"), None) == "http://192.0.2.1:8080"
    assert base_url(ServeOptions(http="[2001:db8::1]:80"), None) == "http://[2001:db8::1]:80"
    assert base_url(ServeOptions(http=":8080", url="http://boot.example/live/"), None) == "http://boot.example/live"
    # every address: which one do the machines use?  The interface's, or say it.
    with pytest.raises(InvalidOptions, match="--interface"):
        base_url(ServeOptions(http=":8080"), None)
    with pytest.raises(InvalidOptions, match="--interface"):
        ServeOptions(dhcp=DhcpMode.FULL)
    assert ServeOptions(dhcp=DhcpMode.PROXY, interface="br0").tftp  # PXE needs TFTP
    # by default every address, port 8080; the machines use the interface's address
    network = Network("br0", ipaddress.IPv4Interface("10.77.0.1/24"))
    assert ServeOptions().http == "0.0.0.0:8080"
    assert base_url(ServeOptions(), network) == "http://10.77.0.1:8080"


def test_serving_http_needs_no_root_and_a_signal_stops_it_cleanly(tmp_path: Path) -> None:
    """A throw-away user with no capability serves its own build over HTTP; SIGTERM ends it with 0."""
    need_root()
    need("setpriv")
    need_file("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    with unprivileged_user() as user:
        out = fake_build(tmp_path / "out")
        theirs = user.home / "out"
        shutil.copytree(out, theirs)
        for path in [theirs, *theirs.rglob("*")]:
            os.chown(path, user.uid, user.gid)
        port = free_port()
        argv = [sys.executable, "-m", "liveimg", "--progress", "json", "serve", str(theirs), "--http",
                f"127.0.0.1:{port}"]  # fmt: skip
        proc = subprocess.Popen(user.command(argv), env=user.env(), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert proc.stdout is not None
            events = [json.loads(proc.stdout.readline())]
            while events[-1]["event"] != "serving":  # the check of the build's files comes first
                events.append(json.loads(proc.stdout.readline()))
            event = events[-1]
            assert ("check", "end") in [(e.get("stage"), e["event"]) for e in events]
            assert event["event"] == "serving" and event["url"] == f"http://127.0.0.1:{port}/"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/out/vmlinuz-{KVER}", timeout=30) as answer:
                assert answer.read() == (theirs / f"vmlinuz-{KVER}").read_bytes()
                sha = json.loads((theirs / "manifest.json").read_text())["artifacts"][f"vmlinuz-{KVER}"]["sha256"]
                assert answer.headers["ETag"] == f'"{sha}"'  # the manifest's sha256
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            requests = [json.loads(line) for line in proc.stdout]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert any(f'"GET /out/vmlinuz-{KVER} HTTP/1.1" 200' in e.get("line", "") for e in requests), requests
        assert not user.wait_for_no_processes()
        # on a terminal or piped, the request log is on stderr, one line each
        plain = subprocess.Popen(user.command([*argv[:3], *argv[5:]]), env=user.env(), cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert plain.stdout is not None and plain.stdout.readline().startswith("liveimg serve: http://")
            assert plain.stderr is not None
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/boot.ipxe", timeout=30) as answer:
                assert answer.read().startswith(b"#!ipxe")
            plain.send_signal(signal.SIGINT)
            assert plain.wait(30) == 0
            assert plain.stderr is not None and "http: 127.0.0.1 - - [" in plain.stderr.read()
        finally:
            if plain.poll() is None:
                plain.kill()
                plain.wait()
        # TFTP and DHCP need root: one line that says so
        done = user.liveimg("serve", theirs, "--tftp", "--http", f"127.0.0.1:{port}", timeout=60)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "needs root" in done.stderr, done.stderr


def test_print_config_needs_a_tree_and_tree_needs_print_config(tmp_path: Path) -> None:
    out = fake_build(tmp_path / "out")
    for extra in (["--print-config", "nginx"], ["--tree", str(tmp_path / "t")]):
        done = subprocess.run([sys.executable, "-m", "liveimg", "serve", str(out), "--http", "127.0.0.1:8080", *extra],
                              cwd=REPO, capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
        assert done.returncode == 1 and done.stderr.startswith("liveimg: error: --"), done.stderr


def test_remove_abandoned_takes_only_unlocked_private_directories_of_this_user(tmp_path: Path) -> None:
    """A killed serve's directory (its lock free) goes; a running one's, a symlink, a directory
    without its lock, a lock that is not a file and other names stay."""

    def private(name: str, lock: bool = True) -> Path:
        path = tmp_path / f"{PRIVATE_PREFIX}{name}"
        (path / "tftp").mkdir(parents=True)
        (path / "tftp" / "pxelinux.0").write_bytes(b"x")
        if lock:
            (path / LOCK_NAME).write_text("")
        return path

    dead, running, unlocked = private("dead"), private("running"), private("new", lock=False)
    held = os.open(running / LOCK_NAME, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # another open file: as another serve's process would hold it
    odd = private("odd", lock=False)
    (odd / LOCK_NAME).mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / LOCK_NAME).write_text("")
    (tmp_path / f"{PRIVATE_PREFIX}link").symlink_to(elsewhere)
    other = tmp_path / "other-dir"
    other.mkdir()
    (other / LOCK_NAME).write_text("")
    try:
        assert remove_abandoned(tmp_path) == [dead]
    finally:
        os.close(held)
    assert not dead.exists()
    assert running.exists() and unlocked.exists() and odd.exists() and elsewhere.exists() and other.exists()
    assert remove_abandoned(tmp_path) == [running]  # its serve gone now
