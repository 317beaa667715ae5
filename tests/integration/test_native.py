"""The native inspection (liveimg.nativeimage) against the appliance's, on the sample disks.

One appliance launch per sample: the two readers must give the same ImageInfo (every
deployment of atomic-2deploy chosen in turn) and the same /boot tree for the rootfs stage; the
xfs-on-LVM sample is refused by the native reader and, with ``--inspect auto``, read by the
appliance the stages launch then.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from liveimg import rootfs
from liveimg.context import Build
from liveimg.guest import open_guest, probe_image
from liveimg.layouts import get_layout
from liveimg.manifest import sha256_file
from liveimg.nativeimage import NativeImage, NativeRefused
from liveimg.options import BuildOptions
from liveimg.outdir import OutdirTransaction
from liveimg.progress import Progress
from liveimg.stages import appliance, guest
from liveimg.tree import ApplianceTree, Entry
from tests.samples import sample_image

pytestmark = pytest.mark.timeout(900)


def _without_inodes(entries: list[Entry]) -> list[Entry]:
    return [dataclasses.replace(e, inode=None) for e in entries]  # (st_dev, st_ino) differ by reader


@pytest.mark.parametrize("variant", ["atomic", "classic", "atomic-2deploy"])
def test_native_and_appliance_describe_a_sample_alike(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = sample_image(variant, "raw")
    fmt = probe_image(image)
    started = time.monotonic()
    native = NativeImage(fmt)
    info = native.inspect()
    seconds = time.monotonic() - started
    with open_guest(fmt) as appliance_guest:
        assert appliance_guest.inspect() == info
        for index in range(1, len(info.deployments)):
            assert appliance_guest.inspect(deployment=index) == native.inspect(deployment=index)
        if info.boot is not None:
            mountpoint = appliance_guest.boot_mountpoint
            assert mountpoint is not None
            theirs = ApplianceTree(appliance_guest.g, mountpoint, tmp_path).entries()
            source = native.boot_source(info)
            assert source is not None
            ours = source.entries()
            assert _without_inodes(ours) == _without_inodes(theirs)
            kernel = next(e for e in ours if e.path.endswith(info.kernel.path.rsplit("/", 1)[-1]))
            source.fetch(kernel, tmp_path / "ours")
            appliance_guest.g.download(f"{mountpoint}/{kernel.path}", str(tmp_path / "theirs"))
            assert (tmp_path / "ours").read_bytes() == (tmp_path / "theirs").read_bytes()
            if variant == "atomic":  # the rootfs stage's /boot from either reader: the same rootfs.img, byte for byte
                monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
                made = [
                    rootfs.build_rootfs(
                        appliance_guest,
                        info,
                        tmp_path / f"{name}.img",
                        rootfs.RootfsOptions(),
                        workdir=tmp_path,
                        native=reader,
                    )
                    for name, reader in (("native", native), ("appliance", None))
                ]
                assert sha256_file(made[0].path) == sha256_file(made[1].path) and made[0].boot_merged
    assert seconds < 10, f"the native inspection took {seconds:.1f} s"


def test_xfs_on_lvm_is_left_to_the_appliance(tmp_path: Path) -> None:
    image = sample_image("atomic-xfs-lvm", "raw")
    with pytest.raises(NativeRefused, match="/dev/sda3 holds LVM2_member, not an ext filesystem"):
        NativeImage(probe_image(image)).inspect()
    txn = OutdirTransaction(tmp_path / "out")
    ctx = Build(image, BuildOptions(), get_layout("squashfs-ext4"), txn, Progress())
    try:
        appliance.run(ctx)  # the native reader reads the partition table, and leaves the LVM partition
        guest.run(ctx)
        assert ctx.inspector.backend == "appliance" and ctx.has("guest")
        assert ctx.info.root.fstype == "xfs" and ctx.info.root.lvm
        assert ctx.appliance_reasons == [
            "the native reader does not read the image: /dev/sda3 holds LVM2_member, not an ext filesystem"
        ]
    finally:
        ctx.resources.close()
        txn.close()
