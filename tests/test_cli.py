"""The command line: exit statuses, one-line errors, only working subcommands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from liveimg import cli


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
