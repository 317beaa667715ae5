"""The benchmark harness: process-tree RSS sampling, measured runs, fits and result files (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import harness

MiB = 1 << 20

# A parent that holds 64 MiB and a child that holds 32 MiB, both touched, then wait for stdin to close.
_TREE = textwrap.dedent(
    """
    import subprocess, sys
    held = bytearray(64 << 20)
    child = subprocess.Popen([sys.executable, "-c",
        "import sys; held = bytearray(32 << 20); print('child ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "child ready"
    print("ready", flush=True)
    sys.stdin.read()
    child.stdin.close()
    child.wait()
    """
)


def test_sampler_sums_the_tree_and_groups_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        sampler = harness.RssSampler(proc.pid, keep_series=True)
        sampler.sample()
        peaks = sampler.peaks
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    assert peaks.samples == 1
    assert peaks.groups["self"] >= 64
    assert peaks.groups["children"] >= 32
    assert peaks.tree_peak_mib >= peaks.groups["self"] + peaks.groups["children"] - 0.2
    assert peaks.single_peak_mib == peaks.groups["self"]
    assert peaks.single_peak_comm.startswith("python")
    (t, total, groups) = peaks.series[0]
    assert total == peaks.tree_peak_mib and groups["children"] == peaks.groups["children"]
    assert peaks.peak_between(t, t)["tree"] == total
    assert peaks.peak_between(t + 1, t + 2) == {"tree": 0.0}


def test_run_measured_reports_exit_output_and_memory(tmp_path: Path) -> None:
    code = "import sys; b = bytearray(48 << 20); print('out'); print('err', file=sys.stderr); sys.exit(3)"
    log = tmp_path / "run.log"
    measured = harness.run_measured([sys.executable, "-c", code], log_path=log)
    assert measured.returncode == 3
    assert [line.text for line in measured.stdout] == ["out"]
    assert [line.text for line in measured.stderr] == ["err"]
    assert measured.rusage["maxrss_mib"] >= 48  # ru_maxrss does not miss a short peak
    assert measured.rusage["cpu"] == pytest.approx(measured.rusage["user"] + measured.rusage["system"], abs=0.02)
    summary = measured.summary()
    assert "series" not in summary["rss"] and summary["returncode"] == 3
    text = log.read_text()
    assert text.startswith("# ") and " out\n" in text and " err\n" in text


def test_run_measured_kills_the_session_on_timeout() -> None:
    with pytest.raises(TimeoutError):
        harness.run_measured(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)


def test_tree_includes_descendants_and_the_session() -> None:
    P = harness.ProcInfo
    procs = [
        P(10, 1, 10, "root"),
        P(11, 10, 10, "child"),
        P(12, 11, 10, "grandchild"),
        P(13, 1, 10, "daemonized"),
        P(14, 1, 14, "stranger"),
        P(15, 14, 10, "stranger's child"),
    ]
    assert harness.tree_pids(10, procs) == {10, 11, 12, 13, 15}


def test_read_stat_with_a_hostile_command_name(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text("42 (qemu) (x y)) S 7 42 9 0 -1 4194560 0\n")
    (tmp_path / "42" / "status").write_text("Name:\tqemu\nVmRSS:\t  2048 kB\n")
    info = harness.read_stat(42, tmp_path)
    assert info == harness.ProcInfo(pid=42, ppid=7, session=9, comm="qemu) (x y)")
    assert harness.read_rss_kib(42, tmp_path) == 2048
    assert harness.read_stat(43, tmp_path) is None and harness.read_rss_kib(43, tmp_path) == 0
    assert harness.default_group(1, harness.ProcInfo(5, 1, 1, "qemu-system-x86")) == "qemu"


def test_linear_fit() -> None:
    fit = harness.linear_fit([0.5, 1, 2, 4], [12.5, 25, 50, 100])
    assert fit.a == pytest.approx(0, abs=1e-9) and fit.b == pytest.approx(25) and fit.r2 == pytest.approx(1)
    bent = harness.linear_fit([1, 2, 3, 4], [1, 4, 9, 16])
    assert bent.r2 < 0.99 and bent.predict(0) == pytest.approx(-5)
    with pytest.raises(ValueError):
        harness.linear_fit([1], [1])
    with pytest.raises(ValueError):
        harness.linear_fit([2, 2], [1, 3])


def test_stats_and_ratio() -> None:
    assert harness.stats([3.0, 1.0, 2.0]) == {"n": 3, "min": 1.0, "median": 2.0, "max": 3.0}
    assert harness.stats([]) == {"n": 0}
    assert harness.ratio(1, 2) == 0.5 and harness.ratio(1, 0) is None and harness.ratio(None, 2) is None


def test_save_writes_a_stamped_file_and_the_latest(tmp_path: Path) -> None:
    stamped = harness.save("e2e", {"x": 1}, tmp_path)
    assert stamped.name.startswith("e2e-") and json.loads(stamped.read_text()) == {"x": 1}
    harness.save("e2e", {"x": 2}, tmp_path)
    assert harness.load("e2e", tmp_path) == {"x": 2}
    assert harness.load("scaling", tmp_path) is None
    assert not list(tmp_path.glob(".*"))


def test_provenance_names_machine_commit_and_command() -> None:
    head = harness.provenance("e2e", ["e2e", "--quick"])
    assert head["command"] == "python -m benchmarks e2e --quick"
    assert head["machine"]["cores"] >= 1 and head["machine"]["ram_bytes"] > 0 and len(head["machine"]["loadavg"]) == 3
    assert len(head["commit"]["sha"]) in (40, 7) or head["commit"]["sha"] == "unknown"
