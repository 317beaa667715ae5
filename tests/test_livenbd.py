"""liveimg's livenbdroot and its cmdline hook, run for real with sh, head and sha256sum in a
directory standing in for the initramfs's /; nbd-client is a stand-in there that "attaches" a
file as ``$P/dev/nbd0`` (its size in ``$P/sys/block/nbd0/size``) and records its arguments (the
real one, against a real NBD server, is booted by tests/e2e/test_live_nbd.py)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveimg import pipeline
from liveimg.console import DEFAULT_FAILURES
from liveimg.errors import InvalidImage
from liveimg.fsview import GuestTree, HostFS
from liveimg.livenbd import CMDLINE_HOOK, DRACUT_INSTALL, GENERATOR, LIVENBDROOT, MESSAGES, check_image
from liveimg.liveverify import TIMEOUT_HOOK, verify_line
from liveimg.options import BuildOptions
from liveimg.pxe import PxeOptions
from tests.support import need

IMAGE = bytes(range(256)) * 4096  # 1 MiB, standing in for the live file
SHA = hashlib.sha256(IMAGE).hexdigest()
FLIPPED = IMAGE[:5000] + bytes([IMAGE[5000] ^ 1]) + IMAGE[5001:]
SHELLS = pytest.mark.parametrize("shell", ["sh", "bash"])
URL = "nbd://10.0.2.100:10809/live/live-rootfs.squashfs.img"

# A dracut-lib.sh with what the scripts use: getarg over $P/proc/cmdline, wait_for_dev recorded.
DRACUT_LIB = r"""
getarg() {
    for _a in $(cat "$LIVEIMG_PREFIX/proc/cmdline"); do
        case "$_a" in "$1"*) echo "${_a#"$1"}"; return 0 ;; esac
    done
    return 1
}
wait_for_dev() { echo "$*" >> "$LIVEIMG_PREFIX/waited"; }
"""

# nbd-client HOST PORT DEVICE -N NAME -R: fails while $P/nbd-fails counts down (its message on
# stderr), else "attaches" $P/export (its size rounded up to sectors, as the kernel shows it).
FAKE_NBD_CLIENT = r"""#!/bin/sh
P=$LIVEIMG_PREFIX
echo "$*" >> "$P/nbd-calls"
if [ -s "$P/nbd-fails" ]; then
    read -r n < "$P/nbd-fails"
    [ "$n" -gt 0 ] && { echo $((n - 1)) > "$P/nbd-fails"; echo "Error: Socket failed: Connection refused" >&2; exit 1; }
