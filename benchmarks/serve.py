"""liveimg's HTTP server against nginx, under the same network-boot load, on this machine.

    python -m benchmarks.serve [--outdir OUTDIR | --file LIVE_FILE | --size-mib 256] [--rounds 3] [--clients 50]

Both servers serve one file on loopback, each as its own process.  With ``--outdir`` (a build),
liveimg's side is ``liveimg serve OUTDIR`` as a user runs it and the file is the build's live
file, at the URL ``liveimg serve`` gives it; else liveimg's
:class:`~liveimg.serve.http.ArtifactServer` serves ``--file`` (or a random file of
``--size-mib``) alone (``python -m benchmarks.serve --serve-one FILE``, the entry below).
nginx (``sendfile on``, ``worker_processes`` 2) is started with a generated configuration in a
temporary prefix that holds its pid file and logs.  Each round loads both,
one after the other, the order alternating, with :func:`benchmarks.serveload.run_load`
(``--clients`` downloaders, random ranges and resumes, every byte's sha256 checked).  The result
(median MiB/s of verified bytes, the ratio liveimg/nginx, each server's peak RSS: VmHWM, summed
over nginx's master and workers, and its CPU seconds per GiB served) goes to ``results/serve-<timestamp>.json`` and
``results/serve.json``.  Needs ``nginx`` on PATH (Debian: nginx-light).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.serveload import Load, MiB, run_load
from liveimg.serve.catalog import build_name
from tests.support import free_port

#: The URL path both servers serve the file at.
URL_PATH = "/live.img"


def nginx_config(prefix: Path, docroot: Path, port: int, workers: int = 2, *, as_root: bool = False) -> str:
    """A minimal nginx configuration: one static ``docroot`` on 127.0.0.1:``port`` with sendfile,
    everything it writes (pid, logs, temp files) under ``prefix``, in the foreground."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # nginx drops its workers to nobody when started as root; the file may not be theirs to read.
    user = "user root;\n" if as_root else ""
    return f"""daemon off;
master_process on;
worker_processes {workers};
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"};
{user}events {{ worker_connections 1024; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60;
    keepalive_requests 100000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {docroot};
    }}
}}
"""


