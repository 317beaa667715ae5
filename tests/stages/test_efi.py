"""The efi stage in a whole build (stand-ins): the chain found in the preflight, copied out of rootfs.img."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liveimg.efi import EfiMode, EfiOptions
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.options import BuildOptions
from liveimg.pipeline import build
from liveimg.pxe import PxeOptions
from tests import efibins as b
from tests.stages import standins

SHIM = "usr/lib/shim/shimx64.efi.signed"
GRUBNET = "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
FILES = {
    SHIM: b.shim_efi(),
    "usr/lib/shim/shimx64.efi": b.shim_efi(signed=False),
    GRUBNET: b.grub_efi(),
    "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed": b.grub_efi(("normal", "part_gpt"), prefix="/EFI/debian"),
}
URL = "http://pxe.example/toy"


def test_the_images_chain_is_copied_out_of_rootfs_img_with_grub_cfg_where_grub_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    standins.use(monkeypatch, events, files=FILES)
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    out = tmp_path / "out"
    result = build(image, out, BuildOptions(pxe=PxeOptions(url=URL), efi=EfiOptions(mode=EfiMode.REQUIRE)))
    assert (out / "shimx64.efi").read_bytes() == FILES[SHIM]
    assert (out / "grubx64.efi").read_bytes() == FILES[GRUBNET]
    assert (out / "grub" / "grub.cfg").read_text() == (out / "grub.cfg").read_text()
    assert f"    linux /vmlinuz-{standins.KVER} root=live:{URL}/" in (out / "grub.cfg").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["boot"]["efi"] == {
        "grub": "grubx64.efi", "shim": "shimx64.efi", "configs": ["grub/grub.cfg", "grub.cfg"], "http": False,
        "source": f"Debian/Ubuntu: /{SHIM}, /{GRUBNET}",
    }  # fmt: skip
    assert {"shimx64.efi", "grubx64.efi", "grub/grub.cfg", "grub.cfg"} <= set(manifest["artifacts"])
    assert "efi" in manifest["stages"]


def test_without_a_chain_the_build_goes_on_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    standins.use(monkeypatch, [])
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    result = build(image, tmp_path / "out", BuildOptions(pxe=PxeOptions(url=URL)))
    assert result.manifest["boot"]["efi"] is None
    assert not (tmp_path / "out" / "grubx64.efi").exists() and (tmp_path / "out" / "grub.cfg").is_file()
    notes = [r.getMessage() for r in caplog.records if r.name == "liveimg.efi"]
    assert len(notes) == 1 and notes[0].endswith("UEFI clients need them, give them with --efi-from DIR")


def test_efi_without_a_chain_is_refused_before_the_long_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    standins.use(monkeypatch, events)
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    with pytest.raises(InvalidImage, match=r"^--efi: the image has no shim and a network GRUB"):
        build(image, tmp_path / "out", BuildOptions(efi=EfiOptions(mode=EfiMode.REQUIRE)))
    assert events == ["inspect", "dracut planned", "appliance closed"]  # no rootfs, no pack: refused in the preflight
    assert list(tmp_path.iterdir()) == [image]


def test_efi_from_a_directory_wins_over_the_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    standins.use(monkeypatch, [], files=FILES)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "BOOTX64.EFI").write_bytes(b.shim_efi() + b"mine")
    (mine / "grubx64.efi").write_bytes(b.grub_efi(("efinet", "http"), prefix=None))
    image = tmp_path / "disk.raw"
    image.write_bytes(b"an image" * 512)
    out = tmp_path / "out"
    result = build(image, out, BuildOptions(pxe=PxeOptions(url=URL), efi=EfiOptions(source=mine)))
    assert (out / "shimx64.efi").read_bytes() == (mine / "BOOTX64.EFI").read_bytes()
    assert (out / "grubx64.efi").read_bytes() == (mine / "grubx64.efi").read_bytes()
    efi = result.manifest["boot"]["efi"]
    assert (efi["configs"], efi["http"]) == (["grub.cfg"], True)
    assert f"    linux '(http,pxe.example)/toy/vmlinuz-{standins.KVER}' " in (out / "grub.cfg").read_text()
    assert not (out / "grub").exists()


def test_efi_from_a_missing_directory_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for source, why in ((tmp_path / "nope", "no such directory"), (tmp_path / "file", "not a directory")):
        with pytest.raises(InvalidOptions) as excinfo:
            build(tmp_path / "disk.raw", tmp_path / "out", BuildOptions(efi=EfiOptions(source=source)))
        assert str(excinfo.value) == f"--efi-from {source}: {why} (give the directory holding shim and GRUB)"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
