"""liveimg.nbdserve: a real qemu-nbd exports a file read-only, read back with qemu-img over NBD."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from liveimg.nbdserve import NbdServer
from liveimg.qemu import GUEST_FORWARD_ADDR
from tests.support import need


def test_the_file_is_exported_read_only_under_its_name_and_stopped_after(tmp_path: Path) -> None:
    need("qemu-nbd", "qemu-img")
    data = bytes(range(256)) * 64
    (tmp_path / "live.img").write_bytes(data)
    with NbdServer(tmp_path / "live.img", "a/live.img", tmp_path / "nbd.log") as server:
        assert server.guest_url() == f"nbd://{GUEST_FORWARD_ADDR}:10809"
        assert server.forward().host_port == server.port
        url = f"nbd://127.0.0.1:{server.port}/a/live.img"
        for _ in range(2):  # --persistent: a second client after the first
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", url, tmp_path / "copy"], check=True)
            assert (tmp_path / "copy").read_bytes() == data
        wrong = subprocess.run(
            ["qemu-img", "info", f"nbd://127.0.0.1:{server.port}/other"], check=False, capture_output=True
        )
        assert wrong.returncode != 0
        write = subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write 0 512", url], capture_output=True, text=True, check=False
        )
        assert write.returncode != 0 or "failed" in write.stdout + write.stderr
        port = server.port
    assert (tmp_path / "live.img").read_bytes() == data
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(["qemu-img", "info", f"nbd://127.0.0.1:{port}/a/live.img"], check=True, capture_output=True)
