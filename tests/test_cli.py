"""The command line: exit statuses, one-line errors, only working subcommands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from liveimg import cli
from liveimg import run as runner
from liveimg.errors import Cancelled, InvalidOptions
from tests.support import need_root, public_directory, run_python_as_nobody


def test_help_lists_only_registered_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for name, *_ in cli.COMMANDS:
        assert name in out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["no-such-command"])
    assert excinfo.value.code == cli.EXIT_USAGE


def test_error_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIVEIMG_ACCEL", "hvf")
    assert cli.main(["doctor"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == "liveimg: error: unknown accelerator 'hvf' (use kvm, tcg or auto)\n"


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIVEIMG_ACCEL", "hvf")
    assert cli.main(["doctor", "--debug"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith("liveimg: error: unknown accelerator 'hvf' (use kvm, tcg or auto)\n")


def test_doctor_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIVEIMG_ACCEL", "tcg")
    status = cli.main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["accel"] == {"choice": "tcg", "reason": "forced"}
    missing = [n for n, p in report["tools"].items() if p is None] + [
        n for n, ok in report["modules"].items() if not ok
    ]
    assert status == (cli.EXIT_FAILURE if missing else cli.EXIT_OK)


def test_python_dash_m() -> None:
    result = subprocess.run([sys.executable, "-m", "liveimg", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("liveimg ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kernel-arg", "quiet", "--kernel-arg", "a\nchain http://elsewhere/"],
         "liveimg: error: --kernel-arg 'a\\nchain http://elsewhere/' cannot be put on a kernel command line: "
         "it has a control character ('\\n')\n"),
        (["--kernel-arg", "a\x00b"], "--kernel-arg 'a\\x00b' cannot be put on a kernel command line: it has a control"),
        (["--kernel-arg", "x=${filename}"], "iPXE expands it"),
        (["--kernel-arg", "a b"], "blank outside double quotes"),
        (["--url", "http://h/x && chain http://elsewhere/"], "liveimg: error: invalid --url 'http://h/x && chain"),
        (["--url", "http://h/\n"], "invalid --url 'http://h/\\n'"),
        (["--url", "http://h", "--pxe-dir", "tftp;x"], "invalid --pxe-dir 'tftp;x'"),
        (["--url", "http://h", "--cloud-init", "--ci-hostname", "a\nb"], "invalid --ci-hostname 'a\\nb'"),
        (["--url", "http://h", "--cloud-init", "--ci-ssh-key", "ssh-ed25519 A a\nssh-rsa B evil"], "--ci-ssh-key"),
        (["--url", "http://h", "--cloud-init", "--ci-password", "pw\nroot:x"], "--ci-password"),
        (["--url", "http://h", "--ci-iscsi", "192.0.2.10,iqn.2016-04.com.example:s"], "they need --cloud-init"),
        (["--url", "http://h", "--cloud-init", "--ci-iscsi-initiator", "iqn.2016-04.com.example:n"],
         "--ci-iscsi-initiator names the initiator of --ci-iscsi, which is not given"),
        (["--url", "http://h", "--cloud-init", "--ci-iscsi", "192.0.2.10;reboot,iqn.2016-04.com.example:s"],
         "invalid iSCSI portal '192.0.2.10;reboot'"),
        (["--url", "http://h", "--cloud-init", "--ci-iscsi", "192.0.2.10,iqn.2016-04.com.example:$(id)"],
         "invalid iSCSI target name 'iqn.2016-04.com.example:$(id)'"),
        (["--url", "http://h", "--cloud-init", "--ci-iscsi", "192.0.2.10,iqn.2016-04.com.example:s",
          "--ci-iscsi-initiator", "me\nyou"], "invalid iSCSI initiator name 'me\\nyou'"),
    ],
)  # fmt: skip
def test_bad_boot_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Said before anything is read (the image does not even exist), as one line, exit status 1
    like every other invalid option."""
    status = cli.main(["build", str(tmp_path / "missing.img"), "-o", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILURE
    assert err.count("\n") == 1 and err.startswith("liveimg: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_ci_iscsi_adds_to_the_user_data_file(tmp_path: Path) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text("#cloud-config\nruncmd:\n  - podman load -i /var/tmp/x.tar\n")
    args = cli.build_parser().parse_args(
        ["build", "img", "-o", "out", "--url", "http://h", "--cloud-init", "--ci-user-data", str(user),
         "--ci-iscsi", "10.0.2.100,iqn.2016-04.com.example:s,1", "--ci-iscsi-engine", "docker"]
    )  # fmt: skip
    seed = cli.build_options(args, None).pxe.cloud_init
    assert seed is not None and seed.iscsi is not None
    assert (seed.iscsi.portal, seed.iscsi.lun, seed.iscsi.engine) == ("10.0.2.100:3260", 1, "docker")
    runcmd = yaml.safe_load(seed.user_data_text("x"))["runcmd"]
    assert runcmd[0].startswith("iscsiadm --mode discoverydb ") and runcmd[-1] == "podman load -i /var/tmp/x.tar"


def test_ci_iscsi_with_a_script_user_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = tmp_path / "script.sh"
    user.write_text("#!/bin/sh\necho hi\n")
    argv = ["build", str(tmp_path / "missing.img"), "-o", str(tmp_path / "out"), "--url", "http://h",
            "--cloud-init", "--ci-user-data", str(user), "--ci-iscsi", "h,iqn.2016-04.com.example:s"]  # fmt: skip
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILURE and err.count("\n") == 1
    assert "--ci-iscsi adds to a #cloud-config user-data" in err


@pytest.mark.parametrize("memory", ["64", "2000000", "0"])
def test_boot_test_memory_out_of_range_is_one_line(
    memory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["boot-test", str(tmp_path), "--memory", memory]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"memory {memory} MiB is out of range" in err and "from 128 to 1048576" in err


def test_the_memory_reaches_qemu() -> None:
    from liveimg.boottest import BootTestOptions

    assert BootTestOptions(via="kernel", memory_mib=496).memory_mib == 496
    with pytest.raises(InvalidOptions, match="out of range"):
        BootTestOptions(memory_mib=True)  # type: ignore[arg-type]


def test_all_drivers_reaches_dracut() -> None:
    parse = cli.build_parser().parse_args
    assert cli.build_options(parse(["build", "img", "-o", "out"]), None).dracut.all_drivers is False
    options = cli.build_options(parse(["build", "img", "-o", "out", "--dracut-all-drivers"]), None)
    assert options.dracut.all_drivers is True


def test_boot_test_kernel_arg_is_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["boot-test", str(tmp_path / "nothing"), "--kernel-arg", "a\nb"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILURE and err.startswith("liveimg: error: --kernel-arg 'a\\nb' cannot be put")
    assert not (tmp_path / "nothing.boot-test").exists()


def test_an_ssh_key_file_gives_one_key_a_line(tmp_path: Path) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_text("# mine\nssh-ed25519 AAAA one@h\n\nssh-rsa BBBB two@h\n")
    args = cli.build_parser().parse_args(
        ["build", "img", "-o", "out", "--url", "http://h", "--cloud-init", "--ci-ssh-key", f"@{keys}",
         "--ci-ssh-key", "ssh-ed25519 CCCC three@h"]
    )  # fmt: skip
    seed = cli.build_options(args, None).pxe.cloud_init
    assert seed is not None
    assert seed.ssh_authorized_keys == ("ssh-ed25519 AAAA one@h", "ssh-rsa BBBB two@h", "ssh-ed25519 CCCC three@h")


@pytest.mark.parametrize(
    ("flags", "mode", "source"),
    [
        ([], "auto", None),
        (["--efi"], "require", None),
        (["--no-efi"], "off", None),
        (["--efi-from", "/srv/efi"], "auto", Path("/srv/efi")),
        (["--efi", "--efi-from", "/srv/efi"], "require", Path("/srv/efi")),
    ],
)
def test_the_uefi_boot_chain_options(flags: list[str], mode: str, source: Path | None) -> None:
    efi = cli.build_options(cli.build_parser().parse_args(["build", "img", "-o", "out", *flags]), None).efi
    assert (efi.mode, efi.source, efi.required) == (mode, source, mode == "require" or source is not None)


def test_no_verify_turns_the_live_image_check_off() -> None:
    parse = cli.build_parser().parse_args
    assert cli.build_options(parse(["build", "img", "-o", "out"]), None).verify is True
    assert cli.build_options(parse(["build", "img", "-o", "out", "--no-verify"]), None).verify is False


def test_contradictory_uefi_options_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "img", "-o", "out", "--no-efi", "--efi-from", "/srv/efi"]) == cli.EXIT_FAILURE
    assert capsys.readouterr().err == "liveimg: error: --efi-from and --no-efi contradict each other\n"
    with pytest.raises(SystemExit) as exited:
        cli.main(["build", "img", "-o", "out", "--efi", "--no-efi"])
    assert exited.value.code == cli.EXIT_USAGE


def test_guest_text_cannot_drive_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = tmp_path / "image\x1b]0;owned\x07\x1b[2J\u202e.raw"
    assert cli.main(["inspect", str(hostile)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "image\\x1b]0;owned\\x07\\x1b[2J\\u202e.raw" in err


def test_log_lines_escape_controls_but_tracebacks_keep_their_lines() -> None:
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(cli._PrintableFormatter("%(message)s"))
    logger = logging.getLogger("liveimg.test-printable")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("module %s\x1b[31m left out", "x\ny")
    finally:
        logger.removeHandler(handler)
    first, *rest = stream.getvalue().splitlines()
    assert first == "module x\\ny\\x1b[31m left out"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def _with_doctor(monkeypatch: pytest.MonkeyPatch, handler: cli.Handler) -> None:
    """Make `liveimg doctor` run ``handler``."""
    commands = tuple((n, h, a, handler if n == "doctor" else f) for n, h, a, f in cli.COMMANDS)
    monkeypatch.setattr(cli, "COMMANDS", commands)


def _raises(exc: BaseException) -> cli.Handler:
    def handler(args: object, ctx: object) -> int:
        raise exc

    return handler


def test_a_bug_is_one_line_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_doctor(monkeypatch, _raises(ValueError("guest\nkey")))
    assert cli.main(["doctor"]) == cli.EXIT_FAILURE
    assert capsys.readouterr().err == (
        "liveimg: internal error: ValueError: guest key (a bug: please report it; --debug shows the traceback)\n"
    )
    assert cli.main(["doctor", "--debug"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("--debug shows the traceback)\n")


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (PermissionError(13, "Permission denied", "/srv/pxe/out"), "/srv/pxe/out: Permission denied"),
        (OSError(28, "No space left on device", "/srv/pxe/.out.liveimg/out/x"), "no space left on device in "
         "/srv/pxe/.out.liveimg/out"),
        (OSError(122, "Disk quota exceeded"), "no space left on device"),
        (OSError(5, "Input/output error"), "Input/output error"),
    ],
)  # fmt: skip
def test_an_os_error_is_one_line_naming_the_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: OSError, line: str
) -> None:
    _with_doctor(monkeypatch, _raises(exc))
    assert cli.main(["doctor"]) == cli.EXIT_FAILURE
    assert capsys.readouterr().err == f"liveimg: error: {line}\n"


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.usefixtures("default_signals")
def test_a_signal_ends_any_command_with_128_plus_its_number(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sig: signal.Signals, status: int
) -> None:
    def handler(args: object, ctx: object) -> int:
        os.kill(os.getpid(), sig)
        time.sleep(10)
        return cli.EXIT_OK

    _with_doctor(monkeypatch, handler)
    assert cli.main(["doctor"]) == status
    assert capsys.readouterr().err == f"liveimg: interrupted by {sig.name}\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


@pytest.mark.usefixtures("default_signals")
def test_a_failure_caused_by_the_cancellation_is_the_cancellation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tool killed on purpose fails; what the user hears is that liveimg was interrupted."""

    def handler(args: object, ctx: object) -> int:
        with runner.spawn(["sleep", "60"]) as proc:
            os.kill(os.getpid(), signal.SIGTERM)
            try:
                time.sleep(10)
            finally:
                raise ValueError(f"sleep ended with {proc.wait()}")
        return cli.EXIT_OK

    _with_doctor(monkeypatch, handler)
    assert cli.main(["doctor"]) == 143
    assert capsys.readouterr().err == "liveimg: interrupted by SIGTERM\n"


def test_cancelled_from_the_library_keeps_its_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_doctor(monkeypatch, _raises(Cancelled(signal.SIGHUP, "interrupted by SIGHUP: /x/out left as it was")))
    assert cli.main(["doctor"]) == 129
    assert capsys.readouterr().err == "liveimg: interrupted by SIGHUP: /x/out left as it was\n"


def test_a_closed_pipe_ends_the_output_quietly(tmp_path: Path) -> None:
    image = tmp_path / "initrd.img"
    (tmp_path / "tree" / "etc").mkdir(parents=True)
    for i in range(2000):
        (tmp_path / "tree" / "etc" / f"file-{i}").write_text("x")
    subprocess.run(
        f"cd {tmp_path / 'tree'} && find . | cpio -o -H newc > {image}", shell=True, check=True, capture_output=True
    )
    done = subprocess.run(
        f"{sys.executable} -m liveimg initramfs ls {image} | head -1; echo status=${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert done.stderr == ""
    assert done.stdout.splitlines()[-1] == "status=141"


def test_doctor_names_what_an_unprivileged_user_lacks() -> None:
    """Run as user nobody: a kernel only root can read and a cache directory it cannot write are
    each a problem doctor names (libguestfs cannot start without them)."""
    need_root()
    with public_directory("liveimg-doctor-") as tmp_path:
        _doctor_as_nobody(tmp_path)


def _doctor_as_nobody(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.1.0-1-amd64").write_bytes(b"kernel")
    (boot / "vmlinuz-6.1.0-1-amd64").chmod(0o600)
    code = (
        "import json, pathlib, sys\n"
        "from liveimg import cli\n"
        f"cli.HOST_BOOT = pathlib.Path({str(boot)!r})\n"
        "print(json.dumps(cli._host_checks()))\n"
    )
    done = run_python_as_nobody(code, timeout=120, env={"LIBGUESTFS_CACHEDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    checks = json.loads(done.stdout)
    assert checks["appliance kernel"] == {
        "ok": False,
        "reason": f"{boot}/vmlinuz-6.1.0-1-amd64 is not readable by this user: libguestfs cannot build its appliance",
    }
    assert checks["appliance cache"] == {
        "ok": False,
        "reason": f"{tmp_path} is not writable: set LIBGUESTFS_CACHEDIR to a directory you own",
    }
    assert checks["sandbox"]["ok"] is True, checks["sandbox"]
    (boot / "vmlinuz-6.1.0-1-amd64").chmod(0o644)
    again = json.loads(run_python_as_nobody(code, timeout=120).stdout)
    assert again["appliance kernel"]["ok"] is True


def test_secure_boot_with_a_bios_way_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["boot-test", str(tmp_path / "nothing"), "--via", "iso-bios", "--secure-boot"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILURE and err.count("\n") == 1
    assert err.startswith("liveimg: error: --secure-boot does not apply to --via iso-bios")
    assert "use --via uefi-pxe" in err
    assert not (tmp_path / "nothing.boot-test").exists()


def test_uefi_pxe_of_a_build_without_efi_says_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    names = {"kernel": "vmlinuz-6.1.0-9-amd64", "initramfs": "initramfs-6.1.0-9-amd64.img", "rootfs": "live.img"}
    for name in names.values():
        (out / name).write_bytes(b"x")
    boot = {"kernel": names["kernel"], "initramfs": names["initramfs"], "kver": "6.1.0-9-amd64", "title": "T",
            "squashfs": names["rootfs"]}  # fmt: skip
    manifest = {"boot": boot, **{key: {"file": name} for key, name in names.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    status = cli.main(["boot-test", str(out), "--via", "uefi-pxe", "--secure-boot"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILURE and err.count("\n") == 1
    assert err.startswith(f"liveimg: error: {out} has no UEFI network boot chain") and "rebuild it with --efi" in err


def test_embed_rootfs_reaches_the_build_options() -> None:
    parse = cli.build_parser().parse_args
    assert cli.build_options(parse(["build", "img", "-o", "out"]), None).embed_rootfs is False
    options = cli.build_options(parse(["build", "img", "-o", "out", "--embed-rootfs"]), None)
    assert options.embed_rootfs is True and options.pxe.url is None


@pytest.mark.parametrize("served", [True, False])
def test_boot_test_json_says_whether_an_http_server_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], served: bool
) -> None:
    from liveimg.boottest import BootTestResult
    from liveimg.console import BootResult, Outcome

    boot = BootResult(Outcome.SUCCESS, "checks", 1.0, tmp_path / "console.log")
    monkeypatch.setattr(cli, "boot_test", lambda *args: BootTestResult(boot, http_server=served))
    assert cli.main(["boot-test", str(tmp_path), "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["http_server"] is served


def _fake_result(outdir: Path) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(
        outdir=outdir,
        manifest={"artifacts": {"vmlinuz-6.1": {}}},
        initramfs=SimpleNamespace(left_out=()),
        timings={"rootfs": 6.0, "squashfs": 100.0, "dracut": 50.0, "total": 120.0},
        cpu_seconds=228.0,
    )


@pytest.mark.parametrize("progress", ["none", "json"])
def test_a_build_ends_with_its_wall_and_cpu_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], progress: str
) -> None:
    monkeypatch.setattr(cli, "build", lambda image, out, options, progress: _fake_result(Path(out)))
    assert cli.main(["--progress", progress, "build", "img", "-o", str(tmp_path / "out")]) == cli.EXIT_OK
    captured = capsys.readouterr()
    if progress == "json":
        result = json.loads(captured.out.splitlines()[-1])
        assert (result["event"], result["seconds"], result["cpu_seconds"]) == ("result", 120.0, 228.0)
    else:
        # dracut ran beside squashfs: the stages add up to more than the wall time, the CPU says how busy.
        assert (
            f"built {tmp_path / 'out'} in 120 s, 228 CPU seconds "
            "(1.9 cores busy; rootfs 6 s, squashfs 100 s, dracut 50 s)" in captured.err
        )


def test_bcj_mode_reaches_the_squashfs_options() -> None:
    from liveimg.options import squashfs_options

    parse = cli.build_parser().parse_args
    default = squashfs_options(cli.build_options(parse(["build", "img", "-o", "out"]), None), "x86_64")
    assert (default.Xbcj, default.bcj_mode) == (("x86",), "heuristic")
    args = parse(["build", "img", "-o", "out", "--squashfs-bcj-mode", "exhaustive"])
    assert squashfs_options(cli.build_options(args, None), "x86_64").bcj_mode == "exhaustive"
    pack = parse(["squashfs", "pack", "src", "dst.sqfs", "--Xbcj", "x86", "--bcj-mode", "exhaustive"])
    assert cli._squashfs_options(pack).bcj_mode == "exhaustive"
