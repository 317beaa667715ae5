"""The seed's iSCSI part (liveimg.iscsi): strict portal and name checks, the commands and files it
adds, how it merges into a caller's #cloud-config, and the storage script run for real on a file
standing in for the LUN (blkid and mkfs.ext4 real; mount, systemctl and udevadm recorded)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from liveimg.errors import InvalidOptions
from liveimg.iscsi import (
    INITIATOR_FILE,
    SCRIPT_PATH,
    STORAGE_SCRIPT,
    IscsiStorage,
    derived_initiator,
    iscsi_name,
    parse_portal,
)
from liveimg.pxe import CloudInitSeed
from tests.support import need

TARGET = "iqn.2016-04.com.example:storage"


@pytest.mark.parametrize(
    ("given", "portal"),
    [
        ("192.0.2.10", "192.0.2.10:3260"),
        ("192.0.2.10:3261", "192.0.2.10:3261"),
        ("[2001:db8::1]", "[2001:db8::1]:3260"),
        ("[2001:DB8:0::1]:860", "[2001:db8::1]:860"),
        ("storage.example.com", "storage.example.com:3260"),
        ("san-1:65535", "san-1:65535"),
    ],
)
def test_portals_are_normalised_with_their_port(given: str, portal: str) -> None:
    assert parse_portal(given) == portal


@pytest.mark.parametrize(
    "hostile",
    [
        "", ":3260", "192.0.2.10:", "192.0.2.10:0", "192.0.2.10:65536", "192.0.2.10:+80", "192.0.2.10:3260:1",
        "192.0.2.256", "192.0.2", "2001:db8::1", "[2001:db8::1", "[2001:db8::1]3260", "[not-v6]:3260",
        "-oProxyCommand=x", "host name", "host;reboot", "$(reboot)", "`id`", "a\nb", "a\0b", "hôte",
        "h_st", "exa..mple", "x" * 64 + ".com", "192.0.2.10 --login",
    ],
)  # fmt: skip
def test_hostile_portals_are_refused(hostile: str) -> None:
    with pytest.raises(InvalidOptions, match="invalid iSCSI portal"):
        parse_portal(hostile)


@pytest.mark.parametrize(
    "name",
    [TARGET, "iqn.1994-05.com.redhat:1a2b3c", "iqn.2026-12.invalid.liveimg", "eui.02004567A425678D",
     "naa.52004567BA64678D", "naa.62004567BA64678D0123456789ABCDEF", "iqn.2001-04.com.example:a.b-c:d"],
)  # fmt: skip
def test_rfc_3720_names_are_accepted(name: str) -> None:
    assert iscsi_name(name) == name


@pytest.mark.parametrize(
    "hostile",
    [
        "", "iqn", "iqn.2016-13.com.example:x", "iqn.16-04.com.example", "iqn.2016-04.-com.example",
        "iqn.2016-04.com.Example:x", "iqn.2016-04.com.example:a b", "iqn.2016-04.com.example:$(id)",
        "iqn.2016-04.com.example:x'y", "iqn.2016-04.com.example:x\ny", "iqn.2016-04.com.example:x/../y",
        "eui.02004567A425678", "eui.02004567A425678DZ", "naa.1234", "IQN.2016-04.com.example",
        "iqn.2016-04.com.example:" + "x" * 200, "--login", "iqn.2016-04.com.example:x,3",
    ],
)  # fmt: skip
def test_hostile_names_are_refused(hostile: str) -> None:
    with pytest.raises(InvalidOptions, match="invalid iSCSI"):
        iscsi_name(hostile)


def test_parse_the_cli_spec() -> None:
    assert IscsiStorage.parse(f"192.0.2.10,{TARGET}") == IscsiStorage("192.0.2.10:3260", TARGET)
    assert IscsiStorage.parse(f"[::1]:99,{TARGET},7").lun == 7
    for spec, message in [
        ("192.0.2.10", "is not PORTAL,IQN"),
        (f"192.0.2.10,{TARGET},1,2", "is not PORTAL,IQN"),
        (f"192.0.2.10,{TARGET},-1", "invalid iSCSI LUN"),
        (f"192.0.2.10,{TARGET},256", "invalid iSCSI LUN"),
        (f"192.0.2.10,{TARGET},1x", "invalid iSCSI LUN"),
        (f"192.0.2.10;id,{TARGET}", "invalid iSCSI portal"),
        ("192.0.2.10,iqn.2016-04.com.example:$(id)", "invalid iSCSI target name"),
    ]:
        with pytest.raises(InvalidOptions, match=message.replace("(", r"\(")):
            IscsiStorage.parse(spec)
    with pytest.raises(InvalidOptions, match="invalid iSCSI initiator name"):
        IscsiStorage.parse(f"192.0.2.10,{TARGET}", initiator="me")
    with pytest.raises(InvalidOptions, match="unknown container engine"):
        IscsiStorage.parse(f"192.0.2.10,{TARGET}", engine="lxc")


def _user_data(seed: CloudInitSeed, boot_seed: str = "input") -> dict[str, Any]:
    text = seed.user_data_text(boot_seed)
    assert text.startswith("#cloud-config\n")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_the_seed_logs_in_then_sets_up_the_storage_before_the_caller_s_commands() -> None:
    seed = CloudInitSeed(hostname="node1", runcmd=("podman load -i /x.tar",), iscsi=IscsiStorage("192.0.2.10", TARGET))
    data = _user_data(seed)
    commands = [shlex.split(c) for c in data["runcmd"]]
    assert commands == [
        ["iscsiadm", "--mode", "discoverydb", "--type", "sendtargets", "--portal", "192.0.2.10:3260", "--discover"],
        ["iscsiadm", "--mode", "node", "--targetname", TARGET, "--portal", "192.0.2.10:3260", "--login"],
        ["sh", SCRIPT_PATH, TARGET, "any", "/var/lib/containers/storage", "podman.socket", "podman.service"],
        ["podman", "load", "-i", "/x.tar"],
    ]
    files = {f["path"]: f for f in data["write_files"]}
    assert files[SCRIPT_PATH]["content"] == STORAGE_SCRIPT
    assert files[SCRIPT_PATH]["permissions"] == "0755"
    # the derived initiator name: stable for the seed's instance, another for another instance
    meta = seed.meta_data("input")
    initiator = derived_initiator(meta["instance-id"], "node1")
    assert files[INITIATOR_FILE]["content"] == f"InitiatorName={initiator}\n"
    assert initiator.startswith("iqn.2026-12.invalid.liveimg:node1.")
    assert _user_data(seed) == data
    other = _user_data(seed, "another input")
    assert {f["path"]: f for f in other["write_files"]}[INITIATOR_FILE] != files[INITIATOR_FILE]
    # and the hostname still comes from the seed
    assert data["hostname"] == "node1"


def test_a_given_initiator_docker_and_a_lun() -> None:
    iscsi = IscsiStorage("[2001:db8::5]:3261", "eui.02004567A425678D", lun=3, initiator="iqn.1994-05.com.redhat:n1",
                         engine="docker")  # fmt: skip
    data = _user_data(CloudInitSeed(iscsi=iscsi))
    assert shlex.split(data["runcmd"][1])[-3:] == ["--portal", "[2001:db8::5]:3261", "--login"]
    assert shlex.split(data["runcmd"][2]) == [
        "sh", SCRIPT_PATH, "eui.02004567A425678D", "3", "/var/lib/docker", "docker.socket", "docker.service",
    ]  # fmt: skip
    assert data["write_files"][0] == {
        "path": INITIATOR_FILE, "content": "InitiatorName=iqn.1994-05.com.redhat:n1\n", "permissions": "0644",
    }  # fmt: skip


_STUB = """#!/bin/sh
# {name}: prints its arguments one per line to $STUB_LOG (getent: the lines of $GETENT_OUT)
if [ "$(basename "$0")" = getent ]; then printf '%b' "$GETENT_OUT"; exit 0; fi
printf '%s\\n' "$@" >> "$STUB_LOG"
"""


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("10.0.2.100      STREAM iscsi-target\\n10.0.2.100      DGRAM\\n", "10.0.2.100:3260"),
        ("2001:db8::7     STREAM iscsi-target\\n10.0.2.100      STREAM\\n", "[2001:db8::7]:3260"),
        ("", ":3260"),  # no address: iscsiadm says what is wrong with the portal, cloud-init reports it
    ],
)
def test_a_host_name_portal_is_its_first_address_when_the_commands_run(
    tmp_path: Path, answer: str, expected: str
) -> None:
    """Some open-iscsi releases find no node record for a host name (its issue 450): the commands,
    run by the POSIX shell, give iscsiadm the address the name resolves to on the booted host."""
    for name in ("getent", "iscsiadm"):
        stub = tmp_path / name
        stub.write_text(_STUB.format(name=name))
        stub.chmod(0o755)
    storage = IscsiStorage("iscsi-target", TARGET)
    assert storage.portal == "iscsi-target:3260"
    log = tmp_path / "log"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "STUB_LOG": str(log), "GETENT_OUT": answer}
    for line in storage.runcmd()[:2]:
        subprocess.run(["/bin/sh", "-c", line], env=env, check=True)
    args = log.read_text().splitlines()
    assert args == [
        "--mode", "discoverydb", "--type", "sendtargets", "--portal", expected, "--discover",
        "--mode", "node", "--targetname", TARGET, "--portal", expected, "--login",
    ]  # fmt: skip
    # an address is given as it is, looked up by nobody
    assert "getent" not in " ".join(IscsiStorage("10.0.2.100", TARGET).runcmd())


def test_merged_into_a_cloud_config_user_data() -> None:
    user = "#cloud-config\n# mine\nruncmd:\n  - [podman, load, -i, /x.tar]\n"
    user += "write_files:\n  - path: /etc/a\n    content: a\npackages: [htop]\n"
    seed = CloudInitSeed(hostname="node1", user_data=user, iscsi=IscsiStorage("192.0.2.10", TARGET))
    data = _user_data(seed)
    assert data["packages"] == ["htop"]
    assert data["runcmd"][3:] == [["podman", "load", "-i", "/x.tar"]]
    assert [shlex.split(c)[:3] for c in data["runcmd"][:3]] == [
        ["iscsiadm", "--mode", "discoverydb"], ["iscsiadm", "--mode", "node"], ["sh", SCRIPT_PATH, TARGET],
    ]  # fmt: skip
    assert [f["path"] for f in data["write_files"]] == [INITIATOR_FILE, SCRIPT_PATH, "/etc/a"]
    assert "hostname" not in data  # the user-data's own: hostname comes from meta-data
    # an empty cloud-config takes the parts alone
    empty = _user_data(CloudInitSeed(user_data="#cloud-config\n", iscsi=IscsiStorage("192.0.2.10", TARGET)))
    assert set(empty) == {"write_files", "runcmd"}
    # without --ci-iscsi, the user-data is served as given
    assert CloudInitSeed(user_data=user).user_data_text("x") == user


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("#!/bin/sh\necho hi\n", "--ci-iscsi adds to a #cloud-config user-data"),
        ("#include\nhttp://example.com/x\n", "--ci-iscsi adds to a #cloud-config user-data"),
        ("Content-Type: multipart/mixed\n", "--ci-iscsi adds to a #cloud-config user-data"),
        ("#cloud-config\n- a\n- b\n", "is not a cloud-config mapping"),
        ("#cloud-config\nruncmd: reboot\n", "runcmd is not a list"),
        ("#cloud-config\nwrite_files: {path: /x}\n", "write_files is not a list"),
        (f"#cloud-config\nwrite_files:\n  - path: {INITIATOR_FILE}\n    content: x\n", "writes /etc/iscsi/"),
    ],
)
def test_user_data_it_cannot_add_to_is_refused_in_one_line(user: str, message: str) -> None:
    seed = CloudInitSeed(user_data=user, iscsi=IscsiStorage("192.0.2.10", TARGET))
    with pytest.raises(InvalidOptions, match=message) as info:
        seed.user_data_text()
    assert "\n" not in str(info.value)


def test_hostile_user_values_stay_data() -> None:
    """Whatever the caller's other strings, the merged YAML reads back as exactly what was meant."""
    runcmd = ("echo '$(id)'\n; reboot", "x: [y]", "|\n  - z", "#!/bin/sh", "'\"\\")
    seed = CloudInitSeed(hostname="node1", runcmd=runcmd, iscsi=IscsiStorage("192.0.2.10", TARGET))
    data = _user_data(seed)
    assert data == seed.cloud_config("input")
    assert data["runcmd"][3:] == list(runcmd)


