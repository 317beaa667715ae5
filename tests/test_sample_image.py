"""Unit tests of the sample builder's own pieces (scripts/sample_image.py), with the real small tools.

The full builds are exercised by tests/integration/test_samples.py and the e2e boots.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from liveimg import run as runner
from tests import support

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sample_image.py"


@pytest.fixture(scope="module")
def si() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sample_image", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["sample_image"] = module
    spec.loader.exec_module(module)
    return module


def test_keys_are_short_hex_and_stable(si: ModuleType) -> None:
    assert len(si.builder_key()) == 16 and int(si.builder_key(), 16) >= 0
    assert si.builder_key() == si.builder_key()
    assert si.base_key() == si.base_key() != si.builder_key()


def test_output_file_leaves_nothing_on_failure(si: ModuleType, tmp_path: Path) -> None:
    dest = tmp_path / "atomic.raw"
    with pytest.raises(RuntimeError), si.output_file(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("build failed")
    assert list(tmp_path.iterdir()) == []
    with si.output_file(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["atomic.raw"]
    assert dest.read_bytes() == b"whole"


def test_flocked_serialises(si: ModuleType, tmp_path: Path) -> None:
    lock = tmp_path / ".x.lock"
    order: list[str] = []

    def second() -> None:
        with si.flocked(lock):
            order.append("second")

    with si.flocked(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first")
    thread.join()
    assert order == ["first", "second"]


def test_prune_keeps_the_current_key_and_keys_in_use(si: ModuleType, tmp_path: Path) -> None:
    current, old, busy = "0" * 16, "1" * 16, "2" * 16
    for key in (current, old, busy):
        (tmp_path / key).mkdir()
        (tmp_path / key / "atomic.raw").write_bytes(b"x")
    (tmp_path / "debs").mkdir()
    dead_work = tmp_path / current / ".work-atomic-999999999-abc"
    dead_work.mkdir()
    live_work = tmp_path / current / f".work-atomic-{os.getpid()}-abc"
    live_work.mkdir()
    # another process still uses the "busy" key
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f, fcntl.LOCK_SH); "
         "print('locked', flush=True); time.sleep(30)", str(tmp_path / busy / ".inuse")],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        si.prune(tmp_path, current)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([current, busy, "debs"])
    assert not dead_work.exists() and live_work.exists()


def test_disk_assembly_with_real_tools(si: ModuleType, tmp_path: Path) -> None:
    support.need("mkfs.ext4", "sfdisk", "debugfs", "dd")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("liveimg-sample\n")
    (tree / "etc/link").symlink_to("hostname")
    with open(tmp_path / "build.log", "w") as log:
        r = si.Runner(log)
        fs = tmp_path / "root.ext4"
        si.make_ext4(r, fs, tree, label="root", fs_uuid="11111111-2222-3333-4444-555555555555", size_mib=64)
        disk = tmp_path / "disk.raw"
        layout = si.assemble_disk(
            r, disk, [si.Partition("biosboot", si.GPT_BIOS_BOOT, 1), si.Partition("root", si.GPT_ROOT_X86_64, 64, fs)]
        )
    assert layout == [
        {"number": 1, "name": "biosboot", "offset": 1 << 20, "size": 1 << 20},
        {"number": 2, "name": "root", "offset": 2 << 20, "size": 64 << 20},
    ]
    assert disk.stat().st_size == 67 << 20
    assert disk.stat().st_blocks * 512 < 20 << 20  # sparse
    table = json.loads(runner.run(["sfdisk", "--json", disk]).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    parts = table["partitions"]
    assert [(p["start"], p["size"], p["type"], p["name"]) for p in parts] == [
        (2048, 2048, si.GPT_BIOS_BOOT, "biosboot"),
        (4096, 64 * 2048, si.GPT_ROOT_X86_64, "root"),
    ]
    image = f"{disk}?offset={2 << 20}"
    assert runner.run(["debugfs", "-R", "cat /etc/hostname", image]).stdout == "liveimg-sample\n"
    stats = runner.run(["dumpe2fs", "-h", image]).stdout
    assert "Filesystem volume name:   root" in stats
    assert "11111111-2222-3333-4444-555555555555" in stats


def test_append_cpio_keeps_the_initramfs_and_adds_an_archive(si: ModuleType, tmp_path: Path) -> None:
    support.need("cpio", "gzip")
    original = b"\x1f\x8b" + b"compressed initramfs" + b"\x00" * 3  # 25 bytes: not 4-aligned
    initramfs = tmp_path / "initramfs.img"
    initramfs.write_bytes(original)
    with open(tmp_path / "build.log", "w") as log:
        si.append_cpio(si.Runner(log), initramfs, tmp_path, {"etc/generation": "2\n"})
    data = initramfs.read_bytes()
    assert data.startswith(original)
    tail = data[len(original) :]
    assert tail[:3] == b"\0\0\0" and tail[3:9] == b"070701"  # padded to 4 bytes, then a newc archive
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=tail[3:], capture_output=True, check=True)
    assert listing.stdout.decode().split() == ["etc", "etc/generation"]


def test_make_ostree_tree_layout(si: ModuleType, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    kver = "6.1.0-50-amd64"
    for d in ("boot", "etc", "var/lib/dpkg", "home", "root", "opt", "srv", "mnt", "media", "dev", "proc", "sys",
              "run", "tmp", f"usr/lib/modules/{kver}", "usr/lib/tmpfiles.d"):  # fmt: skip
        (tree / d).mkdir(parents=True)
    (tree / f"usr/lib/modules/{kver}/modules.dep").write_text("")
    (tree / f"boot/vmlinuz-{kver}").write_bytes(b"kernel")
    (tree / f"boot/initrd.img-{kver}").write_bytes(b"initrd")
    (tree / f"boot/System.map-{kver}").write_bytes(b"map")
    (tree / "etc/hostname").write_text("h\n")
    (tree / "root/.bashrc").write_text("")
    (tree / "vmlinuz").symlink_to(f"boot/vmlinuz-{kver}")
    si.make_ostree_tree(tree, kver)
    assert (tree / f"usr/lib/modules/{kver}/vmlinuz").read_bytes() == b"kernel"
    assert (tree / f"usr/lib/modules/{kver}/initramfs.img").read_bytes() == b"initrd"
    assert list((tree / "boot").iterdir()) == []
    assert not (tree / "etc").exists() and (tree / "usr/etc/hostname").read_text() == "h\n"
    assert (tree / "usr/etc/machine-id").read_text() == ""
    assert (tree / "usr/etc/fstab").read_text() == ""
    assert list((tree / "var").iterdir()) == []
    assert os.readlink(tree / "root") == "var/roothome" and os.readlink(tree / "home") == "var/home"
    assert os.readlink(tree / "ostree") == "sysroot/ostree" and (tree / "sysroot").is_dir()
    assert not (tree / "vmlinuz").is_symlink()
    assert "d /var/roothome" in (tree / "usr/lib/tmpfiles.d/liveimg-sample-var.conf").read_text()
    assert si.kernel_version(tree) == kver


def _apt_like_tree(root: Path) -> None:
    """The files of Debian's apt packages that the update sample changes, with stand-in content."""
    for rel, size in (("usr/bin/apt", 9000), ("usr/bin/apt-get", 5000), ("usr/lib/apt/apt-helper", 100),
                      ("usr/lib/apt/methods/http", 20000), ("usr/lib/apt/methods/ftp", 3000),
                      ("usr/lib/apt/solvers/dump", 10),
                      ("usr/lib/x86_64-linux-gnu/libapt-private.so.0.0.0", 12000),
                      ("usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0", 30000)):  # fmt: skip
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(i % 251 for i in range(size)))
        path.chmod(0o755)
    (root / "usr/lib/apt/methods/https").symlink_to("http")
    (root / "usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0").symlink_to("libapt-pkg.so.6.0.0")
    (root / "usr/lib/x86_64-linux-gnu/libapt-private.so.0.0").symlink_to("libapt-private.so.0.0.0")


