"""liveimg.outdir: OUTDIR as a transaction -- the lock, the stale staging, the one-step swap, the stage guard."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from liveimg import outdir as outdir_mod
from liveimg.errors import HostError, InvalidImage, InvalidOptions, OutdirBusy, ToolError
from liveimg.outdir import RENAME_EXCHANGE, RENAME_NOREPLACE, OutdirTransaction
from tests.support import need

REPO = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``: a file's bytes, None for a directory."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def litter(parent: Path, name: str = "out") -> list[str]:
    """What a build of ``parent/name`` may leave beside it, and must not."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.liveimg"))


def old_outdir(path: Path) -> dict[str, bytes | None]:
    (path / "sub").mkdir(parents=True)
    (path / "kernel").write_bytes(b"old kernel")
    (path / "sub" / "config").write_text("old config")
    return tree(path)


def spy_renames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record every renameat2 and os.rename the transaction makes (and let them happen)."""
    calls: list[tuple[str, int]] = []
    real_renameat2, real_rename = outdir_mod.renameat2, os.rename

    def renameat2(src: Path, dst: Path, flags: int) -> None:
        calls.append(("renameat2", flags))
        real_renameat2(src, dst, flags)

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(("rename", 0))
        real_rename(src, dst)

    monkeypatch.setattr(outdir_mod, "renameat2", renameat2)
    monkeypatch.setattr(outdir_mod.os, "rename", rename)
    return calls


# --- a new OUTDIR, and --force ------------------------------------------------------------


def test_a_new_outdir_is_put_in_place_with_noreplace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_renames(monkeypatch)
    txn = OutdirTransaction(tmp_path / "out")
    assert litter(tmp_path) == [".out.liveimg", ".out.liveimg.lock"]
    assert (tmp_path / ".out.liveimg.lock").read_text() == f"{os.getpid()}\n"
    (txn.out / "file").write_text("new")
    (txn.work / "scratch").write_text("tmp")
    txn.commit()
    txn.close()
    assert calls == [("renameat2", RENAME_NOREPLACE)]
    assert tree(tmp_path / "out") == {"file": b"new"}
    assert litter(tmp_path) == []
    assert txn.committed and not txn.replaced


def test_force_swaps_in_one_step_and_removes_the_old_tree_only_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    calls = spy_renames(monkeypatch)
    txn = OutdirTransaction(out, force=True)
    (txn.out / "file").write_text("new")
    new_inode = txn.out.stat().st_ino
    assert tree(out) == before  # untouched while the build runs
    txn.commit()
    assert calls == [("renameat2", RENAME_EXCHANGE)]  # one step: there is no moment without OUTDIR
    assert out.stat().st_ino == new_inode
    assert tree(out) == {"file": b"new"}
    assert tree(txn.out) == before  # the old tree is still there until the transaction ends
    txn.close()
    assert litter(tmp_path) == []
    assert txn.replaced


def test_an_existing_outdir_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    with pytest.raises(InvalidOptions) as excinfo:
        OutdirTransaction(out)
    assert str(excinfo.value) == f"{out} already exists (use --force to replace it)"
    assert tree(out) == before
    assert litter(tmp_path) == []


def test_an_outdir_made_during_the_build_is_not_clobbered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    txn = OutdirTransaction(out)
    (txn.out / "file").write_text("new")
    mine = old_outdir(out)  # someone else made it meanwhile
    with pytest.raises(HostError) as excinfo:
        txn.commit()
    txn.close()
    assert str(excinfo.value) == (
        f"{out} appeared while the build ran (not made by liveimg): it was left as it is, and the build discarded "
        "(use --force to replace it)"
    )
    assert tree(out) == mine
    assert litter(tmp_path) == []


def test_force_replaces_an_outdir_made_during_the_build(tmp_path: Path) -> None:
    out = tmp_path / "out"
    txn = OutdirTransaction(out, force=True)
    (txn.out / "file").write_text("new")
    old_outdir(out)
    txn.commit()
    txn.close()
    assert tree(out) == {"file": b"new"}
    assert litter(tmp_path) == []


def test_force_puts_the_new_outdir_in_place_when_the_old_one_went_away(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old_outdir(out)
    txn = OutdirTransaction(out, force=True)
    (txn.out / "file").write_text("new")
    for path in sorted(out.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    out.rmdir()
    txn.commit()
    txn.close()
    assert tree(out) == {"file": b"new"}
    assert not txn.replaced


@pytest.mark.parametrize("what", ["a file", "a symlink"])
def test_force_refuses_an_outdir_that_is_not_a_directory(tmp_path: Path, what: str) -> None:
    out = tmp_path / "out"
    if what == "a file":
        out.write_text("x")
    else:
        (tmp_path / "elsewhere").mkdir()
        out.symlink_to("elsewhere")
    with pytest.raises(InvalidOptions) as excinfo:
        OutdirTransaction(out, force=True)
    assert str(excinfo.value) == f"{out} exists and is not a directory"


def test_a_failed_build_leaves_no_trace(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    txn = OutdirTransaction(out, force=True)
    (txn.out / "half").write_bytes(b"\0" * 4096)
    txn.close()  # no commit
    assert tree(out) == before
    assert litter(tmp_path) == []


# --- filesystems without renameat2's flags -------------------------------------------------


def no_renameat2(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def unsupported(src: Path, dst: Path, flags: int) -> None:
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    monkeypatch.setattr(outdir_mod, "renameat2", unsupported)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS])
def test_without_renameat2_force_uses_two_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    out = tmp_path / "out"
    old_outdir(out)
    no_renameat2(monkeypatch, code)
    txn = OutdirTransaction(out, force=True)
    (txn.out / "file").write_text("new")
    txn.commit()
    assert tree(txn.staging_dir / "previous")["kernel"] == b"old kernel"  # removed only after
    txn.close()
    assert tree(out) == {"file": b"new"}
    assert litter(tmp_path) == []


def test_without_renameat2_a_new_outdir_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_renameat2(monkeypatch, errno.EINVAL)
    txn = OutdirTransaction(tmp_path / "out")
    (txn.out / "file").write_text("new")
    txn.commit()
    txn.close()
    assert tree(tmp_path / "out") == {"file": b"new"}


def test_without_renameat2_a_failed_second_rename_puts_outdir_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    no_renameat2(monkeypatch, errno.EINVAL)
    txn = OutdirTransaction(out, force=True)
    (txn.out / "file").write_text("new")
    real_rename = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src) == txn.out:
            raise OSError(errno.EIO, "Input/output error", str(src))
        real_rename(src, dst)

    monkeypatch.setattr(outdir_mod.os, "rename", rename)
    with pytest.raises(HostError) as excinfo:
        txn.commit()
    txn.close()
    assert str(excinfo.value) == f"cannot put the new {out} in place: Input/output error"
    assert tree(out) == before
    assert litter(tmp_path) == []


def test_a_build_killed_between_the_two_renames_gets_outdir_back_next_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    dead = OutdirTransaction(out, force=True)
    os.rename(out, dead.staging_dir / "previous")  # the first rename, then SIGKILL:
    os.close(dead._lock.fd)  # the process is gone: its lock is free, its files stay
    assert not out.exists()
    with caplog.at_level(logging.WARNING, logger="liveimg.outdir"):
        txn = OutdirTransaction(out, force=True)
    assert tree(out) == before
    assert caplog.messages == [
        f"put {out} back: a liveimg build (pid {os.getpid()}) was killed while replacing it",
        f"removed {txn.staging_dir}, left by a liveimg build (pid {os.getpid()}) that did not finish",
    ]
    txn.close()
    assert tree(out) == before


def test_renameat2_reports_errors_as_os_rename_does(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(FileExistsError):
        outdir_mod.renameat2(tmp_path / "a", tmp_path / "b", RENAME_NOREPLACE)
    with pytest.raises(FileNotFoundError):
        outdir_mod.renameat2(tmp_path / "a", tmp_path / "c", RENAME_EXCHANGE)
    outdir_mod.renameat2(tmp_path / "a", tmp_path / "b", RENAME_EXCHANGE)
    assert (tmp_path / "a" / "x").exists()


# --- the lock and stale staging ------------------------------------------------------------

HOLD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from liveimg.outdir import OutdirTransaction
    txn = OutdirTransaction(Path(sys.argv[1]), force=True, workdir=Path(sys.argv[3]) if sys.argv[3:] else None)
    (txn.out / "half").write_bytes(b"x" * 65536)
    (txn.work / "rootfs.img").write_bytes(b"x" * 65536)
    print("ready", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
    """
)


