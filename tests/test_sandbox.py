"""liveimg.sandbox, from inside: what a sandboxed program sees, may do, and is stopped from doing.

The host tools' sandbox has the host's /usr, so python3 is there to try system calls one by one.
Run as root (make test) the sandbox is user nobody; run as anyone else, that user.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from liveimg import sandbox
from liveimg.errors import HostError, ToolError, ToolTimeout
from tests.support import NOBODY, need_root, run_python_as_nobody, unavailable

PY = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def _available() -> None:
    ok, reason = sandbox.available()
    if not ok:
        unavailable(reason)


def sh(script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = sandbox.run(["sh", "-c", script], what="sh", check=False, **kwargs)  # type: ignore[arg-type]
    return subprocess.CompletedProcess(result.argv, result.returncode, result.stdout, result.stderr)


def py(code: str, **kwargs: object) -> str:
    result = sandbox.run([PY, "-I", "-S", "-c", textwrap.dedent(code)], what="python3", **kwargs)  # type: ignore[arg-type]
    return result.stdout


def expected_owner() -> int:
    return NOBODY if os.geteuid() == 0 else os.getuid()


def test_host_tool_sees_usr_and_nothing_else_of_the_host(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host only")
    out = sh(f"ls /; ls /etc; cat {tmp_path}/secret /root/.bashrc /home 2>&1; ls /sys 2>&1")
    assert out.returncode != 0
    top = out.stdout.split("\n")
    assert set(top[: top.index("ld.so.cache")]) == {"bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr"}
    assert "host only" not in out.stdout and "No such file" in out.stdout


def test_never_host_root(tmp_path: Path) -> None:
    """Whoever runs liveimg, what the sandbox does is done by an unprivileged uid of the host."""
    shared = tmp_path / "shared"
    shared.mkdir()
    sandbox.hand_over(shared)
    out = sh("id -u; grep -E '^(Uid|CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status; echo x > /w/made",
             mounts=[sandbox.Bind(shared, "/w", writable=True)])  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == str(sandbox.DEFAULT_SANDBOX_ID)
    status = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    owner = (shared / "made").stat().st_uid
    assert owner == expected_owner() and owner != 0


def test_files_are_handed_over_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"guest bytes")
    out = tmp_path / "out"
    out.write_bytes(b"")
    sandbox.hand_over(out)
    script = "cat $0; printf written > $1; echo > $0 || echo read-only"
    result = sandbox.run(["sh", "-c", script, sandbox.File(data), sandbox.File(out, writable=True)], what="sh")
    assert result.stdout.startswith("guest bytes") and "read-only" in result.stdout
    assert out.read_bytes() == b"written" and data.read_bytes() == b"guest bytes"
    link = tmp_path / "link"
    link.symlink_to(data)
    with pytest.raises(HostError, match="cannot open"):
        sandbox.run(["cat", sandbox.File(link)], what="cat")


def test_no_network(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        out = py(f"""
            import socket
            print(open("/proc/net/dev").read().count(":"))
            print([l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]])
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", {port}))
                print("connected")
            except OSError as exc:
                print("refused", exc.errno)
        """)
    finally:
        listener.close()
    assert out.split("\n")[1] == "['lo']"  # a network namespace of its own: only its loopback
    assert "refused" in out and "connected" not in out


def test_proc_sys_and_sysfs_cannot_be_written() -> None:
    out = sh("echo 2 > /proc/sys/vm/stat_interval || echo sysctl-refused; ls /sys 2>&1 || true; "
             "echo > /dev/x 2>&1 || echo dev-read-only; echo > /dev/shm/x && echo shm-ok")  # fmt: skip
    assert "sysctl-refused" in out.stdout and "No such file" in out.stdout
    assert "dev-read-only" in out.stdout and "shm-ok" in out.stdout


def test_guest_root_sees_sysfs_read_only_without_cgroups(tmp_path: Path) -> None:
    from tests.dracut.test_sandbox import busybox_tree

    tree = busybox_tree(tmp_path / "root")
    for name in ("proc", "dev", "sys"):
        (tree / name).mkdir()
    result = sandbox.run(
        ["/bin/sh", "-c", "ls /sys; ls /sys/fs/cgroup 2>&1; touch /sys/class/x 2>&1; touch /x 2>&1; true"],
        what="sh", root=tree,
    )  # fmt: skip
    assert result.stdout.split("\n")[:7] == list(sandbox.SYS_PARTS)
    assert "/sys/fs/cgroup: No such file" in result.stdout
    assert result.stdout.count("Read-only file system") == 2


SYSCALLS = """
    import ctypes, errno, os
    libc = ctypes.CDLL(None, use_errno=True)
    def call(name, number, *args):
        rc = libc.syscall(number, *args)
        print(name, "allowed" if rc >= 0 else errno.errorcode[ctypes.get_errno()])
    call("unshare", 272, 0x20000)            # CLONE_NEWNS
    call("unshare_user", 272, 0x10000000)     # CLONE_NEWUSER
    call("mount", 165, b"none", b"/tmp", b"tmpfs", 0, None)
    call("keyctl", 250, 0, 0)                 # KEYCTL_GET_KEYRING_ID
    call("add_key", 248, b"user", b"x", b"y", 1, -3)
    call("ptrace", 101, 16, 1)                # PTRACE_ATTACH to pid 1
    call("bpf", 321, 0, None, 0)
    call("perf_event_open", 298, None, 0, -1, -1, 0)
    call("userfaultfd", 323, 0)
    call("personality", 135, 0x0040000)       # ADDR_NO_RANDOMIZE
    call("chroot", 161, b"/")
    call("clone_newuser", 56, 0x10000000 | 17, None, None, None, None)
    call("clone3", 435, None, 0)
    call("init_module", 175, None, 0, b"")
    call("kexec_load", 246, 0, 0, None, 0)
    call("setns", 308, 0, 0)
    call("io_uring_setup", 425, 1, None)
    call("getpid", 39)