def test_apply_update_rewrites_renames_adds_and_removes(si: ModuleType, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _apt_like_tree(tree)
    before = {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file() and not p.is_symlink()}
    changes = si.apply_update(tree)
    lib = tree / "usr/lib/x86_64-linux-gnu"
    assert not (lib / "libapt-pkg.so.6.0.0").exists() and not (tree / "usr/lib/apt/methods/ftp").exists()
    assert os.readlink(lib / "libapt-pkg.so.6.0") == "libapt-pkg.so.6.0.1"
    assert (lib / "libapt-pkg.so.6.0.1").stat().st_mode & 0o777 == 0o755
    assert os.readlink(tree / "usr/lib/apt/methods/https") == "http"
    # Every 4 KiB page of a rewritten file differs from the old one; sizes stay close.
    rewritten = ["usr/bin/apt", "usr/bin/apt-get", "usr/lib/apt/apt-helper", "usr/lib/apt/methods/http",
                 "usr/lib/apt/solvers/dump", "usr/lib/x86_64-linux-gnu/libapt-private.so.0.0.0"]  # fmt: skip
    assert sorted(c["path"] for c in changes["changed"]) == sorted("/" + r for r in rewritten)
    for rel in rewritten:
        old, new = before[rel], (tree / rel).read_bytes()
        assert 0 < len(new) - len(old) < 100
        for offset in range(0, len(old), 4096):
            assert old[offset : offset + 16] != new[offset : offset + 16], (rel, offset)
    added = {a["path"]: a["bytes"] for a in changes["added"]}
    assert added.keys() == {
        "/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.1",
        "/usr/share/doc/apt/changelog.liveimg-update",
    }
    assert added["/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.1"] == (lib / "libapt-pkg.so.6.0.1").stat().st_size
    assert {d["path"]: d["bytes"] for d in changes["removed"]} == {
        "/usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0": 30000, "/usr/lib/apt/methods/ftp": 3000}  # fmt: skip
    assert changes["changed_bytes"] == sum((tree / r).stat().st_size for r in rewritten)
    assert changes["removed_bytes"] == 33000
    assert changes["added_bytes"] == sum(added.values())
    # Deterministic: a second tree gets the same bytes.
    again = tmp_path / "again"
    _apt_like_tree(again)
    assert si.apply_update(again) == changes
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert (again / path.relative_to(tree)).read_bytes() == path.read_bytes()


def test_apply_update_refuses_a_tree_without_the_files(si: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    with pytest.raises(si.BuildError, match=r"usr/lib/apt/methods/ftp matches no file"):
        si.apply_update(tmp_path)


def test_update_is_a_variant(si: ModuleType) -> None:
    assert "atomic-update" in si.VARIANTS
    assert si.parse_args(["--variant", "atomic-update"]).variant == "atomic-update"


def test_mark_generation_reports_the_old_and_new_size(si: ModuleType, tmp_path: Path) -> None:
    path = "/usr/lib/liveimg-sample/generation"
    assert si.mark_generation(tmp_path, 1) == (path, 0, 2)
    assert si.mark_generation(tmp_path, 2) == (path, 2, 2)
    assert (tmp_path / path.lstrip("/")).read_text() == "2\n"


def test_update_script_is_valid_shell(si: ModuleType) -> None:
    subprocess.run(["sh", "-n", "-c", si.UPDATE_SCRIPT], check=True)


def test_unpacked_trees_have_the_masked_units(si: ModuleType, tmp_path: Path) -> None:
    """Every variant starts from unpack_base: the units a TCG boot need not pay for are masked there,
    also over a unit file the base has in /etc."""
    base_tree = tmp_path / "base"
    (base_tree / "etc/systemd/system").mkdir(parents=True)
    (base_tree / "etc/systemd/system" / si.MASKED_UNITS[0]).write_text("[Unit]\n")
    (base_tree / "etc/hostname").write_text("x\n")
    base = tmp_path / "base.tar"
    subprocess.run(["tar", "-C", base_tree, "-cf", base, "."], check=True)
    tree = tmp_path / "tree"
    with open(tmp_path / "log", "w") as log:
        si.unpack_base(si.Runner(log), base, tree)
    assert si.MASKED_UNITS == ("e2scrub_reap.service",)
    for unit in si.MASKED_UNITS:
        assert os.readlink(tree / "etc/systemd/system" / unit) == "/dev/null"
    assert (tree / "etc/hostname").read_text() == "x\n"