def hold(out: Path, mode: str, *workdir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out), mode, *map(str, workdir)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_a_second_build_of_the_same_outdir_is_refused_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    holder = hold(out, "hold")
    try:
        started = time.monotonic()
        with pytest.raises(OutdirBusy) as excinfo:
            OutdirTransaction(out, force=True)
        assert time.monotonic() - started < 1
        assert str(excinfo.value) == (
            f"another liveimg build (pid {holder.pid}) is writing {out} (wait for it to finish, or choose another "
            "OUTDIR)"
        )
        assert (tmp_path / ".out.liveimg" / "out" / "half").exists()  # the other build's files are left alone
    finally:
        holder.kill()
        holder.wait()
    assert tree(out) == before


def test_stale_staging_of_a_killed_build_is_removed_by_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    dead = hold(out, "die")
    dead.wait()
    assert litter(tmp_path) == [".out.liveimg", ".out.liveimg.lock"]
    with caplog.at_level(logging.WARNING, logger="liveimg.outdir"):
        txn = OutdirTransaction(out, force=True)
    assert caplog.messages == [
        f"removed {tmp_path / '.out.liveimg'}, left by a liveimg build (pid {dead.pid}) that did not finish"
    ]
    assert tree(txn.staging_dir) == {"out": None, "work": None}
    txn.close()
    assert tree(out) == before
    assert litter(tmp_path) == []


