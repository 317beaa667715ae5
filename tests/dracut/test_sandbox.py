"""The rootless sandbox, on a busybox tree: what the guest program sees and cannot reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg import sandbox
from liveimg.dracut.sandbox import Bind, Tmpfs, check_sandbox_result, log_tail, run_in_sandbox, sandbox_available
from liveimg.errors import HostError, ToolError, ToolTimeout
from tests.support import NOBODY, need, public_directory, run_python_as_nobody, unavailable

APPLETS = ("sh", "cat", "ls", "id", "echo", "mkdir", "touch", "sleep", "kill", "readlink", "stat", "wc")


def busybox_tree(root: Path) -> Path:
    """A tiny guest: a static busybox and its applets, nothing else."""
    need("busybox")
    (root / "bin").mkdir(parents=True)
    shutil.copy2(runner.require("busybox"), root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "usr").mkdir()
    (root / "usr/bin").symlink_to("../bin")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    ok, reason = sandbox_available()
    if not ok:
        unavailable(reason)
    return busybox_tree(tmp_path / "root")


def sh(tree: Path, script: str, tmp_path: Path, **kwargs: object) -> tuple[int, str]:
    log = tmp_path / "log"
    log.unlink(missing_ok=True)
    result = run_in_sandbox(tree, ["/bin/sh", "-c", script], log_path=log, **kwargs)  # type: ignore[arg-type]
    return result.returncode, log.read_text()


def test_root_inside_is_unprivileged_outside(tree: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    sandbox.hand_over(shared)
    script = "id -u; grep CapEff /proc/self/status; echo $$; cat /proc/1/cmdline | wc -c; echo x > /run/x/made"
    rc, out = sh(tree, script, tmp_path, mounts=[Tmpfs("/run"), Bind(shared, "/run/x")])
    assert rc == 0, out
    uid, caps, pid, init_len = out.split("\n")[:4]
    assert uid == "0"
    # CAP_SYS_CHROOT, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, only in its own namespace
    assert int(caps.split()[1], 16) == (1 << 18) | (1 << 1) | (1 << 2) | (1 << 3)
    assert pid != "1" and int(init_len) > 0  # PID 1 is the sandbox's init, in a new PID namespace
    # What it writes belongs to the caller, or to the sandbox user when root runs it: never to root.
    owner = (shared / "made").stat().st_uid
    assert owner == (NOBODY if os.geteuid() == 0 else os.getuid()) and owner != 0


def test_host_files_are_out_of_reach(tree: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host only")
    rc, out = sh(tree, f"ls /; cat {secret} /etc/hostname || echo unreachable", tmp_path)
    assert rc == 0
    assert set(out.split("\n")[: out.index("unreachable")]) >= {"bin", "dev", "proc", "sys"}
    assert "host only" not in out and "unreachable" in out


def test_dev_proc_sys_and_network(tree: Path, tmp_path: Path) -> None:
    rc, out = sh(
        tree,
        "ls /dev; echo x > /dev/null && echo null-ok; touch /sys/x 2>/dev/null || echo sys-ro; cat /proc/net/dev",
        tmp_path,
    )
    assert rc == 0
    assert {"null", "zero", "urandom", "random", "full", "tty", "shm"} <= set(out.split())
    assert "null-ok" in out and "sys-ro" in out
    interfaces = [line.split(":")[0].strip() for line in out.splitlines() if ":" in line and "|" not in line]
    assert interfaces == ["lo"]  # a network namespace of its own: no network


def test_mounts(tree: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in").write_text("from the host\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    sandbox.hand_over(shared, ro)
    rc, out = sh(
        tree,
        "cat /run/x/in; echo back > /run/x/out; echo tmp > /var/tmp/t && echo vartmp-ok; "
        "touch /boot/y 2>/dev/null || echo boot-ro",
        tmp_path,
        mounts=[
            Tmpfs("/run"),
            Bind(shared, "/run/x"),
            Tmpfs("/var/tmp", "mode=1777"),
            Bind(ro, "/boot", readonly=True),
        ],
    )
    assert rc == 0, out
    assert out.split("\n")[:3] == ["from the host", "vartmp-ok", "boot-ro"]
    assert (shared / "out").read_text() == "back\n"
    assert not (tree / "run/x").exists()  # created in the tmpfs, not in the tree
    assert not list(ro.iterdir())


def test_mount_points_follow_guest_links_inside_the_tree(tree: Path, tmp_path: Path) -> None:
    # A hostile guest: /var points at an absolute path.  The mount must land inside the tree.
    outside = tmp_path / "outside"
    (tree / "var").symlink_to(os.fspath(outside))
    rc, out = sh(tree, "echo hi > /var/tmp/f && cat /var/tmp/f", tmp_path, mounts=[Tmpfs("/var/tmp")])
    assert rc == 0 and out == "hi\n"
    assert not outside.exists()
    assert (tree / os.fspath(outside).lstrip("/") / "tmp").is_dir()


def test_exit_status_signals_and_missing_programs(tree: Path, tmp_path: Path) -> None:
    assert sh(tree, "exit 3", tmp_path)[0] == 3
    assert sh(tree, "kill -9 $$", tmp_path)[0] == 128 + 9
    result = run_in_sandbox(tree, ["/no/such/program"], log_path=tmp_path / "log2")
    assert result.returncode == 127
    assert "/no/such/program: No such file or directory" in (tmp_path / "log2").read_text()


def test_failure_carries_the_log_tail(tree: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    argv = ["/bin/sh", "-c", "for i in 1 2 3; do echo line $i; done; echo 'dracut: FAILED: it broke'; exit 1"]
    result = run_in_sandbox(tree, argv, log_path=log)
    with pytest.raises(ToolError, match="dracut failed with exit status 1: dracut: FAILED: it broke") as info:
        check_sandbox_result(result, argv, what="dracut")
    assert "line 3" in info.value.stderr


def test_timeout_kills_everything(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolTimeout):
        run_in_sandbox(tree, ["/bin/sh", "-c", "sleep 2718.5 & sleep 2718.5"], log_path=tmp_path / "log", timeout=2)
    deadline = time.monotonic() + 5  # the PID namespace's processes die with it, a moment later
    while left := subprocess.run(["pgrep", "-f", "^sleep 2718.5"], capture_output=True, text=True, check=False).stdout:
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


def test_missing_bind_source(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(HostError, match="does not exist"):
        run_in_sandbox(tree, ["/bin/true"], log_path=tmp_path / "log", mounts=[Bind(tmp_path / "nope", "/x")])


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A scratch directory that user nobody can reach (pytest's tmp_path is private to root)."""
    with public_directory("liveimg-sandbox-test-") as path:
        yield path


