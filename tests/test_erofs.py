"""The erofs rootfs type: what the image must have, the compressor choice, and mkfs.erofs for real."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
from pathlib import Path

import pytest

from liveimg import erofs
from liveimg.erofs import ErofsOptions, GuestSupport, HostTool
from liveimg.errors import InvalidImage, InvalidOptions, ToolError
from liveimg.fsview import GuestTree, HostFS
from tests.support import need

KVER = "6.1.0-50-amd64"
HELP_15 = """mkfs.erofs 1.5
usage: [options] FILE DIRECTORY
 --quiet               quiet execution (do not write anything to standard output.)

Available compressors are: lz4hc, lz4
"""
HELP_18 = """mkfs.erofs 1.8.4
Usage: mkfs.erofs [OPTIONS] FILE SOURCE(s)
Available compressors are:
  lz4
  lz4hc, [<compression_level>]
  lzma, [<compression_level>], [dictsize=<dictsize>]
  deflate, [<compression_level>]
  libdeflate, [<compression_level>]
  zstd, [<compression_level>]
"""
DMSQUASH_059 = 'case $fstype in\n    squashfs) SQUASHED=$livedev ;;\nesac\nmount -n -t squashfs -o ro "$L" /run\n'
DMSQUASH_NG = "case $fstype in\n    squashfs | erofs) SQUASHED=$livedev ;;\nesac\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_guest(
    root: Path,
    *,
    dmsquash: str | None = DMSQUASH_NG,
    version: str = "105",
    module: str | None = "erofs.ko.xz",
    builtin: bool = False,
    config: str | None = "CONFIG_EROFS_FS=m\nCONFIG_EROFS_FS_ZIP=y\n# CONFIG_EROFS_FS_ZIP_LZMA is not set\n",
) -> GuestTree:
    """A guest tree with just what guest_support reads."""
    dracut = root / "usr/lib/dracut"
    (dracut / "modules.d").mkdir(parents=True)
    (dracut / "dracut-version.sh").write_text(f"DRACUT_VERSION={version}\n")
    if dmsquash is not None:
        mod = dracut / "modules.d/90dmsquash-live"
        mod.mkdir()
        (mod / "module-setup.sh").write_text("depends() {\n    echo img-lib dm\n}\n")
        (mod / "dmsquash-live-root.sh").write_text(dmsquash)
    mods = root / f"usr/lib/modules/{KVER}"
    (mods / "kernel/fs").mkdir(parents=True)
    if module is not None:
        (mods / "kernel/fs/erofs").mkdir()
        (mods / "kernel/fs/erofs" / module).write_bytes(b"\x7fELF")
    (mods / "modules.builtin").write_text("kernel/fs/erofs/erofs.ko\n" if builtin else "kernel/fs/ext4/ext4.ko\n")
    if config is not None:
        (mods / "config").write_text(config)
    return GuestTree(HostFS(root))


def test_parse_help_of_erofs_utils_1_5_and_1_8() -> None:
    assert erofs.parse_help(HELP_15) == ("1.5", frozenset({"lz4", "lz4hc"}))
    version, compressors = erofs.parse_help(HELP_18)
    assert version == "1.8.4"
    assert compressors == {"lz4", "lz4hc", "lzma", "deflate", "zstd"}
    assert erofs.parse_help("garbage") == ("unknown", frozenset())


def test_the_host_tool_is_read_from_mkfs_erofs() -> None:
    need("mkfs.erofs")
    tool = erofs.host_tool()
    assert tool.version != "unknown" and tool.version[0].isdigit()
    assert {"lz4", "lz4hc"} <= tool.compressors


def test_dracut_ng_with_an_erofs_module_is_supported(tmp_path: Path) -> None:
    support = erofs.guest_support(make_guest(tmp_path), KVER)
    assert support == GuestSupport("105", True, True, frozenset({"lz4", "lz4hc"}))
    erofs.check_guest(support, KVER)


def test_dracut_059_is_refused_by_name(tmp_path: Path) -> None:
    support = erofs.guest_support(make_guest(tmp_path, dmsquash=DMSQUASH_059, version="059"), KVER)
    assert not support.dmsquash_erofs
    with pytest.raises(InvalidImage, match="dracut 059 cannot boot an erofs live image") as info:
        erofs.check_guest(support, KVER)
    assert "squashfs-ext4" in (info.value.hint or "")


def test_no_dmsquash_live_is_no_erofs_support(tmp_path: Path) -> None:
    support = erofs.guest_support(make_guest(tmp_path, dmsquash=None), KVER)
    assert not support.dmsquash_erofs


def test_a_kernel_without_erofs_is_refused(tmp_path: Path) -> None:
    support = erofs.guest_support(make_guest(tmp_path, module=None, config="CONFIG_EXT4_FS=y\n"), KVER)
    assert not support.kernel_erofs and support.kernel_compressors == frozenset()
    with pytest.raises(InvalidImage, match=f"kernel {KVER} has no erofs"):
        erofs.check_guest(support, KVER)


@pytest.mark.parametrize("how", ["builtin", "config"])
def test_erofs_built_in_or_configured_counts(tmp_path: Path, how: str) -> None:
    if how == "builtin":
        tree = make_guest(tmp_path, module=None, builtin=True, config=None)
    else:
        tree = make_guest(tmp_path, module=None, config="CONFIG_EROFS_FS=y\nCONFIG_EROFS_FS_ZIP_LZMA=y\n")
    support = erofs.guest_support(tree, KVER)
    assert support.kernel_erofs
    assert support.kernel_compressors == (None if how == "builtin" else frozenset({"lzma"}))


def test_a_config_link_out_of_the_guest_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "host-config"
    outside.write_text("CONFIG_EROFS_FS=y\n")
    root = tmp_path / "root"
    tree = make_guest(root, module=None, config=None)
    os.symlink(outside, root / f"usr/lib/modules/{KVER}/config")
    assert not erofs.guest_support(tree, KVER).kernel_erofs


HOST_NEW = HostTool("/usr/bin/mkfs.erofs", "1.8", frozenset({"lz4", "lz4hc", "lzma", "zstd", "deflate"}))
HOST_OLD = HostTool("/usr/bin/mkfs.erofs", "1.5", frozenset({"lz4", "lz4hc"}))


def _support(kernel: frozenset[str] | None) -> GuestSupport:
    return GuestSupport("105", True, True, kernel)


def test_xz_means_lzma_where_both_sides_have_it() -> None:
    assert erofs.choose_compressor("xz", _support(frozenset({"lz4", "lzma"})), HOST_NEW) == "lzma"
    assert erofs.choose_compressor("lz4", _support(None), HOST_OLD) == "lz4hc"
    assert erofs.choose_compressor("gzip", _support(None), HOST_NEW) == "deflate"


def test_xz_falls_back_to_lz4hc_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="liveimg.erofs"):
        assert erofs.choose_compressor("xz", _support(frozenset({"lz4", "lz4hc"})), HOST_NEW) == "lz4hc"
        assert erofs.choose_compressor("xz", _support(None), HOST_OLD) == "lz4hc"
    assert "CONFIG_EROFS_FS_ZIP_LZMA is not set" in caplog.text
    assert "mkfs.erofs 1.5" in caplog.text


def test_an_explicit_compressor_either_side_lacks_is_an_error() -> None:
    with pytest.raises(InvalidOptions, match=r"zstd is not supported by the host.s mkfs\.erofs 1\.5"):
        erofs.choose_compressor("zstd", _support(None), HOST_OLD)
    with pytest.raises(InvalidOptions, match="image's kernel"):
        erofs.choose_compressor("lzma", _support(frozenset({"lz4"})), HOST_NEW)
    with pytest.raises(InvalidOptions, match="'lzo' does not exist for erofs"):
        erofs.choose_compressor("lzo", _support(None), HOST_NEW)


def test_options_refuse_what_liveimg_sets_itself() -> None:
    with pytest.raises(InvalidOptions, match="'-zlzma' is not allowed"):
        ErofsOptions(extra_args=("-zlzma",))
    with pytest.raises(InvalidOptions, match="'dedupe' is not allowed"):
        ErofsOptions(extra_args=("dedupe",))
    with pytest.raises(InvalidOptions, match="unknown"):
        ErofsOptions(compressor="brotli")
    assert ErofsOptions.from_compress_args("lz4hc", ["-Ededupe", "-C 65536"]).extra_args == ("-Ededupe", "-C", "65536")


@pytest.fixture(scope="module")
def ext4_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sparse ext4 image with some files, made rootless by mkfs.ext4 -d."""
    need("mkfs.ext4")
    base = tmp_path_factory.mktemp("ext4")
    tree = base / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=test\n")
    (tree / "data.bin").write_bytes(os.urandom(3 << 20) + b"\0" * (5 << 20) + b"text " * 100000)
    image = base / "rootfs.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), "-L", "Anaconda", str(image)], check=True)
    os.utime(image, (1_750_000_000, 1_750_000_000))
    return image