fi
[ "$3" = "$P/dev/nbd0" ] || exit 2
cp "$P/export" "$3"
set -- $(ls -ln "$P/export")
echo $((($5 + 511) / 512)) > "$P/sys/block/nbd0/size"
"""


@dataclass
class Run:
    root: Path
    returncode: int
    stderr: str

    @property
    def kmsg(self) -> list[str]:
        return (self.root / "dev/kmsg").read_text().splitlines()

    @property
    def failures(self) -> list[str]:
        return [line.removeprefix("<2>") for line in self.kmsg if line.startswith("<2>")]

    @property
    def halted(self) -> bool:
        return (self.root / "halted").exists()

    @property
    def handed(self) -> str | None:
        path = self.root / "handed"
        return path.read_text().strip() if path.exists() else None

    @property
    def calls(self) -> list[str]:
        path = self.root / "nbd-calls"
        return path.read_text().splitlines() if path.exists() else []


def _root(
    tmp_path: Path, cmdline: str, export: bytes, verify: str | None, fails: int = 0
) -> tuple[Path, dict[str, str]]:
    need("sh", "head", "sha256sum")
    root = tmp_path / "root"
    for d in ("lib", "dev", "proc", "tmp", "sbin", "etc/liveimg", "bin", "sys/block/nbd0"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "lib/dracut-lib.sh").write_text(DRACUT_LIB)
    (root / "dev/kmsg").write_text("")
    (root / "proc/cmdline").write_text(cmdline + "\n")
    (root / "export").write_bytes(export)
    (root / "nbd-fails").write_text(f"{fails}\n")
    if verify is not None:
        (root / "etc/liveimg/live-image").write_text(verify)
    handed = root / "sbin/dmsquash-live-root"
    handed.write_text(f'#!/bin/sh\necho "$@" > {root}/handed\n')
    handed.chmod(0o755)
    for tool in ("head", "sha256sum", "cat", "cp", "ls", "sleep"):
        found = shutil.which(tool)
        assert found is not None, tool
        os.symlink(found, root / "bin" / tool)
    for tool, text in (
        ("nbd-client", FAKE_NBD_CLIENT),
        ("halt", f'#!/bin/sh\necho "halt $*" >> {root}/halted\n'),
        ("poweroff", f'#!/bin/sh\necho "poweroff $*" >> {root}/halted\n'),
    ):
        (root / "bin" / tool).write_text(text)
        (root / "bin" / tool).chmod(0o755)
    return root, {"PATH": str(root / "bin"), "LIVEIMG_PREFIX": str(root), "LIVEIMG_PAUSE": "0"}


def _shell(name: str) -> str:
    need(name)
    found = shutil.which(name)
    assert found is not None
    return found


def _livenbdroot(
    tmp_path: Path, url: str = URL, *, export: bytes = IMAGE, verify: str | None = verify_line(len(IMAGE), SHA),
    fails: int = 0, shell: str = "sh",
) -> Run:  # fmt: skip
    root, env = _root(tmp_path, f"root=live:{url}", export, verify, fails)
    script = tmp_path / "livenbdroot"
    script.write_text(LIVENBDROOT)
    proc = subprocess.run(
        [_shell(shell), str(script), "eth0", f"livenbd:{url}", "/sysroot"],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return Run(root, proc.returncode, proc.stderr)


def _one_failure(run: Run, kind: str) -> re.Match[str]:
    assert run.halted and run.handed is None, run.kmsg
    assert len(run.failures) == 1, run.kmsg
    match = re.fullmatch(MESSAGES[kind] + ".*", run.failures[0])
    assert match, run.failures[0]
    for other, pattern in MESSAGES.items():
        assert other == kind or not re.match(pattern, run.failures[0]), (other, run.failures[0])
    # boot-test ends the boot at this line as liveimg's own failure.
    assert [p.name for p in DEFAULT_FAILURES if p.search(f"[   42.1] {run.failures[0]}")][:1] == ["image-verify"]
    return match


@SHELLS
def test_the_export_is_attached_read_only_checked_and_handed_to_dmsquash(tmp_path: Path, shell: str) -> None:
    run = _livenbdroot(tmp_path, shell=shell)
    assert run.returncode == 0, (run.kmsg, run.stderr)
    assert not run.halted and not run.failures
    device = f"{run.root}/dev/nbd0"
    assert run.calls == [f"10.0.2.100 10809 {device} -N live/live-rootfs.squashfs.img -R"]
    assert run.handed == device
    assert f"<5>liveimg: {URL} checked: {len(IMAGE)} bytes, sha256 {SHA}" in run.kmsg


def test_an_ipv6_host_without_a_port_takes_nbd_s_port(tmp_path: Path) -> None:
    run = _livenbdroot(tmp_path, url="nbd://[fd00::1]/x.img")
    assert run.returncode == 0, run.kmsg
    assert run.calls == [f"fd00::1 10809 {run.root}/dev/nbd0 -N x.img -R"]


def test_a_server_not_yet_up_is_retried(tmp_path: Path) -> None:
    run = _livenbdroot(tmp_path, fails=2)
    assert run.returncode == 0, run.kmsg
    assert len(run.calls) == 3 and run.handed is not None
    assert sum("retrying" in line for line in run.kmsg) == 2


def test_a_server_never_up_stops_after_bounded_tries(tmp_path: Path) -> None:
    run = _livenbdroot(tmp_path, fails=99)
    match = _one_failure(run, "unreachable")
    assert match.group(1) == URL
    assert len(run.calls) == 4
    assert run.failures[0].endswith(
        "after 4 tries: Error: Socket failed: Connection refused "
        "(is the server exporting live/live-rootfs.squashfs.img?)"
    )


@SHELLS
def test_a_flipped_byte_is_another_build(tmp_path: Path, shell: str) -> None:
    match = _one_failure(_livenbdroot(tmp_path, export=FLIPPED, shell=shell), "mismatch")
    assert match.groups() == (URL, SHA, hashlib.sha256(FLIPPED).hexdigest())


def test_a_damaged_verify_file_stops_before_attaching(tmp_path: Path) -> None:
    run = _livenbdroot(tmp_path, verify="12x not-a-hash\n")
    assert run.halted and run.handed is None
    assert run.failures == [f"liveimg: cannot check {URL}: {tmp_path}/root/etc/liveimg/live-image is damaged "
                            "(rebuild the initramfs)"]  # fmt: skip
    assert run.calls == []


def test_a_shorter_export_is_short(tmp_path: Path) -> None:
    match = _one_failure(_livenbdroot(tmp_path, export=IMAGE[:300000]), "short")
    # The device's size is in 512-byte sectors.
    assert match.groups() == (URL, str(300032), str(len(IMAGE)))


def test_a_longer_device_is_checked_on_the_live_file_s_bytes(tmp_path: Path) -> None:
    run = _livenbdroot(tmp_path, export=IMAGE + b"\0" * 300)
    assert run.returncode == 0 and run.handed is not None, run.kmsg


def test_without_the_verify_file_any_export_is_handed(tmp_path: Path) -> None:
    run = _livenbdroot(tmp_path, export=FLIPPED, verify=None)
    assert run.returncode == 0 and run.handed == f"{run.root}/dev/nbd0", run.kmsg
    assert not any("checked" in line for line in run.kmsg)


def test_a_second_interface_does_not_attach_again(tmp_path: Path) -> None:
    first = _livenbdroot(tmp_path)
    assert first.handed is not None
    (first.root / "handed").unlink()
    script = tmp_path / "livenbdroot"
    env = {"PATH": str(first.root / "bin"), "LIVEIMG_PREFIX": str(first.root)}
    proc = subprocess.run([_shell("sh"), str(script), "eth1", f"livenbd:{URL}"], check=False, env=env, timeout=60)
    assert proc.returncode == 0 and len(first.calls) == 1 and first.handed is None


def test_a_url_without_an_export_stops(tmp_path: Path) -> None:
    run = _livenbdroot(tmp_path, url="nbd://10.0.2.100:10809")
    _one_failure(run, "unreachable")
    assert "not nbd://HOST[:PORT]/EXPORT" in run.failures[0] and not run.calls


def _cmdline_hook(tmp_path: Path, cmdline: str) -> dict[str, str]:
    root, env = _root(tmp_path, cmdline, IMAGE, None)
    hook = tmp_path / "hook.sh"
    hook.write_text(CMDLINE_HOOK)
    proc = subprocess.run(
        [_shell("sh"), "-c", f'. "$LIVEIMG_PREFIX/lib/dracut-lib.sh"; root=; . {hook}; '
                     'echo "root=$root"; echo "netroot=$netroot"; echo "rootok=$rootok"'],
        check=True, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    waited = root / "waited"
    values["waited"] = waited.read_text().strip() if waited.exists() else ""
    return values


def test_the_cmdline_hook_makes_nbd_a_netroot_for_livenbdroot(tmp_path: Path) -> None:
    got = _cmdline_hook(tmp_path / "a", f"console=ttyS0 root=live:{URL} rd.live.image")
    assert got == {"root": "livenbd", "netroot": f"livenbd:{URL}", "rootok": "1", "waited": "-n /dev/root"}
    other = _cmdline_hook(tmp_path / "b", "root=live:http://10.0.2.100:8080/live.img")
    assert other == {"root": "live:http://10.0.2.100:8080/live.img", "netroot": "", "rootok": "", "waited": ""}


def test_the_timeout_hook_says_the_network_never_came_up_for_nbd(tmp_path: Path) -> None:
    root, env = _root(tmp_path, f"root=live:{URL}", IMAGE, None)
    (root / "proc/uptime").write_text("131.52 250.01\n")
    hook = tmp_path / "hook.sh"
    hook.write_text(TIMEOUT_HOOK)
    shell = _shell("sh")
    subprocess.run([shell, "-c", f'. "$LIVEIMG_PREFIX/lib/dracut-lib.sh"; . {hook}'], check=False, env=env, timeout=60)
    assert (root / "halted").exists()
    assert (
        f"the network never came up: no interface was online after 131 s to fetch {URL}"
        in (root / "dev/kmsg").read_text()
    )


def test_an_nbd_url_asks_dracut_for_nbd_client_and_the_module() -> None:
    opts, _ = pipeline._check_options(BuildOptions(pxe=PxeOptions(url="nbd://192.0.2.1/live")))
    args = opts.dracut.extra_args
    assert args[-len(DRACUT_INSTALL) :] == DRACUT_INSTALL == ("--install", "nbd-client head", "--add-drivers", "nbd")
    http, _ = pipeline._check_options(BuildOptions(pxe=PxeOptions(url="http://192.0.2.1/live")))
    assert "nbd-client head" not in http.dracut.extra_args


def test_an_image_without_nbd_client_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "usr/sbin").mkdir(parents=True)
    tree = GuestTree(HostFS(tmp_path))
    with pytest.raises(InvalidImage, match="has no nbd-client") as caught:
        check_image(tree)
    assert caught.value.hint == "install nbd-client in the image, or give an http:// --url"
    (tmp_path / "usr/sbin/nbd-client").write_text("#!/bin/sh\n")
    (tmp_path / "usr/sbin/nbd-client").chmod(0o755)
    check_image(tree)


def _generator(tmp_path: Path, cmdline: str) -> Path:
    root, env = _root(tmp_path, cmdline, IMAGE, None)
    lib = root / "lib/dracut-lib.sh"
    lib.write_text(lib.read_text() + 'getargbool() { _v=$(getarg "$2=") || return 1; [ "$_v" != 0 ]; }\n')
    script = tmp_path / "generator"
    script.write_text(GENERATOR)
    env["PATH"] += ":" + os.path.dirname(_shell("mkdir"))
    out = tmp_path / "units"
    subprocess.run([_shell("sh"), "-c", f'. "{lib}"; . {script}', "generator", "/n", str(out), "/l"],
                   check=True, env=env, timeout=60)  # fmt: skip
    return out


def test_the_generator_mounts_the_live_root_made_of_the_nbd_device(tmp_path: Path) -> None:
    units = _generator(tmp_path / "a", f"root=live:{URL} rootflags=noatime")
    assert (units / "sysroot.mount").read_text() == (
        "[Unit]\nBefore=initrd-root-fs.target\n[Mount]\nWhere=/sysroot\nWhat=/dev/mapper/live-rw\nOptions=noatime\n"
    )
    assert "JobTimeoutSec=3000" in (units / "dev-mapper-live\\x2drw.device.d/timeout.conf").read_text()
    overlay = _generator(tmp_path / "b", f"root=live:{URL} rd.live.overlay.overlayfs=1")
    assert (
        "What=LiveOS_rootfs\nType=overlay\nOptions=lowerdir=/run/rootfsbase,upperdir=/run/overlayfs,"
        in (overlay / "sysroot.mount").read_text()
    )
    assert not _generator(tmp_path / "c", "root=live:http://h/live.img").exists()