def test_the_work_directory_of_a_killed_build_is_removed_with_its_staging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    workdir = tmp_path / "scratch"
    workdir.mkdir()
    (workdir / "liveimg-work-not-noted").mkdir()  # another build's: not in the staging's note
    dead = hold(out, "die", workdir)
    dead.wait()
    [work] = [p for p in workdir.iterdir() if p.name != "liveimg-work-not-noted"]
    assert (work / "rootfs.img").exists()
    with caplog.at_level(logging.WARNING, logger="liveimg.outdir"):
        OutdirTransaction(out, workdir=workdir).close()
    assert caplog.messages == [
        f"removed {tmp_path / '.out.liveimg'} and {work}, left by a liveimg build (pid {dead.pid}) that did not finish"
    ]
    assert [p.name for p in workdir.iterdir()] == ["liveimg-work-not-noted"]
    assert litter(tmp_path) == []


RACE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from liveimg.errors import OutdirBusy
    from liveimg.outdir import OutdirTransaction
    go = Path(sys.argv[2])
    print("waiting", flush=True)
    while not go.exists():
        time.sleep(0.001)
    try:
        txn = OutdirTransaction(Path(sys.argv[1]), force=True)
    except OutdirBusy:
        print("busy")
        sys.exit(0)
    (txn.out / "winner").write_text(str(os.getpid()))
    time.sleep(3)
    txn.commit()
    txn.close()
    print("built")
    """
)


def test_newcomers_racing_for_a_stale_staging_directory(tmp_path: Path) -> None:
    """Six builds start at once over a killed build's staging: one builds, the others refuse, nothing is left."""
    out = tmp_path / "out"
    old_outdir(out)
    hold(out, "die").wait()
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, str(out), str(go)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(6)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n"
    go.touch()
    outputs = sorted(proc.communicate(timeout=60)[0].strip() for proc in procs)
    assert outputs == ["built"] + ["busy"] * 5
    assert list(out.iterdir()) == [out / "winner"]
    assert litter(tmp_path) == []