def test_works_as_an_unprivileged_user(tmp_path: Path, public_dir: Path) -> None:
    """The same sandbox, started by uid 65534 (nobody) with no capabilities at all."""
    tree = busybox_tree(public_dir / "root")
    if os.geteuid() != 0:
        rc, out = sh(tree, "id -u", tmp_path)  # already unprivileged: that is the test
        assert (rc, out) == (0, "0\n")
        return
    need("setpriv")
    for path in [tree, *tree.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    out_dir = public_dir / "out"
    out_dir.mkdir()
    os.chown(out_dir, NOBODY, NOBODY)
    code = (
        "import sys, pathlib; from liveimg.dracut.sandbox import run_in_sandbox, Bind, Tmpfs\n"
        f"r = run_in_sandbox(pathlib.Path({os.fspath(tree)!r}), ['/bin/sh', '-c', "
        "'id -u; cat /proc/self/uid_map; echo made > /run/out/f'], "
        f"log_path=pathlib.Path({os.fspath(out_dir / 'log')!r}), "
        f"mounts=[Tmpfs('/run'), Bind(pathlib.Path({os.fspath(out_dir)!r}), '/run/out')])\n"
        "sys.exit(r.returncode)\n"
    )
    proc = run_python_as_nobody(code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out_dir / "log").read_text().split("\n")[0] == "0"
    assert (out_dir / "f").read_text() == "made\n"
    assert (out_dir / "f").stat().st_uid == NOBODY


def test_log_tail_skips_shell_tracing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text(
        "dracut: Executing: /usr/bin/dracut --add nope\n"
        "dracut: Module 'nope' cannot be found.\n"
        "/usr/bin/dracut@1234(main): exit 1\n"
        "+ set +x\n"
        "\n"
    )
    assert log_tail(log, 1) == "dracut: Module 'nope' cannot be found."
    assert log_tail(tmp_path / "missing", 5) == ""