# -- the storage script, run on the host against a file standing in for the LUN -------------


def _run_script(tmp_path: Path, disk_links: dict[str, Path], lun: str = "any") -> subprocess.CompletedProcess[str]:
    """STORAGE_SCRIPT with its by-path directory moved to ``tmp_path/by-path`` (holding ``disk_links``),
    and stubs for what needs root or a running system: mount, mountpoint, systemctl, udevadm."""
    need("blkid", "mkfs.ext4", "dd", "readlink")
    by_path = tmp_path / "by-path"
    by_path.mkdir(exist_ok=True)
    for name, target in disk_links.items():
        (by_path / name).unlink(missing_ok=True)
        (by_path / name).symlink_to(target)
    assert STORAGE_SCRIPT.count("/dev/disk/by-path/") == 1
    script = tmp_path / "iscsi-storage.sh"
    script.write_text(STORAGE_SCRIPT.replace("/dev/disk/by-path/", f"{by_path}/"))
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    for name, status in (("mount", 0), ("udevadm", 0), ("mountpoint", 1), ("systemctl", 0)):
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(log))}\nexit {status}\n')
        stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{stubs}:/usr/sbin:/sbin:/usr/bin:/bin")
    argv = ["sh", str(script), TARGET, lun, str(tmp_path / "storage"), "podman.socket", "podman.service"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def _blkid(path: Path) -> str:
    argv = ["blkid", "-p", "-o", "value", "-s", "UUID", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def test_the_storage_script_makes_a_filesystem_once_and_keeps_it(tmp_path: Path) -> None:
    lun1, lun2 = tmp_path / "lun1.img", tmp_path / "lun2.img"
    for disk in (lun1, lun2):
        with open(disk, "wb") as f:
            f.truncate(64 << 20)
    prefix = f"ip-192.0.2.10:3260-iscsi-{TARGET}"
    links = {f"{prefix}-lun-2": lun2, f"{prefix}-lun-1": lun1, f"{prefix}-lun-1-part1": lun2}
    first = _run_script(tmp_path, links)
    assert first.returncode == 0, first.stderr
    assert f"liveimg-iscsi: made an ext4 filesystem on {lun1}" in first.stdout
    uuid = _blkid(lun1)
    assert uuid and _blkid(lun2) == ""  # the lowest LUN, not the -part1 link's file
    calls = (tmp_path / "calls").read_text().splitlines()
    assert f"mount -t ext4 -o _netdev {lun1} {tmp_path / 'storage'}" in calls
    # the units: asked whether they run (the stub says yes), stopped before the mount, started after
    assert calls.index("systemctl stop podman.socket") < calls.index(next(c for c in calls if c.startswith("mount ")))
    assert calls[-2:] == ["systemctl start podman.socket", "systemctl start podman.service"]
    # the next boot: the same filesystem, not a new one
    second = _run_script(tmp_path, links)
    assert second.returncode == 0, second.stderr
    assert f"liveimg-iscsi: kept the existing ext4 filesystem on {lun1}" in second.stdout
    assert _blkid(lun1) == uuid
    # an explicit LUN
    third = _run_script(tmp_path, links, lun="2")
    assert f"made an ext4 filesystem on {lun2}" in third.stdout


def test_the_storage_script_leaves_a_lun_with_other_data_alone(tmp_path: Path) -> None:
    need("sfdisk")
    lun = tmp_path / "lun.img"
    with open(lun, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["sfdisk", "--quiet", str(lun)], input="label: gpt\n,,L\n", text=True, check=True)
    before = lun.read_bytes()
    done = _run_script(tmp_path, {f"ip-192.0.2.10:3260-iscsi-{TARGET}-lun-0": lun})
    assert done.returncode == 1
    assert "PTTYPE=gpt" in done.stdout and "no filesystem: left alone" in done.stdout
    assert lun.read_bytes() == before
    assert not (tmp_path / "calls").exists() or "mount " not in (tmp_path / "calls").read_text()


def test_the_storage_script_gives_up_without_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = STORAGE_SCRIPT.replace('"$waited" -ge 60', '"$waited" -ge 1')
    monkeypatch.setattr("tests.test_iscsi.STORAGE_SCRIPT", script)
    done = _run_script(tmp_path, {})
    assert done.returncode == 1
    assert f"no disk of {TARGET} (LUN any)" in done.stdout


# -- the documented example ----------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "iscsi-storage.yaml"


def test_the_documented_example_is_what_ci_iscsi_writes() -> None:
    """docs/iscsi-storage.yaml, used as --ci-user-data, is the seed --ci-iscsi would write for its values."""
    text = EXAMPLE.read_text()
    assert text.startswith("#cloud-config\n")
    storage = IscsiStorage.parse(
        "192.0.2.10,iqn.2016-04.com.example:storage,1", initiator="iqn.2016-04.com.example:node1"
    )
    assert yaml.safe_load(text) == storage.merge_into({}, "iqn.2016-04.com.example:node1")
    files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    assert files[SCRIPT_PATH] == STORAGE_SCRIPT  # the script as the code has it, byte for byte


def test_the_documented_example_is_accepted_by_liveimg_build(tmp_path: Path) -> None:
    from liveimg import cli, pxe

    args = cli.build_parser().parse_args(
        ["build", "atomic.raw", "-o", str(tmp_path / "out"), "--url", "http://pxe.example.com/atomic",
         "--cloud-init", "--ci-hostname", "node1", "--ci-user-data", str(EXAMPLE)]
    )  # fmt: skip
    seed = cli.build_options(args, None).pxe.cloud_init
    assert seed is not None and seed.iscsi is None
    boot = pxe.LiveBoot(kernel="vmlinuz-6.1.0-1-amd64", initramfs="initramfs-6.1.0-1-amd64.img", kver="6.1.0-1-amd64",
                        title="Debian", seed_id="abc")  # fmt: skip
    pxe.write_pxe(tmp_path, boot, pxe.PxeOptions(url="http://pxe.example.com/atomic", cloud_init=seed))
    assert (tmp_path / "cloud-init/user-data").read_text() == EXAMPLE.read_text()  # served as written
    assert yaml.safe_load((tmp_path / "cloud-init/meta-data").read_text())["local-hostname"] == "node1"
