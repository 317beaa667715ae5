"""liveimg's livenetroot and no-network hook, run for real with sh, curl, tee and sha256sum
against a local HTTP server, in a directory standing in for the initramfs's /."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveimg.console import DEFAULT_FAILURES
from liveimg.errors import InvalidOptions
from liveimg.liveverify import LIVENETROOT, MESSAGES, TIMEOUT_HOOK, verify_line
from liveimg.ramfloor import RAM_FILE, RamFloor
from tests.support import need

IMAGE = bytes(range(256)) * 4096  # 1 MiB, standing in for the live file
SHA = hashlib.sha256(IMAGE).hexdigest()
#: The initramfs's sh is bash on Debian and Fedora; the host's may be dash: the scripts must work in both.
SHELLS = pytest.mark.parametrize("shell", ["sh", "bash"])
FLIPPED = IMAGE[:1000] + bytes([IMAGE[1000] ^ 1]) + IMAGE[1001:]

# A dracut-lib.sh with what the scripts use: getarg and getargbool over $P/proc/cmdline.
DRACUT_LIB = r"""
getarg() {
    for _a in $(cat "$LIVEIMG_PREFIX/proc/cmdline"); do
        case "$_a" in "$1"*) echo "${_a#"$1"}"; return 0 ;; esac
    done
    return 1
}
getargbool() {
    _v=$(getarg "$2=") || { [ "$1" != 0 ]; return; }
    [ "$_v" != 0 ]
}
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/good``, ``/flipped``, ``/truncated`` (a shorter file, served whole), ``/cut`` (the full
    Content-Length, then the connection closed halfway), ``/flaky-*`` (503 twice for each path, then good),
    ``/down`` (503 always); anything else 404."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        name = self.path.strip("/")
        if name.startswith("flaky"):
            name = "flaky" if self.server.hits.count(self.path) > 2 else "down"
        if name == "down":
            self.send_error(503)
            return
        body = {"good": IMAGE, "flaky": IMAGE, "flipped": FLIPPED, "truncated": IMAGE[:300000], "cut": IMAGE}.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name == "cut":
            self.wfile.write(body[:400000])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hits: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.hits = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@dataclass
class Run:
    root: Path
    returncode: int
    stderr: str

    @property
    def kmsg(self) -> list[str]:
        return (self.root / "dev/kmsg").read_text().splitlines()

    @property
    def failures(self) -> list[str]:
        return [line for line in self.kmsg if line.startswith("<2>")]

    @property
    def halted(self) -> bool:
        return (self.root / "halted").exists()

    @property
    def handed(self) -> str | None:
        path = self.root / "handed"
        return path.read_text().strip() if path.exists() else None


def _shell(name: str) -> str:
    need(name)
    found = shutil.which(name)
    assert found is not None
    return found


