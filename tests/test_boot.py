"""Unit tests of liveimg.boot: the QEMU command line, the HTTP server."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.accel import Accel, AccelChoice
from liveimg.boot import (
    DirectKernel,
    Disk,
    GuestForward,
    HttpServer,
    Machine,
    NetworkBoot,
    qemu_argv,
)
from liveimg.errors import InvalidOptions
from tests import support

TCG = AccelChoice(Accel.TCG, "test")
KVM = AccelChoice(Accel.KVM, "test")

# -- the QEMU command line -------------------------------------------------------------------------


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def test_direct_kernel_boot_argv(tmp_path: Path) -> None:
    machine = Machine(
        memory_mib=3072,
        disks=(Disk(tmp_path / "a,b.img"), Disk(tmp_path / "live.qcow2", fmt="qcow2", mode="readonly")),
        kernel=DirectKernel(tmp_path / "vmlinuz", tmp_path / "initrd.img", "root=UUID=x console=ttyS0,115200"),
    )
    argv = qemu_argv(machine, tmp_path / "console.log", TCG)
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-machine") == ["pc"]
    assert option(argv, "-accel") == ["tcg"]
    assert option(argv, "-cpu") == ["max"]
    assert option(argv, "-m") == ["3072"]
    assert option(argv, "-display") == ["none"]
    assert "-nodefaults" in argv  # no default NIC with an unrestricted network
    assert option(argv, "-serial") == [f"file:{tmp_path}/console.log"]
    assert option(argv, "-drive") == [
        f"file={tmp_path}/a,,b.img,format=raw,if=virtio,index=0,snapshot=on",
        f"file={tmp_path}/live.qcow2,format=qcow2,if=virtio,index=1,readonly=on",
    ]
    assert option(argv, "-kernel") == [str(tmp_path / "vmlinuz")]
    assert option(argv, "-initrd") == [str(tmp_path / "initrd.img")]
    assert option(argv, "-append") == ["root=UUID=x console=ttyS0,115200"]
    assert "-netdev" not in argv
    assert "-boot" not in argv


def test_kvm_uses_the_accelerators_cpu(tmp_path: Path) -> None:
    argv = qemu_argv(Machine(disks=(Disk(tmp_path / "d.img"),)), tmp_path / "c.log", KVM)
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-cpu") == ["host"]
    assert option(argv, "-boot") == ["order=c"]


def test_network_boot_argv_is_restricted(tmp_path: Path) -> None:
    support.need("socat")
    machine = Machine(netboot=NetworkBoot(tmp_path / "tftp", "pxelinux.0"), forwards=(GuestForward(41234, 8080),))
    argv = qemu_argv(machine, tmp_path / "c.log", TCG)
    socat = runner.require("socat")
    assert option(argv, "-netdev") == [
        f"user,id=net0,restrict=on,tftp={tmp_path}/tftp,bootfile=pxelinux.0,"
        f"guestfwd=tcp:10.0.2.100:8080-cmd:{socat} - TCP:127.0.0.1:41234"
    ]
    assert option(argv, "-device")[-1] == "virtio-net-pci,netdev=net0"
    assert option(argv, "-boot") == ["order=n"]


def test_unrestricted_network_must_be_asked_for(tmp_path: Path) -> None:
    machine = Machine(kernel=DirectKernel(tmp_path / "k", None, ""), network=True, restrict=False)
    argv = qemu_argv(machine, tmp_path / "c.log", TCG)
    assert option(argv, "-netdev") == ["user,id=net0"]
    assert "-initrd" not in argv


def test_machine_must_boot_one_way(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptions, match="not both"):
        qemu_argv(
            Machine(kernel=DirectKernel(tmp_path / "k", None, ""), netboot=NetworkBoot(tmp_path, "x")),
            tmp_path / "c",
            TCG,
        )
    with pytest.raises(InvalidOptions, match="nothing to boot"):
        qemu_argv(Machine(), tmp_path / "c", TCG)


# -- the HTTP server -------------------------------------------------------------------------------


def test_http_server_get_head_range(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "file.bin").write_bytes(data)
    with HttpServer(tmp_path) as server:
        assert server.url("file.bin") == f"http://127.0.0.1:{server.port}/file.bin"
        assert server.guest_url("file.bin") == "http://10.0.2.100:8080/file.bin"
        assert server.forward() == GuestForward(server.port, 8080)
        with urllib.request.urlopen(server.url("file.bin")) as resp:
            assert resp.headers["Content-Length"] == str(len(data))
            assert resp.read() == data
        head = urllib.request.Request(server.url("file.bin"), method="HEAD")
        with urllib.request.urlopen(head) as resp:
            assert resp.headers["Content-Length"] == str(len(data))
        ranged = urllib.request.Request(server.url("file.bin"), headers={"Range": "bytes=1000-1009"})
        with urllib.request.urlopen(ranged) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 1000-1009/{len(data)}"
            assert resp.read() == data[1000:1010]
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url("nope"))
        assert missing.value.code == 404
        assert [(r.method, r.path, r.bytes_sent) for r in server.requests] == [
            ("GET", "/file.bin", len(data)),
            ("HEAD", "/file.bin", 0),
            ("GET", "/file.bin", 10),
        ]


def test_http_server_large_sparse_file_with_curl(tmp_path: Path) -> None:
    """What livenet's curl does, on a file past 4 GiB (sparse: nothing big is transferred but the tail)."""
    support.need("curl")
    big = tmp_path / "live-rootfs.squashfs.img"
    size = 5 * 1024**3 + 12345
    with open(big, "wb") as f:
        f.seek(size - 4)
        f.write(b"TAIL")
    with HttpServer(tmp_path) as server:
        head = runner.run(["curl", "-sIL", "--fail", server.url(big.name)])
        assert f"Content-Length: {size}" in head.stdout
        out = tmp_path / "tail"
        runner.run(["curl", "--location", "--retry", "3", "--fail", "-s", "-r", f"{size - 8}-", "-o", out,
                    server.url(big.name)])  # fmt: skip
        assert out.read_bytes() == b"\0\0\0\0TAIL"
        small = tmp_path / "initrd.img"
        small.write_bytes(b"x" * 3_000_000)
        fetched = tmp_path / "fetched"
        runner.run(["curl", "--location", "--retry", "3", "--fail", "-s", "-o", fetched, server.url(small.name)])
        assert fetched.read_bytes() == small.read_bytes()
