"""Path resolution inside a guest root: the one place that decides where a guest path leads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveimg.errors import GuestPathEscapes, InvalidImage
from liveimg.fsview import MAX_SYMLINKS, Escape, FileStat, FileType, GuestTree, HostFS, MergedFS, resolve


@pytest.fixture
def root(fs: object) -> Path:
    base = Path("/guest")
    (base / "usr/lib").mkdir(parents=True)
    (base / "usr/lib/os-release").write_text("ID=test\n")
    (base / "etc").mkdir()
    os.symlink("../usr/lib/os-release", base / "etc/os-release")
    os.symlink("/usr/lib", base / "lib")  # absolute: re-rooted at the guest root
    os.symlink("usr/lib/os-release", base / "rel")
    # a host file the guest must never reach
    Path("/secret").write_text("host secret")
    return base


def tree(base: Path) -> GuestTree:
    return GuestTree(HostFS(base, "img"))


def test_relative_and_absolute_links_resolve_inside_the_root(root: Path) -> None:
    t = tree(root)
    assert t.resolve("/etc/os-release") == "/usr/lib/os-release"
    assert t.resolve("/lib/os-release") == "/usr/lib/os-release"
    assert t.resolve("lib/../lib/os-release") == "/usr/lib/os-release"  # .. applies to the link's target
    assert t.resolve("lib/../etc/os-release") is None  # /usr/etc: the kernel's semantics, not lexical
    assert t.resolve("/etc/os-release", follow=False) == "/etc/os-release"
    assert t.read_text("/etc/os-release") == "ID=test\n"
    assert t.is_symlink("/etc/os-release") and not t.is_symlink("/usr/lib/os-release")
    assert t.readlink("/etc/os-release") == "../usr/lib/os-release"
    assert t.is_file("/rel") and t.is_dir("/lib") and not t.is_file("/lib")


def test_absolute_target_never_reaches_the_host(root: Path) -> None:
    os.symlink("/secret", root / "abs")
    t = tree(root)
    assert t.resolve("/abs") is None
    assert not t.exists("/abs")  # the guest has no /secret; the host's is not read
    with pytest.raises(InvalidImage, match="does not exist"):
        t.read_text("/abs")


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("etc/escape", "../../secret"),
        ("etc/deep", "../../../../../../../secret"),
        ("usr/lib/up", "../../.."),
    ],
)
def test_escaping_links_are_errors_naming_path_and_link(root: Path, link: str, target: str) -> None:
    os.symlink(target, root / link)
    with pytest.raises(GuestPathEscapes) as info:
        tree(root).resolve("/" + link)
    message = str(info.value)
    assert f"/{link} -> {target}" in message and "outside the guest root" in message
    assert message.startswith("img: ")
    assert "\n" not in message


def test_escape_through_a_chain_of_links_names_the_last_link(root: Path) -> None:
    os.symlink("../b", root / "etc/a")
    os.symlink("../../secret", root / "b")
    with pytest.raises(GuestPathEscapes, match=r"/b -> \.\./\.\./secret"):
        tree(root).read_text("/etc/a")


def test_dotdot_in_the_path_itself_cannot_climb(root: Path) -> None:
    with pytest.raises(GuestPathEscapes, match="climbs above the guest root"):
        tree(root).resolve("/../secret")


def test_loops_and_self_links_are_bounded(root: Path) -> None:
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("self/x", root / "self")
    t = tree(root)
    with pytest.raises(InvalidImage, match=f"more than {MAX_SYMLINKS} symlinks"):
        t.resolve("/loop1")
    with pytest.raises(InvalidImage, match="symlinks"):
        t.exists("/self")


def test_missing_and_not_a_directory(root: Path) -> None:
    t = tree(root)
    assert t.resolve("/nope/x") is None
    assert t.resolve("/usr/lib/os-release/x") is None
    assert not t.exists("/usr/lib/os-release/x")
    assert t.listdir("/nope") == [] and t.listdir("/usr/lib/os-release") == []
    os.symlink("nowhere", root / "dangling")
    assert t.lexists("/dangling") and not t.exists("/dangling")


def test_reads_refuse_non_regular_and_oversized_files(root: Path) -> None:
    (root / "big").write_bytes(b"x" * 5000)
    t = tree(root)
    with pytest.raises(InvalidImage, match="more than the 4096 accepted"):
        t.read_bytes("/big", limit=4096)
    assert t.read_head("/big", 10) == b"x" * 10
    with pytest.raises(InvalidImage, match="not a regular file"):
        t.read_text("/usr")
    assert t.size("/big") == 5000
    assert t.stat("/usr") is not None and t.stat("/usr").type is FileType.DIR  # type: ignore[union-attr]


def test_listdir_is_sorted_and_bounded(root: Path) -> None:
    for i in range(20):
        (root / f"many/{i:02d}").parent.mkdir(exist_ok=True)
        (root / f"many/{i:02d}").write_text("")
    t = tree(root)
    assert t.listdir("/many") == [f"{i:02d}" for i in range(20)]
    with pytest.raises(InvalidImage, match="holds 20 entries"):
        t.listdir("/many", limit=10)


def test_subtree_reroots_absolute_links(root: Path) -> None:
    deploy = root / "ostree/deploy/os/deploy/abc.0"
    (deploy / "usr/lib").mkdir(parents=True)
    (deploy / "usr/lib/os-release").write_text("ID=deployed\n")
    (deploy / "etc").mkdir()
    os.symlink("/usr/lib/os-release", deploy / "etc/os-release")
    os.symlink("../../../x", deploy / "etc/up")
    os.symlink("ostree/deploy/os/deploy/abc.0", root / "current")
    sub = tree(root).subtree("/current")
    assert sub.root == "/ostree/deploy/os/deploy/abc.0"
    assert sub.read_text("/etc/os-release") == "ID=deployed\n"  # not the physical root's
    with pytest.raises(GuestPathEscapes):
        sub.resolve("/etc/up")  # inside the physical root, but outside the deployment
    with pytest.raises(InvalidImage, match="not a directory"):
        tree(root).subtree("/etc/os-release")


def test_merged_fs_routes_boot_and_hides_what_is_beneath(fs: object) -> None:
    root, boot = Path("/r"), Path("/b")
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "boot")  # hostile, but hidden by the /boot mount
    (boot / "loader.1/entries").mkdir(parents=True)
    os.symlink("loader.1", boot / "loader")
    os.symlink("../../../../secret", boot / "escape")
    t = GuestTree(MergedFS({"/": HostFS(root, "root"), "/boot": HostFS(boot, "boot")}, label="img"))
    assert t.resolve("/boot/loader") == "/boot/loader.1"
    assert t.is_dir("/boot/loader/entries")
    assert "boot" in t.listdir("/")
    assert t.listdir("/boot") == ["escape", "loader", "loader.1"]
    with pytest.raises(GuestPathEscapes, match=r"^img: "):
        t.resolve("/boot/escape")


def test_hostfs_refuses_to_read_a_symlink_directly(root: Path) -> None:
    with pytest.raises(InvalidImage, match="became a symlink"):
        HostFS(root, "img").read("/etc/os-release", 10)


# --- the one resolver, both policies -------------------------------------------------------


class _EmptyLinkFS:
    """A filesystem with a symlink whose target is empty (Linux cannot make one; a hostile image can)."""

    label = "hostile"

    def lstat(self, path: str) -> FileStat | None:
        return {
            "/": FileStat(FileType.DIR, 0),
            "/d": FileStat(FileType.DIR, 0),
            "/d/e": FileStat(FileType.SYMLINK, 0),
        }.get(path)

    def readlink(self, path: str) -> str:
        return ""

    def listdir(self, path: str) -> list[str]:
        return []

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        return b""


def test_refuse_and_clamp_differ_only_where_the_policy_says(root: Path) -> None:
    os.symlink("../../../../secret", root / "etc/up")
    fs = HostFS(root, "img")

    def both(path: str) -> tuple[list[str] | None, list[str] | None]:
        refused: list[str] | None
        try:
            refused = resolve(fs, "/", path, escape=Escape.REFUSE, label="img")
        except GuestPathEscapes:
            refused = ["<refused>"]
        return refused, resolve(fs, "/", path, escape=Escape.CLAMP, label="img")

    # inside the root: the same answer
    assert both("/lib/os-release") == (["usr", "lib", "os-release"], ["usr", "lib", "os-release"])
    # above the root: refused, or stopped at the root as a chroot does
    assert both("/etc/up") == (["<refused>"], ["secret"])
    assert both("/../../etc") == (["<refused>"], ["etc"])
    # missing names: the lookup ends; the path to create keeps them (and what follows)
    assert both("/lib/new/../x") == (None, ["usr", "lib", "x"])
    assert both("/rel/x") == (None, ["usr", "lib", "os-release", "x"])


@pytest.mark.parametrize("escape", list(Escape))
def test_loops_and_empty_targets_are_the_same_error_for_both_policies(root: Path, escape: Escape) -> None:
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    message = rf"^img: /loop1/x: too many symbolic links \(more than {MAX_SYMLINKS} symlinks: a loop\?\)$"
    with pytest.raises(InvalidImage, match=message):
        resolve(HostFS(root, "img"), "/", "/loop1/x", escape=escape, label="img")
    with pytest.raises(InvalidImage, match=r"^hostile: d/e/f: symlink /d/e has an empty target$"):
        resolve(_EmptyLinkFS(), "/", "d/e/f", escape=escape, label="hostile")
