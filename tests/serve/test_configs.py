"""``liveimg serve --print-config``: the trees, and the configurations run by the real nginx, dnsmasq and Kea."""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveimg.errors import InvalidOptions
from liveimg.serve import BiosLoader, DhcpMode, ServeOptions, load_builds, plan
from liveimg.serve.configs import MARKER, NGINX_ACCESS_LOG, dnsmasq_config, print_config
from liveimg.serve.dnsmasq import Network, config
from tests.serve.fakebuild import KVER, fake_build
from tests.support import free_port, need, public_directory

KERNEL = f"vmlinuz-{KVER}"
INITRAMFS = f"initramfs-{KVER}.img"
LIVE = "live-rootfs.squashfs.img"


def fake_outdir(out: Path, *, efi: bool = False) -> Path:
    return fake_build(out, efi=efi, live_bytes=4096)


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    return fake_outdir(tmp_path / "fedora live", efi=True)


# --- the tree ------------------------------------------------------------------------------------


def test_the_tree_holds_both_trees_linked_and_readable(outdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "new" / "tree"
    print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    assert sorted(p.name for p in tree.iterdir()) == sorted([MARKER, "http", "tftp"])
    served = tree / "http" / "fedora-live"
    assert sorted(p.name for p in served.iterdir()) == sorted(
        ["boot.ipxe", "grubx64.efi", INITRAMFS, KERNEL, LIVE, "shimx64.efi"]
    )
    assert os.path.samefile(served / LIVE, outdir / LIVE)  # a hard link: no copy of the live file
    assert "http://127.0.0.1:8080/fedora-live/" in (tree / "http" / "boot.ipxe").read_text()
    tftp = tree / "tftp"
    for name in (
        "pxelinux.0",
        "ldlinux.c32",
        "pxelinux.cfg/default",
        "shimx64.efi",
        "grub.cfg",
        f"fedora-live/{KERNEL}",
    ):
        assert (tftp / name).is_file(), name
    for path in [tree, *tree.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    assert not list(tmp_path.joinpath("new").glob(".tree*"))  # no staging or lock left beside it


def test_a_second_run_replaces_the_tree(outdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    inode = tree.stat().st_ino
    other = fake_outdir(tmp_path / "other")
    os.utime(other / "manifest.json", (time.time() + 10, time.time() + 10))  # the newest: the default
    print_config([other], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    assert tree.stat().st_ino != inode  # swapped in whole, not written over
    assert sorted(p.name for p in (tree / "http").iterdir()) == ["boot.ipxe", "other"]
    assert not (tree / "tftp" / "shimx64.efi").exists()


def test_an_empty_directory_is_used(outdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    assert (tree / MARKER).is_file()


def test_a_users_directory_is_refused_and_left_alone(outdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "home"
    tree.mkdir()
    (tree / "thesis.tex").write_text("mine")
    with pytest.raises(InvalidOptions, match="not empty and was not written by liveimg serve"):
        print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    assert [p.name for p in tree.iterdir()] == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fedora live", "home"]


def test_what_a_user_added_to_the_tree_is_refused(outdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    (tree / "notes").write_text("mine")
    with pytest.raises(InvalidOptions, match="holds notes, which liveimg serve --print-config did not write"):
        print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    assert (tree / "notes").read_text() == "mine"


def test_a_file_is_refused(outdir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "file"
    tree.write_text("mine")
    with pytest.raises(InvalidOptions, match="not a directory"):
        print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tree)
    assert tree.read_text() == "mine"


# --- nginx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ['a"b', "a$uri", "a\\b", "a\nb"])
def test_nginx_refuses_what_it_would_interpret(outdir: Path, tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidOptions):
        print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "nginx", tmp_path / bad)
    assert not (tmp_path / bad).exists()


def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.fixture
def public() -> Iterator[Path]:
    with public_directory("liveimg-serveconfigs-") as path:
        yield path


def test_nginx_serves_the_tree(outdir: Path, public: Path) -> None:
    need("nginx")
    port = free_port()
    tree = public / "my tree; {with} #odd 'name'"  # all plain inside nginx's double quotes
    block = print_config([outdir], ServeOptions(http=f"127.0.0.1:{port}"), "nginx", tree)
    assert "autoindex off;" in block and "limit_except GET" in block and "disable_symlinks on" in block
    log = public / "access.log"
    conf = public / "nginx.conf"
    conf.write_text(
        "user nobody nogroup;\n"  # as a real nginx: its workers read the tree as an unprivileged user
        f"pid {public / 'nginx.pid'};\nerror_log {public / 'error.log'};\n"
        "events {}\n"
        "http {\n"
        f"client_body_temp_path {public};\nproxy_temp_path {public};\nfastcgi_temp_path {public};\n"
        f"uwsgi_temp_path {public};\nscgi_temp_path {public};\n" + block.replace(NGINX_ACCESS_LOG, str(log)) + "}\n"
    )
    check = subprocess.run(
        ["nginx", "-t", "-p", str(public), "-c", str(conf)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(["nginx", "-p", str(public), "-c", str(conf), "-g", "daemon off;"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.05)
        menu = get(port, "/boot.ipxe")
        assert menu.status == 200 and menu.getheader("Content-Type") == "text/plain; charset=utf-8"
        part = get(port, f"/fedora-live/{LIVE}", headers={"Range": "bytes=0-99"})
        assert part.status == 206 and part.getheader("Content-Length") == "100"
        assert get(port, f"/fedora-live/{LIVE}", "HEAD").getheader("Content-Length") == "4096"
        assert get(port, f"/fedora-live/{KERNEL}").getheader("Content-Type") == "application/octet-stream"
        assert get(port, "/nothing").status == 404
        assert get(port, f"/{MARKER}").status == 404  # the tree's own files are outside the root
        assert get(port, f"/../{MARKER}").status in (400, 404)
        assert get(port, "/fedora-live/").status == 404  # no listing, no redirect
        assert get(port, "/fedora-live").status == 404
        assert get(port, "/").status == 404
        assert get(port, "/boot.ipxe", "POST").status == 403
        assert get(port, "/boot.ipxe", "DELETE").status == 403
        # a symbolic link put in the tree is not followed, wherever it points
        (public / "outside").write_text("not served")
        os.symlink(public / "outside", tree / "http" / "link")
        os.symlink(tree / "http" / "boot.ipxe", tree / "http" / "inside")
        assert get(port, "/link").status in (403, 404)
        assert get(port, "/inside").status in (403, 404)
    finally:
        proc.terminate()
        proc.wait(10)
    assert 'GET /boot.ipxe HTTP/1.1" 200' in log.read_text()


def test_nginx_listen_forms(outdir: Path, tmp_path: Path) -> None:
    for address, listen in (("[::1]:8080", "[::1]:8080"), (":8081", "0.0.0.0:8081"), ("0.0.0.0:80", "0.0.0.0:80")):
        options = ServeOptions(http=address, url="http://boot.example:8080")
        block = print_config([outdir], options, "nginx", tmp_path / "tree")
        assert f"    listen {listen};\n" in block


# --- dnsmasq -------------------------------------------------------------------------------------


def dnsmasq_accepts(text: str, tmp_path: Path) -> None:
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(text)
    done = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", list(DhcpMode))
def test_dnsmasq_accepts_its_config(outdir: Path, tmp_path: Path, mode: DhcpMode) -> None:
    need("dnsmasq", "ip")
    tree = tmp_path / "tree"
    # lo has an IPv4 address everywhere: the interface is read as for a real one, without root.
    options = ServeOptions(http="127.0.0.1:8080", dhcp=mode, interface="lo" if mode is not DhcpMode.NONE else None)
    text = print_config([outdir], options, "dnsmasq", tree)
    dnsmasq_accepts(text, tmp_path)
    assert f"tftp-root={tree / 'tftp'}\n" in text
    assert "leasefile" not in text  # dnsmasq's own lease file, not one in a private directory
    assert ("dhcp-range=" in text) is (mode is not DhcpMode.NONE)


def test_dnsmasq_refuses_a_tree_it_cannot_hold(outdir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidOptions, match="dnsmasq cannot be given"):
        print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "dnsmasq", tmp_path / "a,b")
    assert not (tmp_path / "a,b").exists()


@pytest.mark.parametrize("loader", list(BiosLoader))
def test_dnsmasq_config_for_a_lab_network(outdir: Path, tmp_path: Path, loader: BiosLoader) -> None:
    need("dnsmasq")
    network = Network("eth7", ipaddress.IPv4Interface("192.0.2.1/24"))
    the_plan = plan(load_builds([outdir]), "http://192.0.2.1:8080", loader=loader)
    for mode in (DhcpMode.FULL, DhcpMode.PROXY):
        dnsmasq_accepts(config(the_plan, mode, tftp_root=tmp_path / "t", network=network), tmp_path)


# --- Kea -----------------------------------------------------------------------------------------


def kea_json(text: str) -> dict[str, object]:
    """The JSON of a Kea configuration, its ``#`` comment lines left out."""
    data: dict[str, object] = json.loads("\n".join(line for line in text.splitlines() if not line.startswith("#")))
    return data


@pytest.mark.parametrize("loader", list(BiosLoader))
def test_kea_accepts_its_config(outdir: Path, tmp_path: Path, loader: BiosLoader) -> None:
    need("kea-dhcp4", "ip")
    options = ServeOptions(http="127.0.0.1:8080", dhcp=DhcpMode.FULL, interface="lo", loader=loader)
    text = print_config([outdir], options, "kea", tmp_path / "tree")
    conf = tmp_path / "kea.conf"
    conf.write_text(text)
    done = subprocess.run(["kea-dhcp4", "-t", str(conf)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"--secure {tmp_path / 'tree' / 'tftp'}" in text
    dhcp4 = kea_json(text)["Dhcp4"]
    assert isinstance(dhcp4, dict)
    assert dhcp4["interfaces-config"] == {"interfaces": ["lo"]}
    assert dhcp4["subnet4"][0]["subnet"] == "127.0.0.0/8"
    classes = {c["name"]: c for c in dhcp4["client-classes"]}
    assert {c["next-server"] for c in classes.values()} == {"127.0.0.1"}
    ipxe, efi = "option[77].text == 'iPXE'", "option[93].hex == 0x0007 or option[93].hex == 0x0009"
    bios = "undionly.kpxe" if loader is BiosLoader.IPXE else "pxelinux.0"
    if loader is BiosLoader.PXELINUX:  # iPXE on BIOS gets pxelinux too
        assert classes["ipxe"]["test"] == f"({ipxe}) and ({efi})"
        assert classes["bios"]["test"] == f"not ({efi})"
    else:
        assert classes["ipxe"]["test"] == f"({ipxe})"
        assert classes["bios"]["test"] == f"not ({ipxe}) and not ({efi})"
    assert classes["efi64"]["test"] == f"not ({ipxe}) and ({efi})"
    assert classes["ipxe"]["boot-file-name"] == "http://127.0.0.1:8080/boot.ipxe"
    assert classes["bios"]["boot-file-name"] == bios
    assert classes["efi64"]["boot-file-name"] == "shimx64.efi"


def test_kea_refuses_proxy_dhcp_and_no_interface(outdir: Path, tmp_path: Path) -> None:
    proxy = ServeOptions(http="127.0.0.1:8080", dhcp=DhcpMode.PROXY, interface="lo")
    with pytest.raises(InvalidOptions, match="Kea cannot be a proxy DHCP server") as excinfo:
        print_config([outdir], proxy, "kea", tmp_path / "tree")
    assert "dnsmasq" in (excinfo.value.hint or "")
    with pytest.raises(InvalidOptions, match="needs --interface"):
        print_config([outdir], ServeOptions(http="127.0.0.1:8080"), "kea", tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


# --- the CLI -------------------------------------------------------------------------------------


def liveimg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liveimg", "serve", *args], capture_output=True, text=True, check=False
    )


def test_cli_prints_the_config(outdir: Path, tmp_path: Path) -> None:
    port = free_port()
    done = liveimg(str(outdir), "--print-config", "nginx", "--tree", str(tmp_path / "t"), "--http", f"127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    assert f"    listen 127.0.0.1:{port};\n" in done.stdout and (tmp_path / "t" / MARKER).is_file()


def test_cli_without_tree_is_one_line(outdir: Path) -> None:
    done = liveimg(str(outdir), "--print-config", "nginx", "--http", "127.0.0.1:8080")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--print-config needs --tree" in done.stderr


def test_the_readme_s_dnsmasq_example_is_what_it_prints(tmp_path: Path) -> None:
    """The README's example block, for its one build on its lab network, line for line."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("--dhcp full --print-config dnsmasq --tree /srv/liveimg` prints") :]
    block = section[section.index("```ini\n") + len("```ini\n") : section.index("\n```\n")]
    out = fake_build(tmp_path / "atomic", efi=True)
    network = Network("eth0", ipaddress.IPv4Interface("192.0.2.10/24"))
    options = ServeOptions(http="192.0.2.10:8080", dhcp=DhcpMode.FULL, interface="eth0")
    the_plan = plan(load_builds([out]), "http://192.0.2.10:8080")
    text = dnsmasq_config(the_plan, options, network, Path("/srv/liveimg"))
    assert [line for line in text.splitlines() if line and not line.startswith("#")] == block.splitlines()
