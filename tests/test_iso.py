"""The live ISO writer (liveimg.iso): read back with pycdlib, byte by byte where it matters.

The ISO is made of small stand-in files (the real ones are booted by tests/e2e/test_live_iso.py)
and Debian's isolinux; every structure a firmware or a kernel reads is checked as they read
it: the volume descriptor's label, the Rock Ridge, Joliet and ISO 9660 names, the El Torito
boot catalog, the boot info table isolinux needs, the isohybrid MBR, isolinux.cfg.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pycdlib
import pytest

from liveimg import bootsyntax, iso
from liveimg.cli import main
from liveimg.errors import HostError, InvalidImage, InvalidOptions
from liveimg.iso import IsoContent, IsoOptions, default_label, iso_kernel_args, isolinux_config, make_iso, write_iso
from liveimg.manifest import sha256_file
from liveimg.progress import Progress
from liveimg.pxe import LiveBoot, PxeOptions
from tests.bootparsers import kernel_split, pxelinux_directives
from tests.support import need, need_file, need_root, unprivileged_user

OSTREE = "/ostree/boot.1/debian-atomic/0f3c/0"
BOOT = LiveBoot(
    kernel="vmlinuz-6.1.0-9-amd64",
    initramfs="initramfs-6.1.0-9-amd64.img",
    kver="6.1.0-9-amd64",
    title="Debian Atomic",
    ostree_arg=OSTREE,
    image_args=("root=UUID=1234", "rw", "console=tty0", "rd.lvm.lv=vg/root", "quiet"),
)
LABEL = "DEBIAN_12_X86_64"
EPOCH = 1_700_000_000  # 2023-11-14 22:13:20 UTC


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    """A stand-in OUTDIR: kernel, initramfs and squashfs of distinct random bytes."""
    need_file("/usr/lib/ISOLINUX/isolinux.bin", "isolinux")
    need_file("/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")
    need_file("/usr/lib/grub/x86_64-efi/linux.mod", "grub-efi-amd64-bin")
    need("grub-mkimage", "mkfs.fat", "mcopy", "mmd", "implantisomd5")
    out = tmp_path / "out"
    out.mkdir()
    for name, size in ((BOOT.kernel, 70_001), (BOOT.squashfs, 300_007)):
        (out / name).write_bytes(os.urandom(size))
    initramfs(out / BOOT.initramfs, media_check=True)
    return out


def initramfs(dest: Path, *, media_check: bool) -> None:
    """A stand-in initramfs, an uncompressed cpio: random bytes, and checkisomd5 if asked."""
    need("cpio")
    tree = dest.parent.parent / f"{dest.name}.{os.urandom(4).hex()}.tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "init").write_bytes(os.urandom(50_003))
    if media_check:
        (tree / "usr/bin/checkisomd5").write_bytes(b"\x7fELF")
    names = "\n".join(str(p.relative_to(tree)) for p in sorted(tree.rglob("*"))) + "\n"
    with open(dest, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=names.encode(), stdout=f, cwd=tree, check=True)


def write(out: Path, dest: Path, label: str = LABEL, args: tuple[str, ...] = ("rd.live.overlay.size=1024",)
          ) -> list[str]:  # fmt: skip
    kargs = iso_kernel_args(BOOT, PxeOptions(kernel_args=args), label)
    content = IsoContent(out / BOOT.kernel, out / BOOT.initramfs, out / BOOT.squashfs)
    write_iso(dest, content, BOOT, kargs, label)
    return kargs


@pytest.fixture
def opened(outdir: Path) -> Iterator[tuple[pycdlib.PyCdlib, Path, list[str]]]:
    dest = outdir / "live.iso"
    args = write(outdir, dest)
    image = pycdlib.PyCdlib()
    image.open(str(dest))
    try:
        yield image, dest, args
    finally:
        image.close()


def read(image: pycdlib.PyCdlib, **path: str) -> bytes:
    buf = io.BytesIO()
    image.get_file_from_iso_fp(buf, **path)
    return buf.getvalue()


# --- the layout -----------------------------------------------------------------------------------


def test_layout_is_loraxs_in_rock_ridge_joliet_and_iso9660(opened: tuple[pycdlib.PyCdlib, Path, list[str]]) -> None:
    image, _, _ = opened
    files = {
        f"{root.rstrip('/')}/{name}" for root, _, names in image.walk(rr_path="/") for name in names
    }  # fmt: skip
    assert files == {
        "/LiveOS/squashfs.img",
        "/images/pxeboot/vmlinuz",
        "/images/pxeboot/initrd.img",
        "/isolinux/vmlinuz",
        "/isolinux/initrd.img",
        "/isolinux/isolinux.bin",
        "/isolinux/ldlinux.c32",
        "/isolinux/isolinux.cfg",
        "/isolinux/boot.cat",
        "/images/efiboot.img",
        "/EFI/BOOT/grub.cfg",
    }
    joliet = {f"{root.rstrip('/')}/{n}" for root, _, names in image.walk(joliet_path="/") for n in names}
    assert joliet == files
    iso9660 = {f"{root.rstrip('/')}/{n}" for root, _, names in image.walk(iso_path="/") for n in names}
    assert "/LIVEOS/SQUASHFS.IMG;1" in iso9660
    assert "/ISOLINUX/ISOLINUX.BIN;1" in iso9660


def test_files_hold_the_builds_bytes(outdir: Path, opened: tuple[pycdlib.PyCdlib, Path, list[str]]) -> None:
    image, _, _ = opened
    assert read(image, rr_path="/LiveOS/squashfs.img") == (outdir / BOOT.squashfs).read_bytes()
    for where in ("/images/pxeboot", "/isolinux"):
        assert read(image, rr_path=f"{where}/vmlinuz") == (outdir / BOOT.kernel).read_bytes()
        assert read(image, joliet_path=f"{where}/initrd.img") == (outdir / BOOT.initramfs).read_bytes()
    ldlinux = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
    assert read(image, rr_path="/isolinux/ldlinux.c32") == ldlinux.read_bytes()


def test_kernel_and_initramfs_are_stored_once(opened: tuple[pycdlib.PyCdlib, Path, list[str]], outdir: Path) -> None:
    image, dest, _ = opened
    for name in ("vmlinuz", "initrd.img"):
        a = image.get_record(rr_path=f"/images/pxeboot/{name}")
        b = image.get_record(rr_path=f"/isolinux/{name}")
        assert a.extent_location() == b.extent_location()
    payload = sum((outdir / n).stat().st_size for n in (BOOT.kernel, BOOT.initramfs, BOOT.squashfs))
    efiboot = image.get_record(rr_path="/images/efiboot.img").get_data_length()
    assert dest.stat().st_size < payload + efiboot + 1024 * 1024


def test_volume_label_and_identifiers(opened: tuple[pycdlib.PyCdlib, Path, list[str]]) -> None:
    image, _, _ = opened
    assert image.pvd.volume_identifier.decode().rstrip() == LABEL
    assert image.pvd.system_identifier.decode().rstrip() == "LINUX"
    assert image.joliet_vd is not None
    assert image.joliet_vd.volume_identifier.decode("utf-16-be").rstrip() == LABEL[:16]
    assert image.has_rock_ridge() and image.has_joliet()


def test_isolinux_cfg_boots_the_live_image_by_label(opened: tuple[pycdlib.PyCdlib, Path, list[str]]) -> None:
    image, _, args = opened
    text = read(image, rr_path="/isolinux/isolinux.cfg").decode()
    assert text == isolinux_config(BOOT, args)
    directives = pxelinux_directives(text)
    assert ("default", "live") in directives
    assert [v for k, v in directives if k == "label"] == ["live", "check"]
    assert [v for k, v in directives if k == "kernel"] == ["/isolinux/vmlinuz"] * 2
    live, check = (kernel_split(v) for k, v in directives if k == "append")
    assert live[:4] == [
        ("initrd", "/isolinux/initrd.img"),
        ("root", f"live:CDLABEL={LABEL}"),
        ("rd.live.image", None),
        ("ostree", OSTREE),
    ]
    # the image's own arguments but those naming its disks, then the user's; no network
    assert [p for p, _ in live[4:]] == ["rw", "console", "quiet", "rd.live.overlay.size"]
    # the second entry: the same, after dracut's media check
    assert check == [*live, ("rd.live.check", None)]


def test_el_torito_boots_isolinux_with_a_boot_info_table(opened: tuple[pycdlib.PyCdlib, Path, list[str]]) -> None:
    image, dest, _ = opened
    catalog = image.eltorito_boot_catalog
    assert catalog is not None
    entry = catalog.initial_entry
    assert catalog.validation_entry.platform_id == 0  # x86
    assert entry.boot_indicator == 0x88  # bootable
    assert entry.boot_media_type == 0  # no emulation
    assert entry.sector_count == 4  # 4 x 512 bytes, as isolinux wants
    isolinux = image.get_record(rr_path="/isolinux/isolinux.bin")
    assert entry.load_rba == isolinux.extent_location()
    # The boot info table (bytes 8-63 of isolinux.bin as written): the PVD's LBA, the file's
    # own LBA and length; isolinux finds the rest of itself with it.
    with open(dest, "rb") as f:
        f.seek(isolinux.extent_location() * 2048)
        head = f.read(64)
    pvd_lba, file_lba, length = struct.unpack_from("<III", head, 8)
    assert (pvd_lba, file_lba) == (16, isolinux.extent_location())
    assert length == Path("/usr/lib/ISOLINUX/isolinux.bin").stat().st_size


def test_isohybrid_mbr_is_syslinuxs_with_the_image_and_the_efi_partitions(
    opened: tuple[pycdlib.PyCdlib, Path, list[str]],
) -> None:
    image, dest, _ = opened
    data = dest.read_bytes()
    mbr = data[:512]
    assert mbr[:432] == Path("/usr/lib/ISOLINUX/isohdpfx.bin").read_bytes()
    assert mbr[510:] == b"\x55\xaa"
    status, ptype, start, sectors = mbr[446], mbr[450], *struct.unpack_from("<II", mbr, 454)
    assert (status, ptype, start) == (0x80, 0, 0)
    # padded to whole cylinders, all of it the first partition, and a GPT's backup at the end
    assert data[512:520] == b"EFI PART" and data[-512:-504] == b"EFI PART"
    assert sectors * 512 <= dest.stat().st_size
    efi_type, efi_start, efi_sectors = mbr[466], *struct.unpack_from("<II", mbr, 470)
    efiboot = image.get_record(rr_path="/images/efiboot.img")
    assert (efi_type, efi_start) == (0xEF, efiboot.extent_location() * 4)
    assert efi_sectors * 512 == efiboot.get_data_length()
    # isolinux's MBR jumps into isolinux.bin at the 512-byte sector it stores at byte 432
    isolinux_sector = struct.unpack_from("<I", mbr, 432)[0]
    with open(dest, "rb") as f:
        f.seek(isolinux_sector * 512 + 0x40)
        assert f.read(4) == iso.ISOLINUX_SIGNATURE


def _data_end_and_backup_gpt(dest: Path) -> tuple[int, int]:
    """Where the ISO's data ends (its volume space) and where its GPT backup's entries begin."""
    image = pycdlib.PyCdlib()
    image.open(str(dest))
    try:
        data_end = image.pvd.space_size * image.logical_block_size
    finally:
        image.close()
    with open(dest, "rb") as f:
        f.seek(-512, os.SEEK_END)
        header = f.read(512)
    assert header[:8] == b"EFI PART"
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    assert entries_lba * 512 + count * size == dest.stat().st_size - 512
    return data_end, entries_lba * 512


def test_the_gpt_backup_never_overwrites_the_last_file(outdir: Path) -> None:
    # pycdlib pads to a whole cylinder (1 MiB) and writes the GPT's backup over the last 16.5 KiB:
    # a live file that brings the data within that of a cylinder's end once lost its last
    # 2560 bytes (a squashfs the kernel then refused: "unable to read id index table").
    first = outdir / "first.iso"
    write(outdir, first)
    data_end, _ = _data_end_and_backup_gpt(first)
    room = -data_end % (1 << 20)
    live = outdir / BOOT.squashfs
    blocks = -(-live.stat().st_size // 2048) + (room - 4096) // 2048  # 4 KiB of padding left
    live.write_bytes(os.urandom(blocks * 2048))
    dest = outdir / "live.iso"
    write(outdir, dest)
    data_end, backup = _data_end_and_backup_gpt(dest)
    assert data_end <= backup, f"the GPT's backup at {backup} overwrites data ending at {data_end}"
    image = pycdlib.PyCdlib()
    image.open(str(dest))
    try:
        for name in (BOOT.squashfs, BOOT.kernel, BOOT.initramfs):
            where = {BOOT.squashfs: "/LiveOS/squashfs.img", BOOT.kernel: "/images/pxeboot/vmlinuz",
                     BOOT.initramfs: "/images/pxeboot/initrd.img"}[name]  # fmt: skip
            assert read(image, rr_path=where) == (outdir / name).read_bytes(), where
    finally:
        image.close()


def test_el_torito_has_a_uefi_section_with_grub(
    opened: tuple[pycdlib.PyCdlib, Path, list[str]], tmp_path: Path
) -> None:
    image, _, args = opened
    catalog = image.eltorito_boot_catalog
    assert catalog is not None and len(catalog.sections) == 1
    section = catalog.sections[0]
    assert section.platform_id == 0xEF
    entry = section.section_entries[0]
    assert entry.boot_indicator == 0x88 and entry.boot_media_type == 0
    efiboot = image.get_record(rr_path="/images/efiboot.img")
    assert entry.load_rba == efiboot.extent_location()
    # The FAT, read with mtools: GRUB as the removable-media path UEFI firmware boots
    fat = tmp_path / "efiboot.img"
    fat.write_bytes(read(image, rr_path="/images/efiboot.img"))
    grub = tmp_path / "BOOTX64.EFI"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mcopy", "-i", str(fat), "::/EFI/BOOT/BOOTX64.EFI", str(grub)], env=env, check=True)
    efi = grub.read_bytes()
    assert efi[:2] == b"MZ" and efi[struct.unpack_from("<I", efi, 0x3C)[0] :][:4] == b"PE\0\0"
    assert iso.grub_early_config(LABEL).encode() in efi  # its first configuration, built in
    # and the menu it reads from the ISO: the same kernel arguments as isolinux's
    text = read(image, rr_path="/EFI/BOOT/grub.cfg").decode()
    assert text == iso.grub_config(BOOT, args, LABEL)
    linux = next(line.split()[1:] for line in text.splitlines() if line.strip().startswith("linux "))
    assert linux == ["/images/pxeboot/vmlinuz", *args]  # all bare words here: nothing to quote
    assert f"search --no-floppy --set=root --label {LABEL}" in text


def test_media_check_md5_is_implanted_and_catches_one_changed_byte(
    opened: tuple[pycdlib.PyCdlib, Path, list[str]], tmp_path: Path
) -> None:
    need("checkisomd5")
    image, dest, _ = opened
    ok = subprocess.run(["checkisomd5", str(dest)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # one bit of the squashfs, in a copy
    bad = tmp_path / "bad.iso"
    data = bytearray(dest.read_bytes())
    data[image.get_record(rr_path="/LiveOS/squashfs.img").extent_location() * 2048 + 1000] ^= 1
    bad.write_bytes(data)
    failed = subprocess.run(["checkisomd5", str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "the result is: FAIL" in failed.stderr


def test_no_media_check_entry_without_checkisomd5(outdir: Path) -> None:
    fake_manifest(outdir)
    assert make_iso(outdir).media_check
    initramfs(outdir / "other.img", media_check=False)
    (outdir / "other.img").replace(outdir / BOOT.initramfs)
    result = make_iso(outdir)
    assert not result.media_check
    assert json.loads((outdir / "manifest.json").read_text())["iso"]["media_check"] is False
    image = pycdlib.PyCdlib()
    image.open(str(result.path))
    try:
        for path in ("/isolinux/isolinux.cfg", "/EFI/BOOT/grub.cfg"):
            text = read(image, rr_path=path).decode()
            assert "rd.live.check" not in text and text.count("/initrd.img") == 1, text
    finally:
        image.close()


def test_ostree_free_image_and_user_arguments_replace_ours(outdir: Path) -> None:
    classic = LiveBoot(kernel=BOOT.kernel, initramfs=BOOT.initramfs, kver=BOOT.kver, title="Debian",
                       image_args=("console=tty0",))  # fmt: skip
    args = iso_kernel_args(classic, PxeOptions(kernel_args=("console=ttyS0,115200",)), LABEL)
    assert args == [f"root=live:CDLABEL={LABEL}", "rd.live.image", "console=ttyS0,115200"]
    args = iso_kernel_args(classic, PxeOptions(keep_image_args=False), LABEL)
    assert args == [f"root=live:CDLABEL={LABEL}", "rd.live.image"]


# --- labels ---------------------------------------------------------------------------------------


def test_default_label_is_loraxs_in_d_characters() -> None:
    assert default_label("debian", "12", "x86_64") == "DEBIAN_12_X86_64"
    assert default_label("fedora", "41", "x86_64") == "FEDORA_41_X86_64"
    assert default_label("opensuse-tumbleweed", "20241201", "aarch64") == "OPENSUSE_TUMBLEWEED_20241201_AAR"
    assert default_label(None, None, None) == "LINUX"
    assert default_label("-- é --", "", "") == "LIVE"
    for parts in (("x" * 40, "1", "x86_64"), ("a b\nc$'\"", "1.0~rc", "ppc64le")):
        label = default_label(*parts)
        assert bootsyntax.iso_label(label) == label


@pytest.mark.parametrize(
    "label",
    ["", "debian", "DEBIAN-12", "DEBIAN 12", "A" * 33, "LABEL\n", "CAFÉ", "A$B", "A=B"],
)
def test_bad_labels_are_refused_in_one_line(label: str) -> None:
    with pytest.raises(InvalidOptions) as info:
        IsoOptions(label=label)
    assert "\n" not in str(info.value) and "32" in str(info.value)


def test_longest_label_is_accepted(outdir: Path) -> None:
    need("blkid")
    label = "A_LABEL_OF_THIRTY_TWO_CHARACTERS"
    write(outdir, outdir / "a.iso", label=label)
    image = pycdlib.PyCdlib()
    image.open(str(outdir / "a.iso"))
    try:
        assert image.pvd.volume_identifier.decode() == label
    finally:
        image.close()
    # what udev makes /dev/disk/by-label/ of, and dracut's CDLABEL= looks for
    probe = subprocess.run(["blkid", "-p", "-o", "value", "-s", "LABEL", str(outdir / "a.iso")],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert probe.stdout.strip() == label


def test_cli_refuses_a_bad_label_before_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"")
    code = main(["build", str(image), "-o", str(tmp_path / "out"), "--iso-label", "not-valid"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and "--iso-label 'not-valid'" in err
    assert not (tmp_path / "out").exists()


# --- reproducible ---------------------------------------------------------------------------------


def test_same_source_date_epoch_gives_the_same_bytes(outdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    write(outdir, outdir / "a.iso")
    # Another wall clock and another time zone: pycdlib stamps records with both.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86_400 * 400 + 3_333)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        write(outdir, outdir / "b.iso")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert sha256_file(outdir / "a.iso") == sha256_file(outdir / "b.iso")
    # The volume's dates (blkid's UUID of an ISO) are the epoch's, in UTC.
    with open(outdir / "a.iso", "rb") as f:
        f.seek(16 * 2048 + 813)
        created, modified = f.read(17), f.read(17)
    assert created == modified == b"2023111422132000\x00"


def test_without_source_date_epoch_the_time_of_writing(outdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    before = int(time.time())
    write(outdir, outdir / "a.iso")
    with open(outdir / "a.iso", "rb") as f:
        f.seek(16 * 2048 + 813)
        created = f.read(14).decode()
    stamp = time.mktime(time.strptime(created, "%Y%m%d%H%M%S")) - time.timezone
    assert before - 2 <= stamp <= time.time() + 2


# --- make_iso: from a finished OUTDIR -------------------------------------------------------------


def fake_manifest(out: Path) -> dict[str, object]:
    manifest: dict[str, object] = {
        "os": {"id": "debian", "version_id": "12", "arch": "x86_64", "name": "Debian GNU/Linux 12"},
        "kernel": {"file": BOOT.kernel, "version": BOOT.kver},
        "initramfs": {"file": BOOT.initramfs},
        "rootfs": {"file": BOOT.squashfs},
        "boot": {
            "kernel": BOOT.kernel,
            "initramfs": BOOT.initramfs,
            "kver": BOOT.kver,
            "title": BOOT.title,
            "ostree_arg": OSTREE,
            "image_args": list(BOOT.image_args),
            "squashfs": BOOT.squashfs,
            "seed_id": "x",
            "kernel_args": ["rd.live.overlay.size=1024"],
            "keep_image_args": True,
            "cloud_init": True,
        },
        "artifacts": {BOOT.kernel: {"size": 1, "sha256": "0"}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_make_iso_from_an_outdir_records_it_in_the_manifest(outdir: Path) -> None:
    before = fake_manifest(outdir)
    result = make_iso(outdir, progress=Progress())
    assert result.path == outdir / "live.iso" and result.label == LABEL
    assert result.sha256 == sha256_file(outdir / "live.iso")
    manifest = json.loads((outdir / "manifest.json").read_text())
    assert manifest["iso"] == result.manifest()
    assert manifest["artifacts"]["live.iso"] == {"size": result.size, "sha256": result.sha256}
    assert {k: v for k, v in manifest.items() if k not in ("iso", "artifacts")} == {
        k: v for k, v in before.items() if k != "artifacts"
    }
    # the build's --kernel-arg, and no cloud-init seed (it is served over the network)
    assert "rd.live.overlay.size=1024" in result.kernel_args
    assert not any(a.startswith(("ds=", "ip=")) for a in result.kernel_args)
    assert not list(outdir.parent.glob(".*.liveimg.lock")), "the lock was left behind"
    # again with another label: the manifest's is replaced
    assert make_iso(outdir, IsoOptions(label="MY_LIVE")).label == "MY_LIVE"
    assert json.loads((outdir / "manifest.json").read_text())["iso"]["label"] == "MY_LIVE"


def test_liveimg_iso_command(outdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_manifest(outdir)
    assert main(["--progress", "none", "iso", str(outdir), "--iso-label", "CLI_LABEL"]) == 0
    assert capsys.readouterr().out.strip() == str(outdir / "live.iso")
    assert json.loads((outdir / "manifest.json").read_text())["iso"]["label"] == "CLI_LABEL"


def test_liveimg_iso_as_an_unprivileged_user(outdir: Path) -> None:
    """No root: a throw-away user with no capability makes the ISO of its own OUTDIR."""
    need_root()
    need("setpriv")
    fake_manifest(outdir)
    with unprivileged_user() as user:
        theirs = user.home / "out"
        shutil.copytree(outdir, theirs)
        for path in [theirs, *theirs.rglob("*")]:
            os.chown(path, user.uid, user.gid)
        done = user.liveimg("--progress", "none", "iso", theirs, "--iso-label", "NOT_ROOT", timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(theirs / "live.iso")
        assert (theirs / "live.iso").stat().st_uid == user.uid
        manifest = json.loads((theirs / "manifest.json").read_text())
        assert manifest["iso"]["label"] == "NOT_ROOT"
        assert manifest["artifacts"]["live.iso"]["sha256"] == sha256_file(theirs / "live.iso")
        image = pycdlib.PyCdlib()
        image.open(str(theirs / "live.iso"))
        try:
            assert image.pvd.volume_identifier.rstrip(b" ") == b"NOT_ROOT"
        finally:
            image.close()


def test_make_iso_refuses_what_is_not_an_outdir(tmp_path: Path, outdir: Path) -> None:
    with pytest.raises(InvalidOptions, match=r"has no manifest\.json"):
        make_iso(tmp_path)
    fake_manifest(outdir)
    (outdir / BOOT.squashfs).unlink()
    with pytest.raises(InvalidImage, match="is missing"):
        make_iso(outdir)
    assert not (outdir / "live.iso").exists()


def test_a_failed_write_leaves_no_partial_iso(outdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = outdir / "live.iso"
    old.write_bytes(b"the old one")

    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pycdlib.PyCdlib, "write", fail)
    with pytest.raises(HostError, match=r"^no space left on the device while writing .*/live\.iso \(free some space"):
        write(outdir, old)
    assert old.read_bytes() == b"the old one"
    assert sorted(p.name for p in outdir.iterdir()) == sorted([BOOT.kernel, BOOT.initramfs, BOOT.squashfs, "live.iso"])
