"""liveimg.run: the one way programs are run, and how it fails."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import ToolError, ToolNotFound, ToolTimeout


def test_output_and_status() -> None:
    result = runner.run(["sh", "-c", "echo out; echo err >&2"])
    assert result.returncode == 0
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.argv == ("sh", "-c", "echo out; echo err >&2")


def test_missing_program_names_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(runner, "_SYSTEM_PATH", ())
    with pytest.raises(ToolNotFound) as excinfo:
        runner.run(["mksquashfs", "-version"])
    assert str(excinfo.value) == "mksquashfs: command not found (install the Debian package squashfs-tools)"
    assert excinfo.value.package == "squashfs-tools"
    assert isinstance(excinfo.value, FileNotFoundError)


def test_missing_unknown_program() -> None:
    with pytest.raises(ToolNotFound) as excinfo:
        runner.run(["liveimg-no-such-program"])
    assert str(excinfo.value) == "liveimg-no-such-program: command not found (install it or put it on PATH)"


def test_nonzero_exit_carries_status_and_stderr_tail() -> None:
    script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3"
    with pytest.raises(ToolError) as excinfo:
        runner.run(["sh", "-c", script])
    err = excinfo.value
    assert str(err) == "sh failed with exit status 3: line30"
    assert err.returncode == 3
    assert err.argv == ("sh", "-c", script)
    assert err.stderr.splitlines() == [f"line{i}" for i in range(11, 31)]  # the last 20 lines
    assert err.command == f"sh -c '{script}'"


def test_nonzero_exit_allowed() -> None:
    assert runner.run(["sh", "-c", "exit 1"], ok_codes=(0, 1)).returncode == 1
    assert runner.run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_killed_by_signal() -> None:
    with pytest.raises(ToolError) as excinfo:
        runner.run(["sh", "-c", "kill -TERM $$"])
    assert str(excinfo.value) == "sh was killed by signal 15"
    assert excinfo.value.returncode == -15


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(ToolTimeout) as excinfo:
        runner.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert str(excinfo.value) == "sh timed out after 0.5 s and was killed"
    assert isinstance(excinfo.value, TimeoutError)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the grandchild survived the timeout")


def test_stdin_is_closed() -> None:
    started = time.monotonic()
    assert runner.run(["cat"], timeout=10).stdout == ""
    assert time.monotonic() - started < 5


def test_input_is_passed() -> None:
    assert runner.run(["cat"], input=b"hello").stdout == "hello"


def test_environment_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEIMG_TEST_SECRET", "x")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    env = dict(line.split("=", 1) for line in runner.run(["env"]).stdout.splitlines() if "=" in line)
    assert "LIVEIMG_TEST_SECRET" not in env
    assert env["SOURCE_DATE_EPOCH"] == "1234"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["LANG"] == "C.UTF-8"
    assert "/usr/sbin" in env["PATH"].split(":")
    assert runner.run(["env"], env={"EXTRA": "1"}).stdout.count("EXTRA=1") == 1


def test_stdout_to_file(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    result = runner.run(["printf", "abc"], stdout=out)
    assert out.read_bytes() == b"abc"
    assert result.stdout == ""


def test_command_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="liveimg.run"):
        runner.run(["echo", "hello world"])
    assert "+ echo 'hello world'" in caplog.text


def test_spawn_stops_the_program() -> None:
    with runner.spawn(["sleep", "60"]) as proc:
        assert proc.poll() is None
    assert proc.returncode is not None


def test_require() -> None:
    assert runner.require("sh").endswith("/sh")
    with pytest.raises(ToolNotFound):
        runner.require("liveimg-no-such-program")


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie waiting for its reaper: it is dead
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["run", "spawn"])
def test_a_program_dies_when_liveimg_is_killed(tmp_path: Path, how: str) -> None:
    """SIGKILL of the process that ran it: no cleanup runs, the parent-death signal kills the program."""
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; exec sleep 60"
    code = (
        "import sys; from liveimg import run as runner\n"
        f"if {how == 'run'}: runner.run(['sh', '-c', sys.argv[1]])\n"
        "else:\n"
        "    with runner.spawn(['sh', '-c', sys.argv[1]]) as proc: proc.wait()\n"
    )
    repo = Path(__file__).resolve().parents[1]
    parent = subprocess.Popen([sys.executable, "-c", code, script], env={**os.environ, "PYTHONPATH": str(repo)})
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the program did not start"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    parent.kill()
    parent.wait()
    try:
        assert _gone(child), "the program outlived liveimg"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_kill_children_kills_every_running_program_and_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    errors: list[BaseException] = []

    def work() -> None:
        try:
            runner.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=60)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    with runner.spawn(["sleep", "60"]) as spawned:
        thread.start()
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip() or len(runner.running_children()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert spawned.pid in runner.running_children()
        runner.kill_children()
        thread.join(10)
        assert spawned.wait(5) == -signal.SIGKILL
    assert _gone(int(pidfile.read_text()))
    assert [str(e) for e in errors] == ["sh was killed by signal 9"]
    assert runner.running_children() == []


def test_registered_killers_run_only_while_registered() -> None:
    calls: list[str] = []
    with runner.killer(lambda: calls.append("qemu")):
        runner.kill_children()
    runner.kill_children()
    assert calls == ["qemu"]
