"""What every benchmark shares: the machine, the commit, measured runs, fits and result files.

A *measured run* (:func:`run_measured`) starts a command in its own session and, while it
runs, samples the resident memory of its whole process tree (:class:`RssSampler`: every
process descended from it or in its session, ``VmRSS`` from ``/proc/<pid>/status``, every
0.2 s).  It reports, per run:

* ``tree_peak_mib``: the largest *sum* of the tree's RSS seen in one sample (shared pages
  are counted once per process, so this is an upper bound of what the tree held);
* ``groups``: the same peak sum per group of processes (by default ``self``, the command's
  own process; ``qemu``, any ``qemu-system-*``; ``children``, everything else);
* ``single_peak_mib`` and ``single_peak_comm``: the largest RSS of one process;
* ``rusage``: user and system CPU seconds of the command and of its waited-for descendants,
  and ``maxrss_mib``, the kernel's ``ru_maxrss`` for them: the largest RSS of *one* of those
  processes (not a sum).

Sampling every 0.2 s misses peaks shorter than that; ``ru_maxrss`` does not, but only
covers single processes.

Results are JSON files in ``benchmarks/results/``: ``<name>-<timestamp>.json`` for each run
and ``<name>.json`` for the latest, each with :func:`provenance` (machine, commit, command).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
MiB = 1024 * 1024


# --- where and what ---------------------------------------------------------------------------


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo_bytes(meminfo: str, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        return ""


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """The machine a result was measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    meminfo = Path("/proc/meminfo").read_text()
    return {
        "cpu": _cpu_model(cpuinfo),
        "cores": os.cpu_count(),
        "ram_bytes": _meminfo_bytes(meminfo, "MemTotal"),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "loadavg": loadavg(),
    }


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """The commit of the working tree (and whether it has uncommitted changes to tracked files)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    try:
        sha = git("rev-parse", "HEAD").strip()
        # The generated report (README, plot, results) changes during a run: it does not make the code dirty.
        generated = (":!benchmarks/results", ":!benchmarks/README.md")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *generated).strip())
        branch = git("rev-parse", "--abbrev-ref", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return {"sha": "unknown", "short": "unknown", "dirty": None, "branch": None}
    return {"sha": sha, "short": sha[:10], "dirty": dirty, "branch": branch}


def accelerator() -> dict[str, str]:
    """What liveimg's appliance and boot tests will use here (``liveimg.accel.choose_accel``)."""
    from liveimg.accel import choose_accel

    choice = choose_accel()
    return {"accel": str(choice.accel), "reason": choice.reason}


