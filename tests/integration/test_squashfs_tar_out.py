"""The flat rootfs type's tar-out, for real: a file the appliance cannot read fails the build.

Two small ext4 filesystems made rootlessly (``mkfs.ext4 -d``), one with a file whose inode
``debugfs -w`` corrupts (its extent header zeroed: the appliance's kernel refuses the inode,
its GNU tar goes on without the file and exits 2).  One appliance launch for both drives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.errors import InvalidImage
from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.writer import SquashfsWriter
from liveimg.tarout import tar_into
from tests import support
from tests.integration.guest_images import mkfs_ext4
from tests.squashfs.helpers import listing

pytestmark = pytest.mark.timeout(1200)
FAST = SquashfsOptions(comp="lz4", mkfs_time=0)


@pytest.fixture(autouse=True)
def _guestfs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in support.guestfs_env().items():
        monkeypatch.setenv(name, value)


def _tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("live\n")
    (root / "etc" / "shadow").write_text("root:*:19000::::::\n" * 200)
    (root / "usr").mkdir()
    (root / "usr" / "last").write_text("after the damaged file\n")


def test_unreadable_file_fails_the_tar_out(tmp_path: Path) -> None:
    support.need("mkfs.ext4", "debugfs", "unsquashfs")
    support.need_module("guestfs", "the Debian package python3-guestfs")
    import guestfs

    _tree(tmp_path / "tree")
    good = mkfs_ext4(tmp_path / "tree", tmp_path / "good.ext4", 16, "good")
    bad = mkfs_ext4(tmp_path / "tree", tmp_path / "bad.ext4", 16, "bad")
    # i_block starts with the extent header (magic 0xf30a): zeroed, the kernel refuses the inode.
    runner.run(["debugfs", "-w", "-R", "set_inode_field /etc/shadow block[0] 0", bad])

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(support.accel().libguestfs_settings())
    for image in (good, bad):
        g.add_drive_opts(str(image), readonly=1, format="raw")
    g.launch()
    try:
        good_dev, bad_dev = g.list_devices()
        g.mkmountpoint("/good")
        g.mkmountpoint("/bad")
        g.mount_ro(good_dev, "/good")
        g.mount_ro(bad_dev, "/bad")

        ok = tmp_path / "good.sqfs"
        with SquashfsWriter(ok, FAST) as w:
            assert tar_into(g, "/good", w, prefix="", skip=frozenset({"lost+found"})) == 6
        assert sorted(listing(ok)) == ["", "etc", "etc/hostname", "etc/shadow", "usr", "usr/last"]

        failed = tmp_path / "bad.sqfs"
        with pytest.raises(InvalidImage) as caught, SquashfsWriter(failed, FAST) as w:
            tar_into(g, "/bad", w, prefix="", skip=frozenset({"lost+found"}))
        message = str(caught.value)
        assert message.startswith("reading /bad of the image in the appliance failed: tar: ./etc/shadow: "), message
        assert message.endswith(" (file receive cancelled by daemon)"), message
        assert "\n" not in message
        assert not failed.exists()
    finally:
        g.shutdown()
        g.close()
