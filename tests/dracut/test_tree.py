"""Guest paths resolved inside the guest, and deployments copied out of an ext4 image without mounting."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.dracut.tree import extract_tree, guest_mkdirs, resolve_in_root
from liveimg.errors import InvalidImage, InvalidOptions
from tests.support import need

DEPLOY = "/ostree/deploy/os/deploy/abc.0"


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "abs").symlink_to("/usr/lib")
    (root / "up").symlink_to("../../../../etc")
    (root / "usr/lib/back").symlink_to("../../..")
    assert resolve_in_root(root, "/lib/x") == root / "usr/lib/x"
    assert resolve_in_root(root, "abs/y") == root / "usr/lib/y"
    assert resolve_in_root(root, "/up/passwd") == root / "etc/passwd"  # .. stops at the root
    assert resolve_in_root(root, "/usr/lib/back/etc") == root / "etc"
    assert resolve_in_root(root, "/../../x") == root / "x"
    assert resolve_in_root(root, "/lib", follow_last=False) == root / "lib"


def test_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(InvalidImage, match="too many symbolic links"):
        resolve_in_root(tmp_path, "/a/x")


def test_mkdirs_follows_guest_links_but_stays_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "var").symlink_to("/outside")  # absolute: /outside of the guest, not of the host
    made = guest_mkdirs(root, "/var/tmp")
    assert made == root / "outside/tmp" and made.is_dir()
    (root / "file").write_text("x")
    with pytest.raises(InvalidImage, match="is not a directory"):
        guest_mkdirs(root, "/file/sub")


@pytest.fixture(scope="module")
def ostree_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("mkfs.ext4", "debugfs")
    src = tmp_path_factory.mktemp("src")
    deploy = src / DEPLOY.lstrip("/")
    for d in ("usr/bin", "boot", "etc", "var"):
        (deploy / d).mkdir(parents=True)
    (deploy / "usr/bin/dracut").write_text("#!/bin/sh\n")
    (deploy / "usr/bin/dracut").chmod(0o755)
    (deploy / "etc/shadow").write_text("root:*:1::::::\n")
    (deploy / "etc/shadow").chmod(0o600)
    (deploy / "bin").symlink_to("usr/bin")
    (deploy / "ostree").symlink_to("sysroot/ostree")
    (src / "boot/ostree/os-1234").mkdir(parents=True)
    (src / "boot/ostree/os-1234/vmlinuz-6.1.0").write_bytes(b"kernel" * 1000)
    (src / "boot/loader").symlink_to("loader.1")
    image = tmp_path_factory.mktemp("img") / "rootfs.img"
    runner.run(["mkfs.ext4", "-q", "-d", os.fspath(src), os.fspath(image), "16M"])
    return image


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_extract_an_ostree_deployment(ostree_image: Path, tmp_path: Path) -> None:
    before = _digest(ostree_image)
    tree = extract_tree(ostree_image, DEPLOY, tmp_path / "work")
    assert tree.root == tmp_path / "work/root" and tree.boot == tmp_path / "work/boot"
    assert (tree.root / "usr/bin/dracut").read_text() == "#!/bin/sh\n"
    assert os.access(tree.root / "usr/bin/dracut", os.X_OK)
    assert os.readlink(tree.root / "bin") == "usr/bin"
    assert os.readlink(tree.root / "ostree") == "sysroot/ostree"
    assert (tree.boot / "ostree/os-1234/vmlinuz-6.1.0").read_bytes() == b"kernel" * 1000
    assert os.readlink(tree.boot / "loader") == "loader.1"
    assert not (tree.root / "boot/ostree").exists()  # the deployment's own /boot stays empty
    assert _digest(ostree_image) == before


def test_extract_a_classic_root(ostree_image: Path, tmp_path: Path) -> None:
    tree = extract_tree(ostree_image, "/", tmp_path / "work")
    assert tree.boot is None
    assert (tree.root / "boot/ostree/os-1234/vmlinuz-6.1.0").is_file()
    assert (tree.root / DEPLOY.lstrip("/") / "usr/bin/dracut").is_file()


def test_extract_errors(ostree_image: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="is not a directory in"):
        extract_tree(ostree_image, "/ostree/deploy/os/deploy/nope.0", tmp_path / "a")
    with pytest.raises(InvalidOptions, match="does not exist"):
        extract_tree(tmp_path / "missing.img", "/", tmp_path / "b")
    with pytest.raises(InvalidOptions, match=r"contains '\.\.'"):
        extract_tree(ostree_image, "/ostree/../etc", tmp_path / "c")
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(InvalidImage, match=r"cannot read .*junk\.img as an ext4 filesystem: Bad magic number"):
        extract_tree(junk, "/", tmp_path / "d")
