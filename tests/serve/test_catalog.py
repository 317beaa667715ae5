"""What `liveimg serve` serves, where, and the menus it writes (stand-in builds, real parsers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.serve.catalog import (
    IPXE_MENU,
    PXELINUX_MENU,
    Artifact,
    BiosLoader,
    build_name,
    load_builds,
    plan,
    write_tree,
)
from tests.bootparsers import grub_script_check, ipxe_commands, pxelinux_directives
from tests.serve.fakebuild import KVER, fake_build
from tests.support import need, need_file

BASE = "http://192.0.2.1:8080"
KERNEL = f"vmlinuz-{KVER}"
INITRAMFS = f"initramfs-{KVER}.img"
LIVE = "live-rootfs.squashfs.img"


@pytest.fixture(autouse=True)
def _loaders() -> None:
    need_file("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    need_file("/usr/lib/syslinux/modules/bios/menu.c32", "syslinux-common")


def two(tmp_path: Path) -> list[Path]:
    return [
        fake_build(tmp_path / "a" / "out", title="Old One", mtime=1_700_000_000),
        fake_build(tmp_path / "b" / "out", title="New One", efi=True, mtime=1_700_000_600),
    ]


def test_builds_are_named_safely_and_uniquely_newest_first(tmp_path: Path) -> None:
    builds = load_builds(two(tmp_path))
    # named in the order given, listed newest first
    assert [(b.name, b.live.title) for b in builds] == [("out-2", "New One"), ("out", "Old One")]
    assert build_name(Path("/x/my build; rm -rf"), []) == "my-build-rm--rf"
    assert build_name(Path("/x/..."), []) == "build"
    assert build_name(Path("/x/_x"), ["x"]) == "x-2"


def test_only_the_files_a_network_boot_needs_are_served(tmp_path: Path) -> None:
    out = fake_build(tmp_path / "out", efi=True, cloud_init=True)
    served = plan(load_builds([out]), BASE)
    files = {"vmlinuz", "initramfs", "live", "shimx64.efi", "grubx64.efi"}
    names = {KERNEL: "vmlinuz", INITRAMFS: "initramfs", LIVE: "live"}
    expected = {f"out/{n}" for n in [*names, "shimx64.efi", "grubx64.efi"]}
    expected |= {f"out/cloud-init/{n}" for n in ("meta-data", "user-data", "vendor-data")}
    expected |= {IPXE_MENU, f"out/{IPXE_MENU}"}
    assert set(served.http) == expected, files
    # the build's own configs (its URL), its manifest and anything else in OUTDIR are not
    (out / "secret").write_text("x")
    assert not any(k.endswith(("PXE_CONFIG", "manifest.json", "secret", "grub.cfg")) for k in served.http)
    artifact = served.http[f"out/{LIVE}"]
    assert isinstance(artifact, Artifact) and artifact.path == out / LIVE
    assert artifact.sha256 == json.loads((out / "manifest.json").read_text())["artifacts"][LIVE]["sha256"]


@pytest.mark.parametrize("change", ["size", "bytes", "symlink", "missing"])
def test_an_outdir_changed_since_its_build_is_refused(tmp_path: Path, change: str) -> None:
    out = fake_build(tmp_path / "out")
    live = out / LIVE
    if change == "size":
        live.write_bytes(live.read_bytes() + b"x")
    elif change == "bytes":
        data = bytearray(live.read_bytes())
        data[5] ^= 1
        live.write_bytes(bytes(data))
    elif change == "symlink":
        (tmp_path / "elsewhere").write_bytes(live.read_bytes())
        live.unlink()
        live.symlink_to(tmp_path / "elsewhere")
    else:
        (out / "boot.ipxe").unlink()
        (out / INITRAMFS).unlink()
    with pytest.raises((InvalidOptions, InvalidImage)) as err:
        load_builds([out])
    assert str(out) in str(err.value)


def test_an_nbd_build_and_a_repeated_outdir_are_refused(tmp_path: Path) -> None:
    nbd = fake_build(tmp_path / "nbd", url="nbd://192.0.2.1")
    with pytest.raises(InvalidOptions, match="NBD"):
        load_builds([nbd])
    out = fake_build(tmp_path / "out")
    with pytest.raises(InvalidOptions, match="twice"):
        load_builds([out, tmp_path / "x" / ".." / "out"])
    with pytest.raises(InvalidOptions, match="nothing to serve"):
        load_builds([])


def test_the_pxelinux_menu_lists_every_build_newest_first_and_default(tmp_path: Path) -> None:
    served = plan(load_builds(two(tmp_path)), BASE, kernel_args=("console=ttyS0,115200", "quiet=no"))
    text = served.tftp[PXELINUX_MENU]
    assert isinstance(text, str)
    directives = pxelinux_directives(text)
    assert ("ui", "menu.c32") in directives and ("default", "out-2") in directives
    labels = [v for k, v in directives if k == "label"]
    kernels = [v for k, v in directives if k == "kernel"]
    appends = [v.split() for k, v in directives if k == "append"]
    assert labels == ["out-2", "out"] and kernels == [f"out-2/{KERNEL}", f"out/{KERNEL}"]
    assert appends[0][0] == f"initrd=out-2/{INITRAMFS}"
    assert f"root=live:{BASE}/out-2/{LIVE}" in appends[0] and f"root=live:{BASE}/out/{LIVE}" in appends[1]
    assert "console=ttyS0,115200" in appends[0] and "quiet=no" in appends[0] and "quiet" not in appends[0]
    # everything pxelinux loads is in the TFTP tree
    for name in ("pxelinux.0", "ldlinux.c32", "menu.c32", "libutil.c32", f"out/{KERNEL}", f"out-2/{INITRAMFS}"):
        assert name in served.tftp
    assert served.bios_file == "pxelinux.0"
    # one build: no menu module, the entry boots at once
    single = plan(load_builds([tmp_path / "a" / "out"]), BASE).tftp[PXELINUX_MENU]
    assert isinstance(single, str) and "ui" not in dict(pxelinux_directives(single))


def test_the_ipxe_menu_chooses_a_build_over_http(tmp_path: Path) -> None:
    builds = load_builds(two(tmp_path))
    text = plan(builds, BASE).http[IPXE_MENU]
    assert isinstance(text, str)
    commands = ipxe_commands(text)
    assert commands[0] == ["menu", "liveimg", "serve"]
    assert [c[1] for c in commands if c[0] == "item"] == ["b0", "b1"]
    assert any(c[:3] == ["choose", "--default", "b0"] for c in commands)
    kernels = [c[1] for c in commands if c[0] == "kernel"]
    assert kernels == [f"{BASE}/out-2/{KERNEL}", f"{BASE}/out/{KERNEL}"]
    assert text.index(":b0") < text.index(f"{BASE}/out-2/{KERNEL}") < text.index(":b1")
    # one build's own script, to pin a machine to it
    single = plan(builds, BASE).http[f"out-2/{IPXE_MENU}"]
    assert isinstance(single, str) and "menu" not in single and f"{BASE}/out-2/{INITRAMFS}" in single


def test_uefi_clients_get_the_newest_uefi_chain_and_a_grub_menu_of_every_build(tmp_path: Path) -> None:
    need("grub-script-check")
    builds = load_builds(two(tmp_path))
    served = plan(builds, BASE)
    assert served.uefi_file == "shimx64.efi" and served.uefi_build == "out-2"
    for config in ("grub/grub.cfg", "grub.cfg"):
        text = served.tftp[config]
        assert isinstance(text, str)
        cfg = tmp_path / "grub.cfg"
        cfg.write_text(text)
        grub_script_check(cfg)
        assert text.count("menuentry") == 2
        assert f"linux /out-2/{KERNEL}" in text and f"initrd /out/{INITRAMFS}" in text
        assert text.index("/out-2/") < text.index("/out/")  # the newest is entry 0, the default
    # a GRUB with http: the files over HTTP
    http = plan(load_builds([fake_build(tmp_path / "h", efi=True, efi_http=True)]), BASE).tftp["grub.cfg"]
    assert isinstance(http, str) and f"linux '(http,192.0.2.1:8080)/h/{KERNEL}'" in http
    # no build with a UEFI chain: no UEFI boot file
    assert plan(load_builds([tmp_path / "a" / "out"]), BASE).uefi_file is None


def test_a_seed_is_named_at_the_serve_url_and_the_ipxe_loader_is_in_the_tree(tmp_path: Path) -> None:
    need_file("/usr/lib/ipxe/undionly.kpxe", "ipxe")
    out = fake_build(tmp_path / "out", cloud_init=True)
    served = plan(load_builds([out]), BASE, loader=BiosLoader.IPXE)
    assert f"ds=nocloud-net;s={BASE}/out/cloud-init/" in served.kernel_args["out"]
    assert served.bios_file == "undionly.kpxe" and "undionly.kpxe" in served.tftp


def test_a_bad_kernel_arg_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptions):
        plan(load_builds([fake_build(tmp_path / "out")]), BASE, kernel_args=("a\nDEFAULT evil",))


def test_the_tftp_tree_is_readable_by_all_and_links_the_builds_files(tmp_path: Path) -> None:
    builds = load_builds(two(tmp_path))
    served = plan(builds, BASE)
    root = tmp_path / "tree"
    root.mkdir(mode=0o700)
    write_tree(served, root)
    assert root.stat().st_mode & 0o777 == 0o755
    for rel in served.tftp:
        path = root / rel
        assert path.is_file() and path.stat().st_mode & 0o777 == 0o644, rel
    kernel = root / builds[0].name / KERNEL
    assert os.path.samefile(kernel, builds[0].outdir / KERNEL)  # the same inode: nothing copied
    assert (root / "pxelinux.cfg" / "default").read_text() == served.tftp[PXELINUX_MENU]
    assert not (root / "out" / LIVE).exists()  # the live file goes over HTTP only