def _fake_root(
    tmp_path: Path, cmdline: str, verify: str | None, ram: str | None = None, memtotal_kib: int | None = None
) -> tuple[Path, dict[str, str]]:
    need("curl", "sha256sum", "tee")
    root = tmp_path / "root"
    for d in ("lib", "dev", "proc", "tmp", "sbin", "etc/liveimg", "bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "lib/dracut-lib.sh").write_text(DRACUT_LIB)
    (root / "dev/kmsg").write_text("")
    (root / "proc/cmdline").write_text(cmdline + "\n")
    (root / "proc/uptime").write_text("131.52 250.01\n")
    if verify is not None:
        (root / "etc/liveimg/live-image").write_text(verify)
    if ram is not None:
        (root / RAM_FILE.lstrip("/")).write_text(ram)
    if memtotal_kib is not None:
        # As the kernel writes it; MemTotal is not always the first line's key everywhere.
        (root / "proc/meminfo").write_text(
            f"MemTotal:       {memtotal_kib} kB\nMemFree:          123456 kB\nMemAvailable:     234567 kB\n"
        )
    handed = root / "sbin/dmsquash-live-root"
    handed.write_text(f'#!/bin/sh\necho "$@" > {root}/handed\n')
    handed.chmod(0o755)
    # Only the tools the initramfs has, and fake halt and poweroff: never the host's own.
    for tool in ("curl", "sha256sum", "tee", "ls", "cat", "mkdir", "rm", "sleep"):
        found = shutil.which(tool)
        assert found is not None, tool
        if not (root / "bin" / tool).is_symlink():
            os.symlink(found, root / "bin" / tool)
    for tool in ("halt", "poweroff"):
        fake = root / "bin" / tool
        fake.write_text(f'#!/bin/sh\necho "{tool} $*" >> {root}/halted\n')
        fake.chmod(0o755)
    env = {"PATH": str(root / "bin"), "LIVEIMG_PREFIX": str(root), "LIVEIMG_PAUSE": "1"}
    return root, env


def _livenetroot(
    tmp_path: Path,
    url: str,
    verify: str | None = verify_line(len(IMAGE), SHA),
    shell: str = "sh",
    *,
    ram: str | None = None,
    memtotal_kib: int | None = None,
    cmdline: str = "",
) -> Run:
    root, env = _fake_root(tmp_path, f"root=live:{url} {cmdline}".strip(), verify, ram, memtotal_kib)
    script = tmp_path / "livenetroot"
    script.write_text(LIVENETROOT)
    proc = subprocess.run(
        [_shell(shell), str(script), "eth0", f"livenet:{url}"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(root, proc.returncode, proc.stderr)


def _one_failure(run: Run, kind: str) -> re.Match[str]:
    assert run.halted, run.kmsg
    assert run.handed is None
    assert len(run.failures) == 1, run.kmsg
    line = run.failures[0].removeprefix("<2>")
    match = re.fullmatch(MESSAGES[kind] + ".*", line)
    assert match, line
    for other, pattern in MESSAGES.items():
        assert other == kind or not re.match(pattern, line), (other, line)
    # boot-test ends the boot at this line, for this reason; the other lines end nothing.
    console_line = f"[   42.123456] {line}"
    assert [p.name for p in DEFAULT_FAILURES if p.search(console_line)][:1] == ["image-verify"]
    for other in run.kmsg:
        if not other.startswith("<2>"):
            assert not any(p.search(other[3:]) for p in DEFAULT_FAILURES), other
    return match


@SHELLS
def test_a_good_download_is_checked_and_handed_to_dmsquash(tmp_path: Path, server: _Server, shell: str) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    run = _livenetroot(tmp_path, url, shell=shell)
    assert run.returncode == 0, (run.kmsg, run.stderr)
    assert not run.halted and not run.failures
    image = run.root / "tmp/liveimg/live.img"
    assert run.handed == str(image)
    assert image.read_bytes() == IMAGE
    assert f"<5>liveimg: {url} checked: {len(IMAGE)} bytes, sha256 {SHA}" in run.kmsg


def test_a_second_interface_does_not_fetch_again(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    first = _livenetroot(tmp_path, url)
    assert first.handed is not None
    (first.root / "handed").unlink()
    script = tmp_path / "livenetroot"
    env = {"PATH": str(first.root / "bin"), "LIVEIMG_PREFIX": str(first.root)}
    proc = subprocess.run([_shell("sh"), str(script), "eth1", f"livenet:{url}"], check=False, env=env, timeout=60)
    assert proc.returncode == 0
    assert not (first.root / "handed").exists()


@SHELLS
def test_404_names_the_url_at_once(tmp_path: Path, server: _Server, shell: str) -> None:
    url = f"http://127.0.0.1:{server.server_port}/missing.squashfs"
    before = server.hits.count("/missing.squashfs")
    match = _one_failure(_livenetroot(tmp_path, url, shell=shell), "not-found")
    assert match.groups() == ("404", url)
    assert server.hits.count("/missing.squashfs") == before + 1  # no retry: it will not appear


@SHELLS
def test_a_file_shorter_than_this_build_s_is_short(tmp_path: Path, server: _Server, shell: str) -> None:
    url = f"http://127.0.0.1:{server.server_port}/truncated"
    match = _one_failure(_livenetroot(tmp_path, url, shell=shell), "short")
    assert match.groups() == (url, "300000", str(len(IMAGE)))


def test_a_transfer_cut_short_is_retried_then_short(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/cut"
    before = server.hits.count("/cut")
    run = _livenetroot(tmp_path, url)
    match = _one_failure(run, "short")
    assert match.groups() == (url, "400000", str(len(IMAGE)))
    assert server.hits.count("/cut") == before + 4


@SHELLS
def test_a_flipped_byte_is_another_build(tmp_path: Path, server: _Server, shell: str) -> None:
    url = f"http://127.0.0.1:{server.server_port}/flipped"
    match = _one_failure(_livenetroot(tmp_path, url, shell=shell), "mismatch")
    assert match.groups() == (url, SHA, hashlib.sha256(FLIPPED).hexdigest())


@SHELLS
def test_503_is_retried_until_it_passes(tmp_path: Path, server: _Server, shell: str) -> None:
    url = f"http://127.0.0.1:{server.server_port}/flaky-{shell}"  # 503 twice for each path
    run = _livenetroot(tmp_path, url, shell=shell)
    assert run.returncode == 0, run.kmsg
    assert not run.failures and not run.halted
    assert server.hits.count(f"/flaky-{shell}") == 3
    assert sum("retrying" in line for line in run.kmsg) == 2
    assert (run.root / "tmp/liveimg/live.img").read_bytes() == IMAGE


def test_503_for_good_ends_after_bounded_tries(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/down"
    before = server.hits.count("/down")
    match = _one_failure(_livenetroot(tmp_path, url), "not-found")
    assert match.groups() == ("503", url)
    assert server.hits.count("/down") == before + 4


def test_no_server_at_all_cannot_download(tmp_path: Path) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as closed:
        port = closed.server_port  # bound, then closed: nothing listens there
    url = f"http://127.0.0.1:{port}/live.squashfs"
    match = _one_failure(_livenetroot(tmp_path, url), "unreachable")
    assert match.group(1) == url


def test_no_room_for_the_image_says_so(tmp_path: Path, server: _Server) -> None:
    root, _ = _fake_root(tmp_path, "", verify_line(len(IMAGE), SHA))
    (root / "tmp/liveimg/live.img").mkdir(parents=True)  # tee cannot write it
    url = f"http://127.0.0.1:{server.server_port}/good"
    _one_failure(_livenetroot(tmp_path, url), "no-room")


def test_without_the_verify_file_a_different_file_passes(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/flipped"
    run = _livenetroot(tmp_path, url, verify=None)
    assert run.returncode == 0 and not run.failures
    assert (run.root / "tmp/liveimg/live.img").read_bytes() == FLIPPED
    # The download's own failures are still said in one line.
    assert _one_failure(_livenetroot(tmp_path / "b", url + "-missing", verify=None), "not-found")


def test_a_damaged_verify_file_stops(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    run = _livenetroot(tmp_path, url, verify=f"12x {SHA}\n")
    assert run.halted and run.handed is None
    assert "live-image is damaged" in run.failures[0]


def _timeout_hook(tmp_path: Path, cmdline: str, *, started: bool, shell: str = "sh") -> Run:
    root, env = _fake_root(tmp_path, cmdline, None)
    if started:
        (root / "tmp/liveimg-fetch.started").write_text("")
    hook = tmp_path / "hook.sh"
    hook.write_text(TIMEOUT_HOOK)
    # As dracut's initqueue: dracut-lib loaded, the hook sourced, the loop going on after it.
    proc = subprocess.run(
        [_shell(shell), "-c", f'. "$LIVEIMG_PREFIX/lib/dracut-lib.sh"; . {hook}; echo after'],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout == "after\n", proc.stderr
    return Run(root, proc.returncode, proc.stderr)


@SHELLS
def test_network_never_up_stops_with_the_url(tmp_path: Path, shell: str) -> None:
    url = "http://10.0.2.100:8080/live.squashfs"
    run = _timeout_hook(tmp_path, f"console=ttyS0 root=live:{url} rd.live.image", started=False, shell=shell)
    _one_failure(run, "no-network")
    assert f"no interface was online after 131 s to fetch {url}" in run.failures[0]


def test_network_up_or_other_roots_leave_the_timeout_alone(tmp_path: Path) -> None:
    url = "http://10.0.2.100:8080/live.squashfs"
    assert not _timeout_hook(tmp_path / "a", f"root=live:{url}", started=True).kmsg
    assert not _timeout_hook(tmp_path / "b", "root=live:CDLABEL=LIVE", started=False).kmsg


def test_verify_line_takes_only_a_size_and_a_hex_digest() -> None:
    assert verify_line(5, "a" * 64) == f"5 {'a' * 64}\n"
    for size, sha in ((0, "a" * 64), (5, "A" * 64), (5, "a" * 63), (5, "a" * 63 + "\n"), (True, "a" * 64)):
        with pytest.raises(InvalidOptions):
            verify_line(size, sha)


# The RAM floor (liveimg.ramfloor): compared with MemTotal before anything is downloaded.
# Needs 550 MiB; with rd.live.ram 1520: five times (300 + 4) MiB, for systemd's /run is a fifth of the RAM.
FLOOR = RamFloor(live_bytes=300 << 20, initramfs_bytes=150 << 20, base_mib=100)


@SHELLS
def test_below_the_ram_floor_stops_before_downloading(tmp_path: Path, server: _Server, shell: str) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good-ram-{shell}"
    run = _livenetroot(tmp_path, url, shell=shell, ram=FLOOR.line(), memtotal_kib=549 * 1024 + 1023)
    match = _one_failure(run, "ram")
    assert match.groups() == ("550", "549")
    assert run.failures == ["<2>liveimg: this image needs 550 MiB of RAM, this machine has 549 MiB"]
    assert f"/good-ram-{shell}" not in server.hits  # stopped before the download
    assert not (run.root / "tmp/liveimg/live.img").exists()


def test_at_the_ram_floor_the_download_goes_on(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    run = _livenetroot(tmp_path, url, ram=FLOOR.line(), memtotal_kib=550 * 1024)
    assert run.returncode == 0 and not run.failures, run.kmsg
    assert run.handed is not None
    assert "<5>liveimg: RAM: this machine has 550 MiB (MemTotal), this image needs 550 MiB" in run.kmsg


@SHELLS
def test_rd_live_ram_needs_its_own_floor(tmp_path: Path, server: _Server, shell: str) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    ok = _livenetroot(tmp_path / "a", url, shell=shell, ram=FLOOR.line(), memtotal_kib=800 << 10)
    assert ok.handed is not None, ok.kmsg
    run = _livenetroot(tmp_path / "b", url, shell=shell, ram=FLOOR.line(), memtotal_kib=800 << 10,
                       cmdline="rd.live.ram=1")  # fmt: skip
    assert _one_failure(run, "ram").groups() == ("1520", "800")
    enough = _livenetroot(tmp_path / "c", url, shell=shell, ram=FLOOR.line(), memtotal_kib=1520 << 10,
                          cmdline="rd.live.ram=1")  # fmt: skip
    assert enough.handed is not None and not enough.failures, enough.kmsg


def test_liveimg_ramcheck_0_skips_the_comparison(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    run = _livenetroot(tmp_path, url, ram=FLOOR.line(), memtotal_kib=100 << 10, cmdline="liveimg.ramcheck=0")
    assert run.handed is not None and not run.failures, run.kmsg
    # Said all the same (the RAM-floor benchmark reads it).
    assert "<5>liveimg: RAM: this machine has 100 MiB (MemTotal), this image needs 550 MiB" in run.kmsg


def test_a_damaged_ram_file_stops(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    run = _livenetroot(tmp_path, url, ram="55x 300\n", memtotal_kib=800 << 10)
    assert run.halted and run.handed is None
    assert len(run.failures) == 1 and "ram is damaged" in run.failures[0]


def test_no_ram_file_no_comparison(tmp_path: Path, server: _Server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/good"
    run = _livenetroot(tmp_path, url, memtotal_kib=64 << 10)
    assert run.handed is not None and not run.failures, run.kmsg


def test_the_floor_is_the_live_file_the_initramfs_and_the_base() -> None:
    floor = RamFloor(live_bytes=(300 << 20) + 1, initramfs_bytes=150 << 20, base_mib=100)
    assert (floor.live_mib, floor.initramfs_mib, floor.need_mib, floor.live_ram_mib) == (301, 150, 551, 5 * 305)
    assert floor.line() == "551 1525\n"
    # A small live file: rd.live.ram's floor is the second copy, not /run's share.
    small = RamFloor(live_bytes=10 << 20, initramfs_bytes=150 << 20, base_mib=100)
    assert (small.need_mib, small.live_ram_mib) == (260, 270)
    assert floor.manifest()["need_mib"] == 551 and floor.manifest()["measure"] == "MemTotal"
    for bad in (-1, True, 1.5):
        with pytest.raises(InvalidOptions):
            RamFloor(live_bytes=bad, initramfs_bytes=0)  # type: ignore[arg-type]