"""


def test_seccomp_refuses_what_escapes_use() -> None:
    if os.uname().machine != "x86_64":
        unavailable("the test knows the system call numbers of x86_64 only")
    seen = dict(line.split() for line in py(SYSCALLS).splitlines())
    assert seen.pop("getpid") == "allowed"
    assert seen.pop("clone3") == "ENOSYS"  # so that libc falls back to clone, whose flags the filter sees
    assert seen == dict.fromkeys(seen, "EPERM"), seen


def test_fork_bomb_stops_at_the_limit() -> None:
    started = time.monotonic()
    out = py("""
        import os, time
        n = 0
        for _ in range(500):
            try:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
            except BlockingIOError:
                break
            n += 1
        print(n, flush=True)
        os._exit(0)
    """, limits=sandbox.Limits(tasks=20, seconds=60))  # fmt: skip
    assert time.monotonic() - started < 30
    assert 5 < int(out) < 20  # python itself and bwrap's init count too


def test_a_file_larger_than_the_limit_fails() -> None:
    with pytest.raises(sandbox.LimitExceeded, match="wrote a file larger than 8 MiB"):
        sandbox.run(["sh", "-c", "head -c 20000000 /dev/zero > /tmp/big"], what="sh",
                    limits=sandbox.Limits(file_size=8 * sandbox.MiB, tmpfs=64 * sandbox.MiB))  # fmt: skip


def test_memory_limit() -> None:
    out = py("""
        try:
            x = bytearray(600 << 20)
            print("allocated")
        except MemoryError:
            print("MemoryError")
    """, limits=sandbox.Limits(memory=256 * sandbox.MiB))  # fmt: skip
    assert out.strip() == "MemoryError"


def test_filling_the_disk_is_stopped(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sandbox.hand_over(out)
    limits = sandbox.Limits(disk=64 * sandbox.MiB, file_size=16 * sandbox.MiB, seconds=120)
    started = time.monotonic()
    with pytest.raises(sandbox.LimitExceeded, match="wrote more than 64 MiB to the filesystem of"):
        sandbox.run(["sh", "-c", "i=0; while :; do head -c 16000000 /dev/zero > /w/f$i; i=$((i+1)); done"],
                    what="sh", mounts=[sandbox.Bind(out, "/w", writable=True)], limits=limits)  # fmt: skip
    assert time.monotonic() - started < 60
    written = sum(p.stat().st_blocks * 512 for p in out.iterdir())
    assert written < 64 * sandbox.MiB + 1 * sandbox.GiB  # stopped within one watch period


def test_printing_without_end_is_stopped() -> None:
    with pytest.raises(sandbox.LimitExceeded, match="printed more than 1 MiB"):
        sandbox.run(["yes"], what="yes", limits=sandbox.Limits(output=1 * sandbox.MiB, seconds=60))


def test_timeout_kills_the_program_and_its_children() -> None:
    started = time.monotonic()
    with pytest.raises(ToolTimeout, match="timed out after 1 s"):
        sandbox.run(["sh", "-c", "sleep 2718.25 & (sleep 2718.25 &) ; sleep 2718.25"], what="sh",
                    limits=sandbox.Limits(seconds=1))  # fmt: skip
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-x", "-f", "sleep 2718.25"], capture_output=True, check=False).stdout
        if not left.strip():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"sleepers survived the timeout: {left!r}")


def test_nothing_outside_its_output_is_writable(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("canary\n")
    out = tmp_path / "out"
    out.mkdir()
    sandbox.hand_over(out)
    attempts = [f"{canary}", "/w/../canary", "/w/../../canary", "/canary", "/usr/canary", "/etc/canary",
                "/proc/self/root/canary", "/proc/1/root/canary", "/dev/canary"]  # fmt: skip
    script = "; ".join(f"echo pwned > {a} 2>/dev/null && echo wrote {a}" for a in attempts) + "; true"
    result = sh(script, mounts=[sandbox.Bind(out, "/w", writable=True)])
    assert "wrote" not in result.stdout, result.stdout
    assert canary.read_text() == "canary\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary", "out"]
    assert not list(out.iterdir())


def test_root_work_directories_are_reached_through_the_portal(tmp_path: Path) -> None:
    need_root()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # as /root is: the sandbox user could not even look inside
    work = private / "work"
    work.mkdir()
    sandbox.hand_over(work)
    out = sh("echo hi > /w/f && cat /w/f", mounts=[sandbox.Bind(work, "/w", writable=True)])
    assert out.stdout == "hi\n", out.stderr
    assert (work / "f").stat().st_uid == NOBODY


def test_root_only_file_is_refused_in_one_line(tmp_path: Path) -> None:
    need_root()
    secret = tmp_path / "image"
    secret.write_bytes(b"x")
    secret.chmod(0o600)
    with pytest.raises(HostError, match=r"sandbox user \(uid 65534\) cannot read it .*LIVEIMG_SANDBOX_USER"):
        sandbox.run(["cat", sandbox.File(secret)], what="cat")


def test_sandbox_user_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        assert sandbox.sandbox_ids() is None
        return
    monkeypatch.setenv(sandbox.SANDBOX_USER_ENV, "4242:4343")
    assert sandbox.sandbox_ids() == (4242, 4343)
    for bad in ("0", "root", "1:0"):
        monkeypatch.setenv(sandbox.SANDBOX_USER_ENV, bad)
        with pytest.raises(ValueError, match="LIVEIMG_SANDBOX_USER"):
            sandbox.sandbox_ids()


def test_failure_and_missing_program() -> None:
    with pytest.raises(ToolError, match="sh failed with exit status 3: boom"):
        sandbox.run(["sh", "-c", "echo boom >&2; exit 3"], what="sh")
    with pytest.raises(ToolError, match="command not found"):
        sandbox.run(["liveimg-no-such-tool"], what="x")


def test_works_for_an_unprivileged_caller(tmp_path: Path) -> None:
    """The same checks, started by uid 65534 with no capability (as any user would)."""
    need_root()
    code = textwrap.dedent("""
        import sys
        from liveimg import sandbox
        r = sandbox.run(["sh", "-c", "id -u; grep CapEff /proc/self/status; echo 2 > /proc/sys/vm/stat_interval"],
                        what="sh", check=False)
        print(r.stdout.replace("\\n", " "), r.returncode)
    """)
    proc = run_python_as_nobody(code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["65534", "CapEff:", "0000000000000000", "2"]
    assert errno.EPERM  # (the status 2 is the shell's: the write was refused)


def test_a_session_runs_several_tools_in_one_sandbox(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes(b"0123456789")
    sandbox.hand_over(image)
    file = sandbox.File(image, writable=True)
    with sandbox.Session(what="tools", files=[file]) as session:
        first = session.run(["sh", "-c", "echo $$; cat $0", file], timeout=30)
        second = session.run(["sh", "-c", "echo $$; printf new > $0; cat", file], input=b"from stdin", timeout=30)
        failed = session.run(["sh", "-c", "echo oops >&2; exit 4"], timeout=30, check=False)
        with pytest.raises(ToolTimeout, match="sleep timed out after 1 s"):
            session.run(["sleep", "60"], timeout=1)
        with pytest.raises(ToolError, match="sh failed with exit status 4: oops"):
            session.run(["sh", "-c", "echo oops >&2; exit 4"], timeout=30)
        with pytest.raises(Exception, match="not a file of this sandbox session"):
            session.run(["cat", sandbox.File(tmp_path / "other")], timeout=30)
        last = session.run(["id", "-u"], timeout=30)
    pid1, content = first.stdout.split("\n")[:2]
    pid2, rest = second.stdout.split("\n", 1)
    assert content == "0123456789" and rest == "from stdin" and image.read_bytes() == b"new"
    assert pid1 != pid2  # a process each, in the same sandbox (one PID namespace: small numbers)
    assert (failed.returncode, failed.stderr) == (4, "oops\n")
    assert last.stdout.strip() == str(sandbox.DEFAULT_SANDBOX_ID)


def test_root_of_a_user_namespace_is_who_it_is_outside() -> None:
    """uid 0 of a user namespace: the host's root may not sandbox as itself; another user may."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from liveimg import sandbox\n"
        "try:\n"
        "    print(sandbox.run(['id', '-u'], what='id').stdout.strip())\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    repo = str(Path(__file__).resolve().parents[1])
    argv = ["unshare", "--user", "--map-root-user", sys.executable, "-c", code, repo]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    if os.geteuid() == 0:
        assert out.startswith("HostError liveimg runs as root of a user namespace that is the host's root"), out
    else:
        assert out == str(os.getuid()), out  # uid 0 inside is this user outside: the sandbox is this user


def test_a_file_to_read_stays_read_only_even_for_its_owner(tmp_path: Path) -> None:
    """A descriptor can be opened again for writing through /proc/self/fd by whoever may write the file:
    a file handed over to be read is bound read-only instead, whoever owns it."""
    data = tmp_path / "data"
    data.write_bytes(b"input")
    sandbox.hand_over(data)  # the sandbox user owns it (as root: nobody), mode 0644
    script = "cat $0; echo more >> $0 2>/dev/null && echo wrote; for f in /proc/self/fd/*; do echo x >> $f; done; true"
    result = sandbox.run(["sh", "-c", script, sandbox.File(data)], what="sh")
    assert result.stdout.startswith("input") and "wrote" not in result.stdout
    assert data.read_bytes() == b"input"