def provenance(name: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The header every result file starts with."""
    args = list(sys.argv[1:] if argv is None else argv)
    return {
        "benchmark": name,
        "command": shlex.join(["python", "-m", "benchmarks", *args]),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
    }


# --- measured runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    session: int
    comm: str


def read_stat(pid: int, proc: Path = Path("/proc")) -> ProcInfo | None:
    """``/proc/<pid>/stat``'s parent, session and command name; None if the process is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may itself hold spaces or parentheses: split at the last ")".
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    if len(fields) < 4:
        return None
    return ProcInfo(pid=pid, ppid=int(fields[1]), session=int(fields[3]), comm=head.partition("(")[2])


def read_rss_kib(pid: int, proc: Path = Path("/proc")) -> int:
    """VmRSS of a process in KiB (0 for kernel threads and processes that are gone)."""
    try:
        with open(proc / str(pid) / "status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pids(root: int, procs: Sequence[ProcInfo]) -> set[int]:
    """``root``, its descendants, and the processes of its session (daemons that left the tree)."""
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    found = {root}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.update(p.pid for p in procs if p.session == root)
    return found


def default_group(root: int, info: ProcInfo) -> str:
    if info.pid == root:
        return "self"
    if info.comm.startswith("qemu-system"):
        return "qemu"
    return "children"


@dataclass
class RssPeaks:
    """What :class:`RssSampler` saw (MiB)."""

    tree_peak_mib: float = 0.0
    groups: dict[str, float] = field(default_factory=dict)
    single_peak_mib: float = 0.0
    single_peak_comm: str = ""
    samples: int = 0
    interval: float = 0.2
    #: (seconds since the sampler started, tree MiB, MiB per group) for every sample, if kept.
    series: list[tuple[float, float, dict[str, float]]] = field(default_factory=list)

    def peak_between(self, begin: float, end: float) -> dict[str, float]:
        """The peak tree sum and per-group sums among the samples taken in [begin, end]."""
        out: dict[str, float] = {"tree": 0.0}
        for t, total, groups in self.series:
            if begin <= t <= end:
                out["tree"] = max(out["tree"], total)
                for name, mib in groups.items():
                    out[name] = max(out.get(name, 0.0), mib)
        return out


class RssSampler:
    """Samples the RSS of a process tree in a thread (``with RssSampler(pid) as s: ...; s.peaks``)."""

    def __init__(
        self,
        root: int,
        *,
        interval: float = 0.2,
        group: Callable[[int, ProcInfo], str] = default_group,
        proc: Path = Path("/proc"),
        keep_series: bool = False,
        started: float | None = None,
    ) -> None:
        self.root = root
        self.keep_series = keep_series
        self.started = time.monotonic() if started is None else started
        self.interval = interval
        self.group = group
        self.proc = proc
        self.peaks = RssPeaks(interval=interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _all(self) -> list[ProcInfo]:
        procs = []
        for entry in os.scandir(self.proc):
            if entry.name.isdigit():
                info = read_stat(int(entry.name), self.proc)
                if info is not None:
                    procs.append(info)
        return procs

    def sample(self) -> None:
        """Take one sample now."""
        procs = {p.pid: p for p in self._all()}
        pids = tree_pids(self.root, list(procs.values()))
        total = 0
        groups: dict[str, int] = {}
        peaks = self.peaks
        for pid in pids:
            info = procs.get(pid)
            if info is None:
                continue
            rss = read_rss_kib(pid, self.proc)
            total += rss
            name = self.group(self.root, info)
            groups[name] = groups.get(name, 0) + rss
            if rss / 1024 > peaks.single_peak_mib:
                peaks.single_peak_mib = round(rss / 1024, 1)
                peaks.single_peak_comm = info.comm
        peaks.tree_peak_mib = max(peaks.tree_peak_mib, round(total / 1024, 1))
        for name, kib in groups.items():
            peaks.groups[name] = max(peaks.groups.get(name, 0.0), round(kib / 1024, 1))
        peaks.samples += 1
        if self.keep_series:
            t = round(time.monotonic() - self.started, 2)
            peaks.series.append((t, round(total / 1024, 1), {k: round(v / 1024, 1) for k, v in groups.items()}))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Line:
    """One line a measured command printed, with the seconds since it started."""

    t: float
    text: str


@dataclass
class Measured:
    """A finished measured run."""

    argv: list[str]
    returncode: int
    wall: float
    rss: RssPeaks
    rusage: dict[str, float]
    stdout: list[Line] = field(default_factory=list)
    stderr: list[Line] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly part (without the captured lines and the RSS series)."""
        rss = asdict(self.rss)
        rss.pop("series")
        return {
            "argv": self.argv,
            "returncode": self.returncode,
            "wall": round(self.wall, 2),
            "rss": rss,
            "rusage": self.rusage,
        }


def _pump(
    stream: IO[bytes], started: float, into: list[Line], log: IO[str] | None, on_line: Callable[[Line], None] | None
) -> None:
    for raw in iter(stream.readline, b""):
        line = Line(round(time.monotonic() - started, 3), raw.decode(errors="replace").rstrip("\n"))
        into.append(line)
        if log is not None:
            log.write(f"{line.t:9.3f} {line.text}\n")
            log.flush()
        if on_line is not None:
            on_line(line)


def run_measured(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    nice: int = 0,
    interval: float = 0.2,
    timeout: float | None = None,
    on_line: Callable[[Line], None] | None = None,
    keep_series: bool = False,
) -> Measured:
    """Run ``argv`` to completion, timing it and sampling its process tree's memory.

    Its stdout and stderr are captured line by line with their time since the start (and
    copied, time-stamped, to ``log_path``).  ``nice`` lowers its priority.  A run that
    exceeds ``timeout`` has its whole session killed and raises :class:`TimeoutError`.
    """
    args = [os.fspath(a) for a in argv]
    if nice:
        args = ["nice", "-n", str(nice), *args]
    log = open(log_path, "a") if log_path else None  # noqa: SIM115  # closed in finally
    try:
        if log is not None:
            log.write(f"# {shlex.join(args)}\n")
        started = time.monotonic()
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        out: list[Line] = []
        err: list[Line] = []
        pumps = [
            threading.Thread(target=_pump, args=(stream, started, into, log, on_line), daemon=True)
            for stream, into in ((proc.stdout, out), (proc.stderr, err))
        ]
        for t in pumps:
            t.start()
        timer = None
        expired = threading.Event()
        if timeout is not None:

            def kill() -> None:
                expired.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
        with RssSampler(proc.pid, interval=interval, keep_series=keep_series, started=started) as sampler:
            # wait4 gives the resource usage of this child and of the descendants it waited for.
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if timer is not None:
            timer.cancel()
        for t in pumps:
            t.join(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        if expired.is_set():
            raise TimeoutError(f"{shlex.join(args)} ran longer than {timeout} s")
    finally:
        if log is not None:
            log.close()
    rusage = {
        "user": round(usage.ru_utime, 2),
        "system": round(usage.ru_stime, 2),
        "cpu": round(usage.ru_utime + usage.ru_stime, 2),
        "maxrss_mib": round(usage.ru_maxrss / 1024, 1),
    }
    return Measured(
        argv=args, returncode=proc.returncode, wall=wall, rss=sampler.peaks, rusage=rusage, stdout=out, stderr=err
    )


def children_maxrss_mib() -> float:
    """``ru_maxrss`` of this process's waited-for children so far (one process's peak, not a sum)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


# --- numbers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """Least-squares line ``y = a + b*x`` and its coefficient of determination."""

    a: float
    b: float
    r2: float
    n: int

    def predict(self, x: float) -> float:
        return self.a + self.b * x


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Ordinary least squares; needs two distinct x values.  R² is 1.0 for a perfect line."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a linear fit needs at least two (x, y) pairs")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a linear fit needs at least two distinct x values")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 if ss_tot == 0 else 1.0 - ss_res / ss_tot
    return Fit(a=a, b=b, r2=r2, n=len(xs))


def stats(values: Sequence[float]) -> dict[str, float]:
    """min, median and max of repeated measurements."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": min(values), "median": statistics.median(values), "max": max(values)}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


# --- result files -------------------------------------------------------------------------------


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def save(name: str, data: Mapping[str, Any], results: Path = RESULTS) -> Path:
    """Write ``<name>-<timestamp>.json`` and ``<name>.json`` (the latest) atomically; return the first."""
    results.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    stamped = results / f"{name}-{timestamp()}.json"
    for path in (stamped, results / f"{name}.json"):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return stamped


def load(name: str, results: Path = RESULTS) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@contextlib.contextmanager
def scratch_dir(path: Path, *, keep: bool = False) -> Iterator[Path]:
    """A fresh directory, removed afterwards unless ``keep``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def wait_for_quiet(max_load: float, max_wait: float, *, poll: float = 30.0, say: Callable[[str], None] = print) -> bool:
    """Wait until the 1-minute load average is at most ``max_load`` (or ``max_wait`` seconds passed)."""
    deadline = time.monotonic() + max_wait
    while True:
        load1 = os.getloadavg()[0]
        if load1 <= max_load:
            return True
        if time.monotonic() >= deadline:
            say(f"load {load1:.2f} still above {max_load} after {max_wait:.0f} s: measuring anyway")
            return False
        say(f"load {load1:.2f} > {max_load}: waiting")
        time.sleep(poll)


def auto_nice(threshold: float = 1.5) -> int:
    """10 when others are busy on the machine (load above ``threshold``), else 0."""
    return 10 if os.getloadavg()[0] > threshold else 0
