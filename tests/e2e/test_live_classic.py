"""The classic sample (no ostree), built and boot-tested by an unprivileged user, as that user types it.

``python -m liveimg build`` and ``python -m liveimg boot-test --via disk`` (the squashfs
attached as a disk, no network) run as a throw-away user (tests.support.unprivileged_user):
a uid with no name, no supplementary group (so no access to /dev/kvm), no /etc/subuid
range, no capability and none to gain, a fresh HOME and TMPDIR.  The README's "As a
non-root user" says what such a user needs; this test is what backs it.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from liveimg.dracut.initramfs import Initramfs
from liveimg.manifest import sha256_file
from liveimg.squashfs.reader import SquashfsReader
from tests.e2e.live import FAST_ARGS
from tests.samples import sample_image
from tests.support import has_subordinate_ids, need, need_root, owners, unavailable, unprivileged_user

BUILD_TIMEOUT = 3600.0


def _kvm_open_to_others() -> bool:
    try:
        return os.stat("/dev/kvm").st_mode & (stat.S_IROTH | stat.S_IWOTH) == stat.S_IROTH | stat.S_IWOTH
    except FileNotFoundError:
        return False


def test_classic_built_and_boot_tested_by_an_unprivileged_user() -> None:
    need_root()  # to become the throw-away user
    need("qemu-system-x86_64", "setpriv")
    # supermin makes the libguestfs appliance from the host's kernel: the user must be able to read one.
    kernels = glob.glob("/boot/vmlinuz-*")
    assert any(os.stat(k).st_mode & stat.S_IROTH for k in kernels), f"no kernel in /boot readable by all: {kernels}"
    image = sample_image("classic")
    with unprivileged_user() as user:
        assert not has_subordinate_ids(user.uid)
        probe = user.run([sys.executable, "-c", "import liveimg"], timeout=120)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            unavailable(f"an unprivileged user cannot run {sys.executable} on this checkout ({last}): "
                        "the checkout and its venv must be readable by all users")  # fmt: skip
        source = user.share(image)
        before = sha256_file(source)
        out = user.home / "out"

        # What liveimg itself says about this machine for this user: every tool found; without
        # /dev/kvm it chooses TCG and says why.
        doctor = user.liveimg("doctor", "--json", timeout=300)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        report = json.loads(doctor.stdout)
        if not _kvm_open_to_others():
            assert report["accel"]["choice"] == "tcg", report["accel"]
            assert "/dev/kvm" in report["accel"]["reason"], report["accel"]

        build = user.liveimg("build", source, "-o", out, *FAST_ARGS, timeout=BUILD_TIMEOUT)
        assert build.returncode == 0, build.stderr[-4000:]
        manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
        assert manifest["deployment"] is None
        assert "ostree=" not in (out / "PXE_CONFIG").read_text()
        assert manifest["initramfs"]["built_in"] == "sandbox"  # user namespaces worked for this user

        boot = user.liveimg("boot-test", out, "--via", "disk", "--json", timeout=BUILD_TIMEOUT)
        assert boot.stdout.strip(), boot.stderr[-4000:]
        result = json.loads(boot.stdout)
        assert boot.returncode == 0 and result["ok"], json.dumps(result, indent=2) + boot.stderr[-2000:]
        assert result["checks"]["ostree-booted"] == "no"
        assert result["checks"]["root"].startswith("/dev/mapper/live-rw")

        assert sha256_file(source) == before, "the input image changed"
        # Written by the user alone, the guest's files still root's: the builder's uid is nowhere.
        assert owners(out) == {user.uid}
        assert owners(Path(f"{out}.boot-test")) == {user.uid}
        with SquashfsReader(out / manifest["rootfs"]["file"]) as squashfs:
            assert {squashfs.uid(inode) for _, inode in squashfs.walk()} == {0}
        with Initramfs(out / manifest["initramfs"]["file"]) as initramfs:
            assert {(m.uid, m.gid) for m in initramfs.members} == {(0, 0)}
        # Nothing left behind: no process, no file outside its own directories.
        assert user.wait_for_no_processes() == {}
        assert user.stray_files() == []