def _tree(pid: int, proc: Path) -> list[int]:
    """``pid`` and its children (nginx's master and workers)."""
    try:
        return [pid, *(int(p) for p in (proc / str(pid) / "task" / str(pid) / "children").read_text().split())]
    except OSError:
        return [pid]


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """CPU time (user + system) used so far by ``pid`` and its children, in seconds."""
    ticks = 0
    for one in _tree(pid, proc):
        try:
            fields = (proc / str(one) / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int, proc: Path = Path("/proc")) -> int:
    """VmHWM of ``pid`` plus that of its children (nginx's workers), in KiB."""
    total = 0
    for one in _tree(pid, proc):
        try:
            for line in (proc / str(one) / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def running(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until it listens on ``port``; stop it at the end."""
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per server over ``rounds`` (each ``{server: load summary}``) and liveimg/nginx."""
    out: dict[str, Any] = {}
    for name in ("liveimg", "nginx"):
        rates = [r[name]["mib_per_s"] for r in rounds if name in r]
        out[name] = {
            "median_mib_per_s": round(statistics.median(rates), 1) if rates else None,
            "mib_per_s": rates,
            "all_completed": all(r[name]["completed"] == r[name]["clients"] for r in rounds if name in r),
            "corrupt": sum(r[name]["corrupt"] for r in rounds if name in r),
        }
        cpu = [r[name]["server_cpu_s_per_gib"] for r in rounds if "server_cpu_s_per_gib" in r.get(name, {})]
        out[name]["median_server_cpu_s_per_gib"] = statistics.median(cpu) if cpu else None
    ratio = harness.ratio(out["liveimg"]["median_mib_per_s"], out["nginx"]["median_mib_per_s"])
    out["ratio_liveimg_to_nginx"] = round(ratio, 3) if ratio is not None else None
    return out


def serve_one(path: Path, port: int, etag: str | None, log: Path | None) -> int:
    """The liveimg side's process: serve ``path`` at :data:`URL_PATH` until killed."""
    from liveimg.serve.http import ArtifactServer, Served

    out = open(log, "a", buffering=1) if log else None  # noqa: SIM115 -- lives as long as the process
    server = ArtifactServer(
        {URL_PATH[1:]: Served.file(path, etag=etag)},
        port=port,
        log=(lambda line: print(line, file=out)) if out else None,
    )
    server.serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.splitlines()[0])
    p.add_argument("--outdir", type=Path, help="a build: `liveimg serve OUTDIR` serves its live file")
    p.add_argument("--file", type=Path, help="the file to serve (default: a random one of --size-mib)")
    p.add_argument("--size-mib", type=int, default=256, help="size of the generated file (default 256)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each loading both servers (default 3)")
    p.add_argument("--clients", type=int, default=50, help="concurrent downloaders (default 50)")
    p.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--workers", type=int, default=2, help="nginx worker processes (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--name", default="serve", help="the result file's name (default serve)")
    p.add_argument("--serve-one", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--etag", help=argparse.SUPPRESS)
    p.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(args_list)
    if args.serve_one is not None:
        return serve_one(args.serve_one, args.port, args.etag, args.log)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None:
        p.error("nginx is not installed (Debian: apt-get install nginx-light)")
    record: dict[str, Any] = harness.provenance(args.name)
    record["command"] = shlex.join(["python", "-m", "benchmarks.serve", *args_list])
    record["niceness"] = os.nice(0)
    record["load"] = {"before": harness.loadavg()}
    with tempfile.TemporaryDirectory(prefix="liveimg-bench-serve-") as tmp:
        work = Path(tmp)
        url_path = URL_PATH
        if args.outdir is not None:
            outdir = args.outdir.resolve()
            squashfs = json.loads((outdir / "manifest.json").read_text())["boot"]["squashfs"]
            live = outdir / squashfs
            url_path = f"/{build_name(outdir, [])}/{squashfs}"
        elif args.file is not None:
            live = args.file.resolve()
        else:
            live = work / "live.img"
            with open(live, "wb") as f:
                for _ in range(args.size_mib):
                    f.write(os.urandom(MiB))
        with open(live, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        size = live.stat().st_size
        where = str(live) if args.outdir or args.file else f"random, {args.size_mib} MiB"
        record["file"] = {"path": where, "bytes": size, "url_path": url_path}
        docroot = work / "www"
        docroot.mkdir()
        (docroot / url_path[1:]).parent.mkdir(parents=True, exist_ok=True)
        (docroot / url_path[1:]).symlink_to(live)
        prefix = work / "nginx"
        prefix.mkdir()
        ports = {"liveimg": free_port(), "nginx": free_port()}
        config = prefix / "nginx.conf"
        config.write_text(nginx_config(prefix, docroot, ports["nginx"], args.workers, as_root=os.geteuid() == 0))
        ours_argv = [
            sys.executable,
            "-m",
            "benchmarks.serve",
            "--serve-one",
            str(live),
            "--port",
            str(ports["liveimg"]),
            "--etag",
            sha,
            "--log",
            str(work / "liveimg-access.log"),
        ]
        if args.outdir is not None:  # the whole command, its request log to its stderr (the .out file)
            ours_argv = [
                sys.executable,
                "-m",
                "liveimg",
                "--progress",
                "none",
                "serve",
                str(args.outdir.resolve()),
                "--http",
                f"127.0.0.1:{ports['liveimg']}",
            ]
        record["liveimg_command"] = shlex.join(ours_argv)
        argvs = {
            "liveimg": ours_argv,
            "nginx": [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config)],
        }  # fmt: skip
        record["nginx"] = subprocess.run([nginx, "-v"], check=False, capture_output=True, text=True).stderr.strip()
        record["nginx_config"] = config.read_text()
        rounds: list[dict[str, Any]] = []
        with (
            running(argvs["liveimg"], ports["liveimg"], work / "liveimg.out") as ours,
            running(argvs["nginx"], ports["nginx"], work / "nginx.out") as theirs,
        ):
            pids = {"liveimg": ours.pid, "nginx": theirs.pid}
            for number in range(args.rounds):
                order = ["liveimg", "nginx"] if number % 2 == 0 else ["nginx", "liveimg"]
                one: dict[str, Any] = {}
                for name in order:
                    load = Load("127.0.0.1", ports[name], url_path, size, sha, clients=args.clients,
                                processes=args.processes, seed=args.seed + number)  # fmt: skip
                    cpu = cpu_seconds(pids[name])
                    one[name] = run_load(load).summary()
                    # The clients are most of the work on a small machine: the server's own CPU per
                    # GiB says how close it is to its own limit.
                    spent = cpu_seconds(pids[name]) - cpu
                    one[name]["server_cpu_s"] = round(spent, 2)
                    one[name]["server_cpu_s_per_gib"] = round(spent / (one[name]["verified_mib"] / 1024), 3)
                    print(f"round {number + 1} {name}: {one[name]['mib_per_s']} MiB/s, "
                          f"{one[name]['completed']}/{args.clients} complete, {one[name]['corrupt']} corrupt",
                          flush=True)  # fmt: skip
                rounds.append(one)
            peaks = {name: round(peak_rss_kib(pid) / 1024, 1) for name, pid in pids.items()}
    record["rounds"] = rounds
    record["summary"] = summarise(rounds)
    for name, peak in peaks.items():
        record["summary"][name]["peak_rss_mib"] = peak
    record["load"]["after"] = harness.loadavg()
    summary = record["summary"]
    print(f"liveimg {summary['liveimg']['median_mib_per_s']} MiB/s ({peaks['liveimg']} MiB peak RSS), "
          f"nginx {summary['nginx']['median_mib_per_s']} MiB/s ({peaks['nginx']} MiB), CPU s/GiB "
          f"{summary['liveimg']['median_server_cpu_s_per_gib']} : {summary['nginx']['median_server_cpu_s_per_gib']}, "
          f"ratio {summary['ratio_liveimg_to_nginx']}", flush=True)  # fmt: skip
    print(f"wrote {harness.save(args.name, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