def test_the_lock_is_retried_when_its_holder_removed_it_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between our open and our flock, the holder ended (unlinking the file) and a third build took a new one."""
    out = tmp_path / "out"
    lock = tmp_path / ".out.liveimg.lock"
    real_flock: Callable[[int, int], None] = outdir_mod.fcntl.flock
    third: list[int] = []

    def flock(fd: int, operation: int) -> None:
        if not third:
            os.unlink(lock)  # the holder's release...
            third.append(os.open(lock, os.O_RDWR | os.O_CREAT, 0o644))  # ...and a third build's new file
        real_flock(fd, operation)

    monkeypatch.setattr(outdir_mod.fcntl, "flock", flock)
    txn = OutdirTransaction(out)
    held = os.fstat(txn._lock.fd)
    assert (held.st_dev, held.st_ino) == (lock.stat().st_dev, lock.stat().st_ino)  # the file that is there now
    txn.close()
    os.close(third[0])
    assert litter(tmp_path) == []


# --- refused before anything is built --------------------------------------------------------


def test_workdir_inside_outdir_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = old_outdir(out)
    with pytest.raises(InvalidOptions) as excinfo:
        OutdirTransaction(out, force=True, workdir=out / "work")
    assert str(excinfo.value) == (
        f"--workdir {out / 'work'} is inside OUTDIR {out}, which the build replaces (give a --workdir outside it)"
    )
    assert tree(out) == before
    assert litter(tmp_path) == []


def test_workdir_inside_a_new_outdir_is_refused_too(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with pytest.raises(InvalidOptions, match="is inside OUTDIR"):
        OutdirTransaction(out, workdir=out / "w")
    assert list(tmp_path.iterdir()) == []


def test_workdir_and_its_made_parents_are_removed_after_a_failure(tmp_path: Path) -> None:
    txn = OutdirTransaction(tmp_path / "out", workdir=tmp_path / "w" / "x")
    assert txn.work.parent == tmp_path / "w" / "x"
    txn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_keep_workdir_keeps_it_beside_outdir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    txn = OutdirTransaction(tmp_path / "out", keep_workdir=True)
    (txn.work / "rootfs.img").write_text("kept")
    txn.commit()
    with caplog.at_level(logging.WARNING, logger="liveimg.outdir"):
        txn.close()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".out.liveimg-work-")]
    assert len(kept) == 1 and (kept[0] / "rootfs.img").read_text() == "kept"
    assert caplog.messages == [f"work files kept in {kept[0]}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", kept[0].name])


def test_a_mount_point_is_refused(tmp_path: Path) -> None:
    """OUTDIR with a tmpfs on it, in a private user and mount namespace (nothing is mounted on the host)."""
    need("unshare")
    out = tmp_path / "out"
    out.mkdir()
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from liveimg.errors import InvalidOptions
        from liveimg.outdir import OutdirTransaction
        try:
            OutdirTransaction(Path(sys.argv[1]), force=True)
        except InvalidOptions as exc:
            print(exc)
        """
    )
    script = 'mount -t tmpfs -o size=1m liveimg-test "$1" && shift && exec "$@"'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(out),
         sys.executable, "-c", code, str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"{out} is a mount point: liveimg replaces OUTDIR with a rename, which a mount point cannot take "
        f"(give a directory inside it, e.g. -o {out}/live)\n"
    )
    assert litter(tmp_path) == []


def test_a_bind_mount_of_the_same_filesystem_is_a_mount_point(tmp_path: Path) -> None:
    need("unshare")
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    code = "import sys; from pathlib import Path; from liveimg.outdir import is_mount_point as m; " \
        "print(m(Path(sys.argv[1])), m(Path(sys.argv[2])))"  # fmt: skip
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(tmp_path / "src"),
         str(tmp_path / "out"), sys.executable, "-c", code, str(tmp_path / "out"), str(tmp_path / "src")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True False\n"


# --- the stage guard: a full disk, said as such -----------------------------------------------


def raise_in_stage(txn: OutdirTransaction, name: str, exc: BaseException) -> BaseException:
    with pytest.raises(BaseException) as excinfo, txn.stage(name):
        raise exc
    return excinfo.value


