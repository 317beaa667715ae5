"""The dracut stage on the real sample images: the image's own dracut, rootless, and what it built.

One dracut run per sample is shared by the asserts (session fixtures).  The codec is zstd at a
low level: the codecs themselves are tested in tests/dracut/test_compress.py and measured in
benchmarks/bench_dracut.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.dracut.compress import Compression
from liveimg.dracut.customize import append_cpio
from liveimg.dracut.initramfs import Initramfs
from liveimg.dracut.plan import DracutOptions, Where
from liveimg.dracut.sandbox import Bind, Tmpfs, run_in_sandbox
from liveimg.dracut.stage import Initrd, build_initramfs
from liveimg.dracut.tree import ExtractedTree, extract_tree
from liveimg.errors import InvalidImage, ToolError
from liveimg.manifest import sha256_file
from tests.integration.sample_rootfs import Sample, find_sample, rootfs_from_disk
from tests.support import NOBODY, need, need_root, opt_in, public_directory, run_python_as_nobody

FAST = DracutOptions(compression=Compression.ZSTD, level=3)
KARGS = ["rd.live.image", "root=live:http://10.0.2.100:8080/live-rootfs.squashfs.img"]


@dataclass(frozen=True)
class Rootfs:
    sample: Sample
    image: Path
    deployment: str
    digest: str

    @property
    def kver(self) -> str:
        return self.sample.kver


def _sample(variant: str) -> Sample:
    need("debugfs", "sfdisk", "bwrap")
    return find_sample(variant)


def _deployment(image: Path, sample: Sample) -> str:
    if sample.meta.get("variant") != "atomic":
        return "/"
    base = f"/ostree/deploy/{sample.meta['os_name']}/deploy"
    listing = runner.run(["debugfs", "-R", f"ls {base}", os.fspath(image)]).stdout
    names = sorted(set(re.findall(r"\b([0-9a-f]{64}\.\d+)\b(?!\.origin)", listing)))
    assert len(names) == 1, names
    return f"{base}/{names[0]}"


@pytest.fixture(scope="session")
def public_dir() -> Iterator[Path]:
    """Scratch space that user nobody can read too (pytest's tmp dirs are private to their owner)."""
    with public_directory("liveimg-dracut-it-") as path:
        yield path


def _rootfs(variant: str, public_dir: Path) -> Rootfs:
    sample = _sample(variant)
    image = rootfs_from_disk(sample.disk, public_dir / f"{variant}-rootfs.img")
    image.chmod(0o644)
    return Rootfs(sample, image, _deployment(image, sample), sha256_file(image))


@pytest.fixture(scope="session")
def atomic_rootfs(public_dir: Path) -> Rootfs:
    return _rootfs("atomic", public_dir)


@pytest.fixture(scope="session")
def atomic_initrd(atomic_rootfs: Rootfs, public_dir: Path) -> Initrd:
    out = public_dir / "atomic-out"
    out.mkdir()
    return build_initramfs(
        rootfs=atomic_rootfs.image,
        deployment=atomic_rootfs.deployment,
        kver=atomic_rootfs.kver,
        output=out / f"initramfs-{atomic_rootfs.kver}.img",
        options=FAST,
    )


@pytest.fixture(scope="session")
def atomic_tree(atomic_rootfs: Rootfs, public_dir: Path) -> ExtractedTree:
    return extract_tree(atomic_rootfs.image, atomic_rootfs.deployment, public_dir / "atomic-tree")


def _assert_live(path: Path, *, ostree: bool) -> None:
    with Initramfs(path) as ird:
        files = ird.files()
        names = {p.rsplit("/", 1)[-1] for p in files}
        for needed in ("dmsquash-live-root", "livenetroot", "curl"):
            assert needed in names, needed
        assert any("parse-livenet" in n for n in names) and any("parse-dmsquash-live" in n for n in names)
        # Only required on ostree images; a classic image's own dracut.conf.d may add it too
        # (the classic sample has ostree installed, whose dracut.conf.d asks for it).
        if ostree:
            assert "ostree-prepare-root" in names
            assert any(n.startswith("ostree-prepare-root") and n.endswith(".service") for n in names)


def test_atomic_initramfs_holds_the_live_modules(atomic_initrd: Initrd, atomic_rootfs: Rootfs) -> None:
    assert atomic_initrd.where is Where.SANDBOX
    assert atomic_initrd.kver == atomic_rootfs.kver
    assert {"dmsquash-live", "livenet", "ostree"} <= set(atomic_initrd.modules)
    assert atomic_initrd.path.stat().st_size == atomic_initrd.size
    with Initramfs(atomic_initrd.path) as ird:
        assert [s.compression for s in ird.segments] == ["zstd"]
    _assert_live(atomic_initrd.path, ostree=True)


def test_ntfs_module_is_left_out_with_the_reason(atomic_initrd: Initrd) -> None:
    assert [name for name, _ in atomic_initrd.left_out] == ["dmsquash-live-ntfs"]
    assert "ntfs-3g" in dict(atomic_initrd.left_out)["dmsquash-live-ntfs"]
    assert "dmsquash-live-ntfs" not in atomic_initrd.argv[4]


def test_dracut_log_is_kept(atomic_initrd: Initrd) -> None:
    text = atomic_initrd.log.read_text(errors="replace")
    assert "dmsquash-live" in text and len(text) > 10_000  # --debug traces every step


def test_rootfs_image_is_not_modified(atomic_initrd: Initrd, atomic_rootfs: Rootfs) -> None:
    assert sha256_file(atomic_rootfs.image) == atomic_rootfs.digest


def test_appended_cpio_read_back_by_lsinitrd_and_cpio(
    atomic_initrd: Initrd, atomic_tree: ExtractedTree, public_dir: Path
) -> None:
    need("cpio")
    shown = public_dir / "lsinitrd"
    shown.mkdir()
    custom = append_cpio(atomic_initrd.path, shown / "custom.img", kargs=KARGS)
    appended = shown / "appended.cpio"
    appended.write_bytes(custom.path.read_bytes()[custom.offset :])
    # The guest's own lsinitrd, run in the sandbox, on the appended archive ...
    log = shown / "log"
    script = "lsinitrd /run/x/appended.cpio; echo @@@; lsinitrd -f etc/cmdline.d/90-liveimg.conf /run/x/appended.cpio"
    mounts = [Tmpfs("/run"), Bind(shown, "/run/x"), Tmpfs("/var/tmp", "mode=1777")]
    result = run_in_sandbox(atomic_tree.root, ["/bin/sh", "-c", script], log_path=log, mounts=mounts)
    text = log.read_text()
    assert result.returncode == 0, text
    listing, content = text.split("@@@\n")
    assert "etc/cmdline.d/90-liveimg.conf" in listing
    assert content.strip() == " ".join(KARGS)
    # ... and on the whole file, whose main (compressed) archive it still lists.  (dracut 059's
    # lsinitrd decompresses everything after the first archive as one stream, so it cannot show
    # archives appended after a compressed one; the kernel and liveimg's reader can.)
    log.unlink()
    run_in_sandbox(atomic_tree.root, ["lsinitrd", "/run/x/custom.img"], log_path=log, mounts=mounts)
    assert "usr/sbin/livenetroot" in log.read_text()
    # GNU cpio on the appended archive, and liveimg's reader on the whole file.
    listing = runner.run(["cpio", "-t", "--quiet"], input=appended.read_bytes()).stdout.split()
    assert listing == ["etc/cmdline.d/90-liveimg.conf"]
    with Initramfs(custom.path) as ird:
        assert [s.compression for s in ird.segments] == ["zstd", "none"]
        assert ird.read("etc/cmdline.d/90-liveimg.conf").decode().split() == KARGS
        assert "usr/sbin/dmsquash-live-root" in ird.files()


def test_dracut_failure_reports_the_log_tail(atomic_tree: ExtractedTree, atomic_rootfs: Rootfs, tmp_path: Path) -> None:
    options = DracutOptions(compression=Compression.NONE, extra_args=("--add", "no-such-module"))
    with pytest.raises(ToolError, match=r"dracut failed with exit status 1: .*no-such-module") as info:
        build_initramfs(
            tree=atomic_tree.root,
            boot=atomic_tree.boot,
            kver=atomic_rootfs.kver,
            output=tmp_path / "initrd.img",
            options=options,
        )
    assert "log: " in str(info.value) and (tmp_path / "initrd.img.dracut.log").is_file()
    assert not (tmp_path / "initrd.img").exists()
    assert not list(tmp_path.glob(".liveimg-*"))


def test_unknown_kernel_version(atomic_tree: ExtractedTree, atomic_rootfs: Rootfs, tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match=f"no kernel modules for 9.9.9.*it has: {atomic_rootfs.kver}"):
        build_initramfs(tree=atomic_tree.root, boot=atomic_tree.boot, kver="9.9.9", output=tmp_path / "i.img")


def test_build_as_an_unprivileged_user(atomic_rootfs: Rootfs, public_dir: Path) -> None:
    """The whole stage -- extraction and dracut -- run by user nobody, without any capability."""
    need_root()  # to become user nobody
    need("setpriv")
    out = public_dir / "nobody-out"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    code = (
        "import pathlib, sys\n"
        "from liveimg.dracut.compress import Compression\n"
        "from liveimg.dracut.plan import DracutOptions\n"
        "from liveimg.dracut.stage import build_initramfs\n"
        f"r = build_initramfs(rootfs={os.fspath(atomic_rootfs.image)!r}, deployment={atomic_rootfs.deployment!r},\n"
        f"    kver={atomic_rootfs.kver!r}, output=pathlib.Path({os.fspath(out)!r}) / 'initrd.img',\n"
        "    options=DracutOptions(compression=Compression.NONE))\n"
        "print(r.where, r.dracut_seconds)\n"
    )
    proc = run_python_as_nobody(code, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("sandbox ")
    assert (out / "initrd.img").stat().st_uid == NOBODY
    _assert_live(out / "initrd.img", ostree=True)


@pytest.fixture(scope="session")
def classic_initrd(public_dir: Path) -> Initrd:
    rootfs = _rootfs("classic", public_dir)
    out = public_dir / "classic-out"
    out.mkdir()
    return build_initramfs(
        rootfs=rootfs.image, deployment="/", kver=rootfs.kver, output=out / f"initramfs-{rootfs.kver}.img", options=FAST
    )


def test_classic_initramfs_holds_the_live_modules(classic_initrd: Initrd) -> None:
    assert "ostree" not in classic_initrd.modules
    assert {"dmsquash-live", "livenet"} <= set(classic_initrd.modules)
    _assert_live(classic_initrd.path, ostree=False)


@opt_in("LIVEIMG_TEST_APPLIANCE")
def test_atomic_initramfs_in_the_appliance(atomic_rootfs: Rootfs, atomic_initrd: Initrd, public_dir: Path) -> None:
    out = public_dir / "appliance-out"
    out.mkdir()
    initrd = build_initramfs(
        rootfs=atomic_rootfs.image,
        deployment=atomic_rootfs.deployment,
        kver=atomic_rootfs.kver,
        output=out / "initrd.img",
        options=DracutOptions(compression=Compression.ZSTD, level=3, where=Where.APPLIANCE),
    )
    assert initrd.where is Where.APPLIANCE
    assert initrd.modules == atomic_initrd.modules and initrd.left_out == atomic_initrd.left_out
    _assert_live(initrd.path, ostree=True)
    assert sha256_file(atomic_rootfs.image) == atomic_rootfs.digest
    # Same dracut, same modules: the same files, but for what dracut decides from the machine it
    # runs on (the appliance is a QEMU guest, so dracut adds virtio-9p support there).
    with Initramfs(initrd.path) as a, Initramfs(atomic_initrd.path) as b:
        differ = set(a.files()) ^ set(b.files())
    assert all("virtfs" in p or "9p" in p for p in differ), sorted(differ)
