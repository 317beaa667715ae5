"""The UEFI network boot chain of a real image: the atomic sample (Debian's signed shim and GRUB) built with --efi.

One build for the module: OUTDIR must hold the image's own shim and network GRUB, byte for
byte, under the names shim loads, and grub.cfg where Debian's network GRUB reads it (its prefix
``/grub``) and at the TFTP root; the kernel and initramfs over TFTP, for that GRUB has no http
module.  Then the refusals: ``--efi-from`` a directory without a network GRUB, one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from liveimg.manifest import sha256_file
from tests.bootparsers import grub_script_check
from tests.e2e.live import FAST_ARGS
from tests.integration.test_pipeline import liveimg, one_line_error
from tests.samples import dump_file, partition, sample_image
from tests.support import need

URL = "http://pxe.example:8080/atomic"
SHIM = "/usr/lib/shim/shimx64.efi.signed"
GRUBNET = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    need("debugfs", "grub-script-check")
    image = sample_image("atomic")
    out = tmp_path_factory.mktemp("efi") / "out"
    # The chain does not depend on the codecs: the fast ones keep the build short.
    argv = ["build", str(image), "-o", str(out), "--url", URL, "--efi", *FAST_ARGS]
    result = liveimg(*argv, wrap=["nice", "-n", "10"])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "manifest.json").read_text())


def test_outdir_holds_the_images_own_shim_and_network_grub(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, manifest = built
    image = sample_image("atomic")
    root = partition(image, "root")
    deployment = manifest["deployment"]["path"]
    shim = dump_file(image, root, f"{deployment}{SHIM}", tmp_path / "shim")
    grubnet = dump_file(image, root, f"{deployment}{GRUBNET}", tmp_path / "grubnet")
    assert sha256_file(out / "shimx64.efi") == sha256_file(shim)
    assert sha256_file(out / "grubx64.efi") == sha256_file(grubnet)
    assert manifest["artifacts"]["shimx64.efi"]["sha256"] == sha256_file(shim)
    assert manifest["artifacts"]["grubx64.efi"]["sha256"] == sha256_file(grubnet)


def test_the_manifest_says_how_uefi_clients_boot(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    efi = manifest["boot"]["efi"]
    assert {k: efi[k] for k in ("grub", "shim", "configs", "http")} == {
        "grub": "grubx64.efi", "shim": "shimx64.efi", "configs": ["grub/grub.cfg", "grub.cfg"], "http": False,
    }  # fmt: skip
    assert efi["source"] == f"Debian/Ubuntu: {SHIM}, {GRUBNET}"
    pxe_config = (out / "PXE_CONFIG").read_text()
    assert "the DHCP boot file of UEFI clients is shimx64.efi" in pxe_config


def test_grub_cfg_is_where_debians_network_grub_reads_it_over_tftp(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    nested, root = (out / "grub" / "grub.cfg").read_text(), (out / "grub.cfg").read_text()
    assert nested == root
    kernel, initramfs = manifest["kernel"]["file"], manifest["initramfs"]["file"]
    assert f"    linux /{kernel} root=live:{URL}/live-rootfs.squashfs.img " in root
    assert f"    initrd /{initramfs}\n" in root
    assert "(http," not in root  # Debian's grubnetx64 has no http module: TFTP, from OUTDIR
    assert grub_script_check(out / "grub" / "grub.cfg") == ""


def test_efi_from_a_directory_without_a_network_grub_is_one_line(tmp_path: Path) -> None:
    image = sample_image("atomic")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "grubx64.efi").write_bytes(b"MZ not really a GRUB" * 100)
    message = one_line_error(
        liveimg("build", str(image), "-o", str(tmp_path / "out"), "--efi-from", str(mine), wrap=["nice", "-n", "10"])
    )
    assert message == f"--efi-from {mine} has no network GRUB for x86_64 (an EFI GRUB image with efinet and tftp or " \
                      "http built in)"  # fmt: skip
    assert not (tmp_path / "out").exists()
