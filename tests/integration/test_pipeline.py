"""`liveimg build` on bad input and bad places: one line, a non-zero exit, OUTDIR untouched; and reproducibility."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from liveimg import rootfs
from liveimg.guest import open_guest
from liveimg.manifest import sha256_file
from liveimg.rootfs import RootfsOptions
from liveimg.squashfs import SquashfsOptions, write_squashfs_file
from tests.samples import sample_image
from tests.support import guestfs_env, need, need_root

REPO = Path(__file__).resolve().parents[2]


def liveimg(*args: str, user: str | None = None, wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "liveimg", "--progress", "none", *args]  # the error line alone on stderr
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    if wrap is not None:
        cmd = [*wrap, *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIVEIMG_ACCEL": "tcg"}
    if user is not None:  # the test run's build cache is root's: another user has its own default one
        env.pop("LIVEIMG_CACHE", None)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=1800)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("liveimg: error: ")
    return lines[0].removeprefix("liveimg: error: ")


def test_missing_image(tmp_path: Path) -> None:
    message = one_line_error(liveimg("build", str(tmp_path / "nope.raw"), "-o", str(tmp_path / "out")))
    assert message == f"{tmp_path / 'nope.raw'}: no such file (give the path of a disk image)"
    assert not (tmp_path / "out").exists()


def test_not_a_disk_image(tmp_path: Path) -> None:
    need("qemu-img")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a disk image\n" * 100)
    message = one_line_error(liveimg("build", str(text), "-o", str(tmp_path / "out")))
    assert str(text) in message and "disk image" in message
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # nothing left behind


def test_existing_outdir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    message = one_line_error(liveimg("build", str(image), "-o", str(out)))
    assert message == f"{out} already exists (use --force to replace it)"
    assert (out / "keep").read_text() == "mine"


def test_unwritable_outdir(tmp_path: Path) -> None:
    need_root()
    need("setpriv")
    base = Path("/var/tmp") / f"liveimg-test-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        base.chmod(0o755)
        image = base / "disk.raw"
        image.write_bytes(b"\0" * 4096)
        image.chmod(0o644)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        message = one_line_error(liveimg("build", str(image), "-o", str(locked / "out"), user="65534"))
        assert message == f"cannot write to {locked}: permission denied"
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_no_space_in_outdir(tmp_path: Path) -> None:
    """OUTDIR on a 64 MiB tmpfs, mounted in a private mount namespace (not on the host)."""
    need_root()
    need("unshare")
    image = sample_image("atomic")
    script = 'mkdir -p "$1" && mount -t tmpfs -o size=64m liveimg-test "$1" && shift && exec "$@"'
    out = tmp_path / "small"
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(out)]
    result = liveimg("build", str(image), "-o", str(out / "out"), wrap=cmd)
    message = one_line_error(result)
    assert message.startswith(f"not enough free space in {out}/"), message
    assert "free space or choose another --workdir" in message


def test_image_without_dracut_live(tmp_path: Path) -> None:
    """A copy of the classic sample with dracut-live's modules removed: refused before the long stages."""
    need_root()
    need("guestfish", "cp")
    image = tmp_path / "no-dracut-live.raw"
    subprocess.run(["cp", "--sparse=always", str(sample_image("classic")), str(image)], check=True)
    script = "glob rm-rf /usr/lib/dracut/modules.d/*dmsquash-live*\nglob rm-rf /usr/lib/dracut/modules.d/*livenet*\n"
    done = subprocess.run(["guestfish", "--rw", "-a", str(image), "-i"], input=script, text=True,
                          capture_output=True, env={**os.environ, **guestfs_env()}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    message = one_line_error(liveimg("build", str(image), "-o", str(tmp_path / "out")))
    assert "dmsquash-live" in message and "dracut-live" in message, message
    assert not (tmp_path / "out").exists()


def test_erofs_is_refused_where_the_images_dracut_cannot_mount_it(tmp_path: Path) -> None:
    """Debian 12's dracut 059 mounts only squashfs: the erofs type is refused before the rootfs stage."""
    need_root()
    need("mkfs.erofs")
    result = liveimg("build", str(sample_image("classic")), "-o", str(tmp_path / "out"), "--rootfs-type", "erofs",
                     "--progress", "json")  # fmt: skip
    message = one_line_error(result)
    assert "dracut 059" in message and "cannot boot an erofs live image" in message, message
    assert "squashfs-ext4" in message, message
    assert '"stage": "rootfs"' not in result.stdout, "refused only after the rootfs stage had started"
    assert sorted(os.listdir(tmp_path)) == []


def test_rootfs_and_squashfs_are_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds of the same image with the same SOURCE_DATE_EPOCH: the same bytes."""
    need_root()
    need("debugfs", "e2fsck", "resize2fs")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    image = sample_image("atomic")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with open_guest(image) as guest:
        info = guest.inspect()
        first = rootfs.build_rootfs(guest, info, tmp_path / "a.img", RootfsOptions(), workdir=scratch)
        second = rootfs.build_rootfs(guest, info, tmp_path / "b.img", RootfsOptions(), workdir=scratch)
    assert sha256_file(first.path) == sha256_file(second.path)
    options = SquashfsOptions(comp="zstd", Xcompression_level=3)
    sq1 = write_squashfs_file(first.path, tmp_path / "a.sqfs", "LiveOS/rootfs.img", options)
    sq2 = write_squashfs_file(second.path, tmp_path / "b.sqfs", "LiveOS/rootfs.img", options.replace(processors=1))
    assert sha256_file(sq1.path) == sha256_file(sq2.path)