def test_enospc_in_the_work_directory_names_the_workdir(tmp_path: Path) -> None:
    txn = OutdirTransaction(tmp_path / "out", workdir=tmp_path / "w")
    err = raise_in_stage(txn, "rootfs", OSError(errno.ENOSPC, "No space left on device", str(txn.work / "x")))
    assert isinstance(err, HostError)
    assert str(err) == (
        f"no space left on device in {tmp_path / 'w'} during the rootfs stage "
        "(free space there or choose another --workdir)"
    )
    err = raise_in_stage(txn, "squashfs", OSError(errno.EDQUOT, "Disk quota exceeded", str(txn.out / "x")))
    assert str(err) == (
        f"no space left on device in {tmp_path} during the squashfs stage (free space there or choose another OUTDIR)"
    )
    txn.close()


def test_a_tool_that_ran_out_of_space_is_a_host_error(tmp_path: Path) -> None:
    txn = OutdirTransaction(tmp_path / "out")
    tool = ToolError(["mksquashfs", "a", "b"], 1, "Write failed because No space left on device")
    err = raise_in_stage(txn, "squashfs", tool)
    assert isinstance(err, HostError) and err.__cause__ is tool
    assert str(err) == (
        f"no space left on device in {tmp_path} during the squashfs stage "
        "(free space there, or build elsewhere: another OUTDIR, or --workdir for the temporary files)"
    )
    try:  # an InvalidImage made from it: the image is not to blame
        raise InvalidImage("the root filesystem is damaged") from tool
    except InvalidImage as exc:
        blamed = exc
    assert str(raise_in_stage(txn, "rootfs", blamed)).startswith(f"no space left on device in {tmp_path} during")
    txn.close()


def test_a_tool_failing_on_a_nearly_full_filesystem_is_a_host_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    txn = OutdirTransaction(tmp_path / "out")
    tool = ToolError(["e2fsck"], 8, "e2fsck: Cannot continue, aborting.")
    assert raise_in_stage(txn, "rootfs", tool) is tool  # plenty of space here: the tool's own failure
    monkeypatch.setattr(outdir_mod, "NEARLY_FULL", 1 << 62)  # any filesystem is "nearly full" now
    assert str(raise_in_stage(txn, "rootfs", tool)).startswith(f"no space left on device in {tmp_path} during")
    txn.close()


def test_a_stages_own_error_about_a_full_disk_is_said_the_same_way(tmp_path: Path) -> None:
    txn = OutdirTransaction(tmp_path / "out")
    try:  # as liveimg.dracut.output.replaced_whole says it
        raise OSError(errno.ENOSPC, "No space left on device", str(txn.out / ".initramfs.img.liveimg-tmp"))
    except OSError as exc:
        try:
            raise HostError(f"cannot write {txn.out}/initramfs.img: No space left on device") from exc
        except HostError as own:
            err = raise_in_stage(txn, "dracut", own)
    assert str(err).startswith(f"no space left on device in {tmp_path} during the dracut stage (")
    txn.close()


def test_other_errors_pass_through_the_stage_guard(tmp_path: Path) -> None:
    txn = OutdirTransaction(tmp_path / "out")
    for exc in (
        OSError(errno.EIO, "Input/output error"),
        HostError("not enough free space in /x"),
        InvalidImage("no root filesystem"),
        ValueError("a bug"),
        RuntimeError("not libguestfs"),
    ):
        assert raise_in_stage(txn, "rootfs", exc) is exc
    txn.close()


def test_a_libguestfs_runtime_error_becomes_a_tool_error(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile("def mount(): raise RuntimeError('mount: /dev/sda1: wrong fs type')", "/x/guestfs.py", "exec"),
         namespace)  # fmt: skip
    txn = OutdirTransaction(tmp_path / "out")
    with pytest.raises(ToolError) as excinfo, txn.stage("dracut"):
        namespace["mount"]()  # type: ignore[operator]
    assert str(excinfo.value) == "libguestfs failed during the dracut stage: mount: /dev/sda1: wrong fs type"
    txn.close()