def test_pack_file_round_trips_through_fsck_erofs(ext4_image: Path, tmp_path: Path) -> None:
    need("mkfs.erofs", "fsck.erofs", "blkid")
    dest = tmp_path / "live.erofs"
    result = erofs.pack_file(ext4_image, dest, "LiveOS/rootfs.img", ErofsOptions("lz4hc"))
    assert result.size == dest.stat().st_size and result.size < ext4_image.stat().st_size // 4
    assert sorted(os.listdir(tmp_path)) == ["live.erofs"], "a staging or temporary file was left behind"
    fstype = subprocess.run(
        ["blkid", "-s", "TYPE", "-o", "value", str(dest)], check=True, capture_output=True, text=True
    )
    assert fstype.stdout.strip() == "erofs"
    out = tmp_path / "x"
    subprocess.run(["fsck.erofs", f"--extract={out}", "--no-preserve", str(dest)], check=True, capture_output=True)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["LiveOS", "LiveOS/rootfs.img"]
    assert _sha256(out / "LiveOS/rootfs.img") == _sha256(ext4_image)


def test_pack_file_is_reproducible(ext4_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("mkfs.erofs")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = erofs.pack_file(ext4_image, tmp_path / "a/live.erofs")
    second = erofs.pack_file(ext4_image, tmp_path / "b/live.erofs")
    assert _sha256(first.path) == _sha256(second.path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    third = erofs.pack_file(ext4_image, tmp_path / "live.erofs")
    assert _sha256(third.path) != _sha256(first.path)


def test_a_failed_mkfs_erofs_leaves_nothing(ext4_image: Path, tmp_path: Path) -> None:
    need("mkfs.erofs")
    with pytest.raises(ToolError):
        erofs.pack_file(ext4_image, tmp_path / "live.erofs", options=ErofsOptions(extra_args=("--no-such-option",)))
    assert os.listdir(tmp_path) == []


def test_a_compressor_the_host_lacks_is_refused_before_running(
    ext4_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("mkfs.erofs")
    real = erofs.host_tool()
    missing = sorted(set(erofs.KERNEL_OPTION) - real.compressors)
    if not missing:  # a newer erofs-utils has them all (Debian 12's lacks lzma): pretend one is missing
        missing = ["lzma"]
        monkeypatch.setattr(
            erofs, "host_tool", lambda: dataclasses.replace(real, compressors=real.compressors - {"lzma"})
        )
    with pytest.raises(InvalidOptions, match=f"has no {missing[0]} compressor"):
        erofs.pack_file(ext4_image, tmp_path / "live.erofs", options=ErofsOptions(missing[0]))
    assert os.listdir(tmp_path) == []


def test_the_build_refuses_a_compression_erofs_lacks_before_reading_anything(tmp_path: Path) -> None:
    from liveimg.options import BuildOptions, RootfsType
    from liveimg.pipeline import build

    need("mkfs.erofs")
    options = BuildOptions(rootfs_type=RootfsType.EROFS, compression="lzo")
    with pytest.raises(InvalidOptions, match="'lzo' does not exist for erofs"):
        build(tmp_path / "no-such.raw", tmp_path / "out", options)
    assert list(tmp_path.iterdir()) == []
