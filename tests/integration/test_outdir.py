"""OUTDIR as a transaction, with real builds: --force, two builds at once, a mount point, a full disk in each stage.

Every failure is one line (``liveimg: error: ...``), OUTDIR is left as it was, and nothing
is left beside it.  Mounts happen only in private mount namespaces (``unshare --mount
--propagation private``, as real root: liveimg refuses to run as root of a user namespace,
where its sandbox user does not exist): nothing is mounted on the host.  A full disk
is made at the moment a stage begins: the build is stopped (SIGSTOP) at the stage's
``--progress json`` event, the tmpfs holding OUTDIR is filled to the last byte, and the
build continues into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.running_build import REPO, RunningBuild, cmdline, descendants, still_running, tree_digest
from tests.samples import sample_image
from tests.support import need, need_root

OPTIONS = ("--compression", "lz4", "--initramfs-compression", "zstd", "--initramfs-level", "1")
#: In a private mount namespace.
PRIVATE = ["unshare", "--mount", "--propagation", "private"]
#: Run a command with a tmpfs of size $2 on $1, made in a private mount namespace.
ON_TMPFS = [*PRIVATE, "sh", "-c",
            'mount -t tmpfs -o size="$2" liveimg-test "$1" && shift 2 && exec "$@"', "sh"]  # fmt: skip


def liveimg(*args: str, wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*(wrap or []), sys.executable, "-m", "liveimg", "--progress", "none", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIVEIMG_ACCEL": "tcg"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=1800)


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def old_outdir(out: Path) -> dict[str, str]:
    (out / "pxelinux.cfg").mkdir(parents=True)
    (out / "pxelinux.cfg" / "default").write_text("the old build\n")
    (out / "live-rootfs.squashfs.img").write_bytes(os.urandom(1 << 16))
    return tree_digest(out)


def check_new_outdir(out: Path) -> dict[str, object]:
    manifest: dict[str, object] = json.loads((out / "manifest.json").read_text())
    artifacts = manifest["artifacts"]
    assert isinstance(artifacts, dict)
    for name, artifact in artifacts.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == artifact["sha256"], name
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [*artifacts, "manifest.json"]
    )
    return manifest


def test_force_replaces_an_existing_outdir(tmp_path: Path) -> None:
    need_root()
    image = sample_image("classic")
    out = tmp_path / "out"
    (tmp_path / "file").write_text("not a directory")
    result = liveimg("build", str(image), "-o", str(tmp_path / "file"), "--force", *OPTIONS)
    assert result.returncode == 1
    assert error_line(result.stderr) == f"liveimg: error: {tmp_path / 'file'} exists and is not a directory"
    old_outdir(out)
    inode = out.stat().st_ino
    build = RunningBuild("build", str(image), "-o", str(out), "--force", "--url", "http://192.0.2.1/live", *OPTIONS)
    try:
        assert build.finish(900) == 0, build.stderr()
    finally:
        if build.proc.poll() is None:
            build.kill_all()
    manifest = check_new_outdir(out)
    assert "boot.ipxe" in manifest["artifacts"]  # type: ignore[operator]
    assert not (out / "pxelinux.cfg" / "default").read_text().startswith("the old build")
    assert out.stat().st_ino != inode  # swapped in, not written over
    assert sorted(os.listdir(tmp_path)) == ["file", "out"]
    assert build.stderr_lines() == []  # with --progress json, the result is an event
    results = [s.event for s in build.seen if s.event.get("event") == "result"]
    assert [{k: r[k] for k in ("event", "outdir", "manifest")} for r in results] == [
        {"event": "result", "outdir": str(out), "manifest": "manifest.json"}
    ]
    assert results[0]["seconds"] > 0 and results[0]["cpu_seconds"] > 0


def test_a_second_build_of_the_same_outdir_is_refused_at_once(tmp_path: Path) -> None:
    need_root()
    image = sample_image("classic")
    out = tmp_path / "out"
    before = old_outdir(out)
    first = RunningBuild("build", str(image), "-o", str(out), "--force", *OPTIONS)
    try:
        first.wait_for("begin", "guest")
        started = time.monotonic()
        second = liveimg("build", str(image), "-o", str(out), "--force", *OPTIONS)
        assert time.monotonic() - started < 20
        assert second.returncode == 1
        assert error_line(second.stderr) == (
            f"liveimg: error: another liveimg build (pid {first.proc.pid}) is writing {out} (wait for it to finish, "
            "or choose another OUTDIR)"
        )
        assert first.proc.poll() is None  # the first build goes on, untouched
        processes = descendants(first.proc.pid)
        first.proc.send_signal(signal.SIGTERM)
        assert first.finish(120) == 143
    finally:
        if first.proc.poll() is None:
            first.kill_all()
    assert first.stderr_lines() == [f"liveimg: interrupted by SIGTERM: {out} left as it was"]
    assert tree_digest(out) == before
    assert os.listdir(tmp_path) == ["out"]
    assert still_running(processes, str(tmp_path)) == []


@pytest.mark.parametrize("force", [True, False])
def test_outdir_on_a_mount_point_is_refused_before_anything_is_built(tmp_path: Path, force: bool) -> None:
    need_root()
    need("unshare")
    image = sample_image("classic")
    out = tmp_path / "out"
    out.mkdir()
    wrap = [*ON_TMPFS, str(out), "16m"]
    result = liveimg("--progress", "json", "build", str(image), "-o", str(out), *(["--force"] * force), wrap=wrap)
    assert result.returncode == 1, result.stderr
    assert error_line(result.stderr) == (
        f"liveimg: error: {out} is a mount point: liveimg replaces OUTDIR with a rename, which a mount point cannot "
        f"take (give a directory inside it, e.g. -o {out}/live)"
    )
    assert result.stdout == ""  # no stage began
    assert os.listdir(tmp_path) == ["out"]


def test_workdir_inside_outdir_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    need_root()
    image = sample_image("classic")
    out = tmp_path / "out"
    before = old_outdir(out)
    result = liveimg("build", str(image), "-o", str(out), "--force", "--workdir", str(out / "tmp"))
    assert result.returncode == 1
    assert error_line(result.stderr) == (
        f"liveimg: error: --workdir {out / 'tmp'} is inside OUTDIR {out}, which the build replaces (give a --workdir "
        "outside it)"
    )
    assert tree_digest(out) == before
    new = tmp_path / "new" / "out"
    result = liveimg("build", str(image), "-o", str(new), "--workdir", str(new / "tmp"))
    assert error_line(result.stderr).startswith(f"liveimg: error: --workdir {new / 'tmp'} is inside OUTDIR {new}")
    assert sorted(os.listdir(tmp_path)) == ["out"]


# --- a full disk in each stage ------------------------------------------------------------------

#: In a private mount namespace: a tmpfs on $1 holding an old OUTDIR; when $2 appears, the tmpfs is
#: filled to its last byte (then $2.full appears); the build runs; what is left is listed after it.
FULL_LATER = r"""
mnt=$1; trigger=$2; shift 2
mount -t tmpfs -o size=700m liveimg-test "$mnt" || exit 97
mkdir "$mnt/out" && printf 'old\n' > "$mnt/out/PXE_CONFIG" || exit 97
(
    while [ ! -e "$trigger" ]; do sleep 0.02; done
    set -- $(stat -f -c '%a %S' "$mnt")
    fallocate -l $(($1 * $2)) "$mnt/.filler"
    touch "$trigger.full"
) &
"$@"
echo "status $?"
ls -A "$mnt"
cat "$mnt/out/PXE_CONFIG"
"""


def liveimg_process(root: int) -> int:
    """The liveimg process below ``root`` (a wrapper's shell): not its forks (libguestfs's recovery process)."""
    ours = {pid for pid, _ in descendants(root) if cmdline(pid).startswith(f"{sys.executable} -m liveimg ")}
    return next(pid for pid in ours if parent(pid) not in ours)


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])


@pytest.mark.parametrize(
    ("event", "stage"),
    [
        (("begin", "squashfs"), "squashfs"),
        # dracut runs beside the pack stage; once the pack is done (lz4: long before dracut), alone.
        (("end", "squashfs"), "dracut"),
        (("end", "pxe"), "manifest"),
    ],
)
def test_a_full_disk_in_a_stage_is_one_line_naming_the_directory(
    tmp_path: Path, event: tuple[str, str], stage: str
) -> None:
    need_root()
    need("unshare", "fallocate")
    image = sample_image("classic")
    mnt = tmp_path / "small"
    mnt.mkdir()
    trigger = tmp_path / "fill"
    wrap = [*PRIVATE, "sh", "-c", FULL_LATER, "sh", str(mnt), str(trigger)]
    build = RunningBuild(
        "build", str(image), "-o", str(mnt / "out"), "--force", "--workdir", str(tmp_path / "work"), *OPTIONS,
        "--no-cache", wrap=wrap,
    )  # fmt: skip  # --no-cache: dracut really runs (not an initramfs another test's build left in the cache)
    try:
        build.wait_for(*event)
        pid = liveimg_process(build.proc.pid)
        os.kill(pid, signal.SIGSTOP)  # the build waits while its disk fills
        try:
            trigger.touch()
            deadline = time.monotonic() + 30
            while not Path(f"{trigger}.full").exists():
                assert time.monotonic() < deadline, "the tmpfs was not filled"
                time.sleep(0.05)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert build.finish(900) == 0  # the wrapper's
    finally:
        if build.proc.poll() is None:
            build.kill_all()
    assert build.stderr_lines() == [
        f"liveimg: error: no space left on device in {mnt} during the {stage} stage (free space there or choose "
        "another OUTDIR)"
    ]
    assert build.other_lines == ["status 1", ".filler", "out", "old"]  # OUTDIR as it was, nothing beside it
    assert sorted(os.listdir(tmp_path)) == ["fill", "fill.full", "small"]  # the --workdir it made is gone too


def test_a_full_disk_before_the_rootfs_stage_is_said_before_it_starts(tmp_path: Path) -> None:
    need_root()
    need("unshare")
    image = sample_image("classic")
    mnt = tmp_path / "small"
    mnt.mkdir()
    result = liveimg("build", str(image), "-o", str(mnt / "out"), *OPTIONS, wrap=[*ON_TMPFS, str(mnt), "64m"])
    line = error_line(result.stderr)
    work = mnt / ".out.liveimg" / "work" / "LiveOS"
    assert re.fullmatch(
        rf"liveimg: error: not enough free space in {re.escape(str(work))}: 0\.06 GiB free, \d+\.\d\d GiB needed "
        r"\(free space or choose another --workdir\)",
        line,
    ), line
