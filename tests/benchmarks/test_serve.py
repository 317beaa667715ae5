"""The serve benchmark's pieces: nginx's configuration, peak RSS over a process tree, the summary, the entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from benchmarks import serve
from tests import support


def test_nginx_config_keeps_everything_in_its_prefix(tmp_path: Path) -> None:
    text = serve.nginx_config(tmp_path / "p", tmp_path / "www", 8123, 2)
    assert "sendfile on;" in text and "daemon off;" in text and "worker_processes 2;" in text
    assert "listen 127.0.0.1:8123;" in text and f"root {tmp_path / 'www'};" in text
    for line in text.splitlines():
        if line.strip().split(" ")[0] in ("pid", "error_log", "access_log") or "_temp_path" in line:
            assert str(tmp_path / "p") in line, line
    assert "user root;" not in text and "user root;" in serve.nginx_config(tmp_path, tmp_path, 1, as_root=True)


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    support.need("nginx")
    nginx = shutil.which("nginx")
    assert nginx is not None
    (tmp_path / "www").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(serve.nginx_config(tmp_path, tmp_path / "www", serve.free_port(), as_root=True))
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_peak_rss_sums_a_process_and_its_children(tmp_path: Path) -> None:
    for pid, hwm in ((10, 3000), (11, 1000), (12, 24)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "status").write_text(f"Name:\tx\nVmHWM:\t    {hwm} kB\nVmRSS:\t  1 kB\n")
    (tmp_path / "10" / "task" / "10").mkdir(parents=True)
    (tmp_path / "10" / "task" / "10" / "children").write_text("11 12 99 ")
    assert serve.peak_rss_kib(10, tmp_path) == 4024
    assert serve.peak_rss_kib(11, tmp_path) == 1000


def test_cpu_seconds_sums_a_process_and_its_children(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    for pid, (user, system) in ((10, (300, 100)), (11, (50, 50))):
        (tmp_path / str(pid)).mkdir()
        rest = " ".join(["0"] * 10) + f" {user} {system} 0 0 20 0 1"
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (nginx: a (b)) S {rest}\n")
    (tmp_path / "10" / "task" / "10").mkdir(parents=True)
    (tmp_path / "10" / "task" / "10" / "children").write_text("11")
    assert serve.cpu_seconds(10, tmp_path) == 500 / tick
    assert serve.cpu_seconds(os.getpid()) > 0


def test_summary_medians_and_ratio() -> None:
    def one(rate: float, done: int = 50) -> dict[str, float | int]:
        return {"mib_per_s": rate, "completed": done, "clients": 50, "corrupt": 0}

    rounds = [{"liveimg": one(90), "nginx": one(100)}, {"nginx": one(120), "liveimg": one(80)},
              {"liveimg": one(100), "nginx": one(110, done=49)}]  # fmt: skip
    summary = serve.summarise(rounds)
    assert summary["liveimg"]["median_mib_per_s"] == 90 and summary["nginx"]["median_mib_per_s"] == 110
    assert summary["ratio_liveimg_to_nginx"] == round(90 / 110, 3)
    assert summary["liveimg"]["all_completed"] and not summary["nginx"]["all_completed"]


def test_the_liveimg_entry_serves_the_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"live bytes")
    port = serve.free_port()
    argv = [sys.executable, "-m", "benchmarks.serve", "--serve-one", str(tmp_path / "f"), "--port", str(port),
            "--etag", "abc", "--log", str(tmp_path / "log")]  # fmt: skip
    with serve.running(argv, port, tmp_path / "out") as process:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{serve.URL_PATH}") as response:
            assert (response.read(), response.headers["ETag"]) == (b"live bytes", '"abc"')
        assert serve.peak_rss_kib(process.pid) > 0
        deadline = time.monotonic() + 10  # the server logs a request after answering it
        while '"GET /live.img HTTP/1.1" 200 10' not in (tmp_path / "log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.05)


def test_with_an_outdir_liveimg_serve_itself_is_measured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--outdir``: liveimg's side is the `liveimg serve` command, the file its live file at its URL."""
    support.need("nginx")
    support.need_file("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    from tests.serve.fakebuild import fake_build

    out = fake_build(tmp_path / "out", live_bytes=8 << 20)
    saved: dict[str, Any] = {}
    monkeypatch.setattr(serve.harness, "save", lambda name, data: saved.update(data) or tmp_path / "x.json")
    assert serve.main(["--outdir", str(out), "--rounds", "1", "--clients", "4", "--processes", "1"]) == 0
    assert saved["file"]["url_path"] == "/out/live-rootfs.squashfs.img"
    assert " -m liveimg --progress none serve " in saved["liveimg_command"]
    liveimg = saved["rounds"][0]["liveimg"]
    assert liveimg["completed"] == 4 and liveimg["corrupt"] == 0
