"""The seed's whole story, booted: a live Atomic host keeps its container storage on an iSCSI LUN.

The ``atomic-iscsi`` sample (the atomic sample's system with cloud-init, open-iscsi and podman)
is built as a user types it::

    liveimg build atomic-iscsi.raw -o out --url ... --cloud-init --ci-hostname iscsi-node \\
        --ci-iscsi iscsi-target.test,IQN --ci-user-data load-image.yaml

``load-image.yaml`` is this test's own ``#cloud-config``: the portal's host name in /etc/hosts
(the guest looks it up, as it would in DNS), and a tiny container image as a docker-archive
(made here, byte for byte, by :func:`hello_archive`; no registry), written by ``write_files``
and loaded by ``podman load`` in ``runcmd`` unless podman has it already; ``--ci-iscsi`` adds
the initiator's name, the login and the storage setup before it.

On the host, a real iSCSI target (Debian's tgtd, :mod:`tests.iscsi_target`) exports a 1 GiB
sparse file as LUN 1, to the seed's initiator name only.  The guest boots from the artifacts
over PXE (pxelinux, TFTP, the live file over HTTP); cloud-init applies the seed: the hostname
from the meta-data, the files, the commands.  The checker then reports the iSCSI session, the
LUN's disk, podman's storage path and the device under it, and the image in it.  After the
first boot the LUN's file holds an ext4 filesystem (blkid on the host); the guest is booted
again from the same artifacts and the same LUN: the filesystem is kept (the same UUID), and the
image is still in the storage without being loaded again: the state that outlives RAM.

Each boot's figures are printed (run with ``-s``): the time to the checks' end, the guest's
uptime then, cloud-init's own seconds per stage, and when cloud-init was done.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from liveimg.boottest import BootTestOptions, BootTestResult, boot_test
from liveimg.iscsi import IscsiStorage, derived_initiator
from tests.e2e.live import build_with_cli
from tests.iscsi_target import PORTAL_ADDR, PORTAL_PORT, tgt_target
from tests.support import need, need_root

IQN = "iqn.2026-12.invalid.liveimg:e2e-storage"
#: The portal's host name (``.test``: RFC 2606), which the seed's /etc/hosts gives the guest: the
#: booted host looks it up, as it would in DNS, and iscsiadm gets its address.
PORTAL_NAME = "iscsi-target.test"
HOSTNAME = "iscsi-node"
IMAGE = "localhost/liveimg-hello:1"
ARCHIVE = "/var/tmp/liveimg-hello.tar"
STORAGE = "/var/lib/containers/storage"
LUN_BYTES = 1 << 30
TIMEOUT = 1800.0
LOADED = "liveimg-e2e: the image was loaded from the archive"
KEPT = "liveimg-e2e: the image is in the storage already"


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            _tar_member(tar, name, data)
    return buf.getvalue()


def hello_archive() -> tuple[bytes, str]:
    """A docker-archive of :data:`IMAGE` (one layer: ``/hello.txt``), and its image ID: the sha256
    of its config, which is what podman calls the image."""
    layer = _tar([("hello.txt", b"hello from the LUN\n")])
    diff_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/e2e/test_live_iscsi.py"}],
    }, sort_keys=True).encode()  # fmt: skip
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{image_id}.json", "RepoTags": [IMAGE], "Layers": [f"{diff_id}/layer.tar"]}])
    members = [("manifest.json", manifest.encode()), (f"{image_id}.json", config), (f"{diff_id}/layer.tar", layer)]
    return _tar(members), image_id


def load_image_user_data(archive: bytes) -> str:
    """The test's ``#cloud-config``: the portal's name in /etc/hosts, the archive, and a load that
    happens once per storage."""
    load = (f"if podman image exists {IMAGE}; then echo '{KEPT}'; "
            f"else podman load -i {ARCHIVE} && echo '{LOADED}'; fi")  # fmt: skip
    config = {
        "write_files": [
            {"path": "/etc/hosts", "append": True, "content": f"{PORTAL_ADDR} {PORTAL_NAME}\n"},
            {"path": ARCHIVE, "encoding": "b64", "content": base64.b64encode(archive).decode()},
        ],
        # a machine switched off, not shut down, keeps only what was written out
        "runcmd": [load, "sync"],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)


@dataclass
class Boot:
    result: BootTestResult
    console: str
    seconds: float


@dataclass
class Story:
    out: Path
    lun_file: Path
    image_id: str
    first: Boot
    lun_after_first: dict[str, str]
    second: Boot


def _blkid(path: Path) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-o", "export", str(path)], capture_output=True, text=True, check=False)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def _boot(out: Path, work: Path, forward: Any) -> Boot:
    started = time.monotonic()
    result = boot_test(out, BootTestOptions(via="pxelinux", workdir=work, timeout=TIMEOUT, forwards=(forward,)))
    seconds = time.monotonic() - started
    console = result.boot.console_log.read_text(errors="replace")
    checks = result.checks
    print(
        f"{work.name}: {result.summary()}; {seconds:.0f} s to the checks' end, guest uptime {checks.get('uptime')} s; "
        f"cloud-init {checks.get('cloud-init-seconds')} s ({checks.get('cloud-init-stages')}), "
        f"done {checks.get('cloud-init-done-at')} s after the kernel started"
    )
    return Boot(result, console, seconds)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    need_root()
    need("qemu-system-x86_64", "socat", "tgtd", "tgtadm", "unshare", "nsenter", "blkid")
    where = tmp_path_factory.mktemp("iscsi")
    archive, image_id = hello_archive()
    user_data = where / "load-image.yaml"
    user_data.write_text(load_image_user_data(archive))
    out = where / "out"
    build_with_cli("atomic-iscsi", out, "--url", "http://pxe.example.com/iscsi", "--cloud-init",
                   "--ci-hostname", HOSTNAME, "--ci-iscsi", f"{PORTAL_NAME},{IQN}",
                   "--ci-user-data", str(user_data))  # fmt: skip
    meta = yaml.safe_load((out / "cloud-init/meta-data").read_text())
    initiator = derived_initiator(meta["instance-id"], HOSTNAME)
    lun_file = where / "lun.img"
    with open(lun_file, "wb") as f:
        f.truncate(LUN_BYTES)
    # Only the seed's initiator name may log in: the login shows the name the seed wrote was used.
    with tgt_target(where, IQN, lun_file, initiator=initiator) as target:
        first = _boot(out, where / "first", target.forward())
        lun_after_first = _blkid(lun_file)
        second = _boot(out, where / "second", target.forward())
    return Story(out, lun_file, image_id, first, lun_after_first, second)


def test_the_seed_has_the_storage_parts_and_the_caller_s(story: Story) -> None:
    data = yaml.safe_load((story.out / "cloud-init/user-data").read_text())
    assert data["runcmd"][:2] == IscsiStorage(PORTAL_NAME, IQN).runcmd()[:2]
    assert f"getent ahosts {PORTAL_NAME} " in data["runcmd"][1] and "--login" in data["runcmd"][1]
    assert data["runcmd"][-1] == "sync"
    paths = [f["path"] for f in data["write_files"]]
    assert paths == ["/etc/iscsi/initiatorname.iscsi", "/etc/liveimg/iscsi-storage.sh", "/etc/hosts", ARCHIVE]
    assert "hostname" not in data  # the hostname comes from the meta-data


def _check_boot(boot: Boot, story: Story) -> str:
    """What both boots show; the LUN's device."""
    result = boot.result
    assert result.ok, result.summary() + "\n" + result.boot.explain()
    checks = result.checks
    assert checks["cloud-init-status"] == "done", result.cloud_init_errors
    assert checks["hostname"] == HOSTNAME == checks["seed-hostname"]  # from the meta-data
    assert checks["ostree-booted"] == "yes"
    # the session: this target at the portal's address, the name looked up on the guest
    assert len(result.iscsi_sessions) == 1, result.iscsi_sessions
    assert f"{PORTAL_ADDR}:{PORTAL_PORT},1 {IQN}" in result.iscsi_sessions[0]
    # the LUN's disk (udev's name for it), and the storage on it
    luns = dict(line.split(" ", 1) for line in result.luns)
    assert list(luns) == [f"ip-{PORTAL_ADDR}:{PORTAL_PORT}-iscsi-{IQN}-lun-1"], luns
    device = next(iter(luns.values()))
    assert re.fullmatch(r"/dev/sd[a-z]+", device), device
    assert checks["container-storage"] == STORAGE
    assert checks["container-device"] == device and checks["container-fstype"] == "ext4"
    assert f"{IMAGE} sha256:{story.image_id}" in result.container_images, result.container_images
    return device


def test_first_boot_makes_the_filesystem_and_loads_the_image(story: Story) -> None:
    device = _check_boot(story.first, story)
    assert f"liveimg-iscsi: made an ext4 filesystem on {device}" in story.first.console
    assert f"liveimg-iscsi: mounted {device} (ext4) on {STORAGE}" in story.first.console
    assert LOADED in story.first.console and KEPT not in story.first.console
    # on the host, the LUN's file now holds that filesystem
    assert story.lun_after_first.get("TYPE") == "ext4" and story.lun_after_first.get("LABEL") == "containers"


def test_second_boot_keeps_the_filesystem_and_the_image(story: Story) -> None:
    device = _check_boot(story.second, story)
    assert f"liveimg-iscsi: kept the existing ext4 filesystem on {device}" in story.second.console
    assert "made an ext4 filesystem" not in story.second.console
    assert KEPT in story.second.console and LOADED not in story.second.console
    assert _blkid(story.lun_file)["UUID"] == story.lun_after_first["UUID"]
