"""Helpers shared by the tests: required tools, the CI switch, libguestfs settings."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from liveimg import run as runner
from liveimg.accel import AccelChoice, choose_accel

#: In CI a missing tool fails the test; elsewhere it skips it, naming the package.
IN_CI = os.environ.get("CI") == "true"

#: The opt-in tests: the environment variable that runs each, and why it is not run by default.
#: The README's "Opt-in tests" lists every one (tests/test_skips.py checks both ways).
OPT_IN: dict[str, str] = {
    "LIVEIMG_TEST_APPLIANCE": "dracut inside the libguestfs appliance takes 6-15 min under TCG; "
    "the default path (the sandbox) is tested by every build",
}


def unavailable(what: str) -> None:
    """This machine lacks what the test needs: skip, naming it -- but under ``CI=true`` fail.

    The only way a test may skip besides :func:`opt_in`: tests/test_skips.py rejects any other
    ``pytest.skip``, ``importorskip`` or ``skipif`` in the test suite.
    """
    if IN_CI:
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def opt_in(variable: str) -> pytest.MarkDecorator:
    """Mark a test that runs only with ``variable=1`` (listed in :data:`OPT_IN` and the README)."""
    return pytest.mark.skipif(os.environ.get(variable) != "1", reason=f"opt-in, set {variable}=1: {OPT_IN[variable]}")


def need(*programs: str) -> None:
    """Skip (fail in CI) unless every program is installed."""
    for program in programs:
        if runner.which(program) is None:
            package = runner.PACKAGES.get(program, "?")
            unavailable(f"{program} is not installed: install the Debian package {package}")


def need_module(module: str, package: str) -> None:
    """Skip (fail in CI) unless a Python module imports; ``package`` says where it comes from."""
    if importlib.util.find_spec(module) is None:
        unavailable(f"Python module {module} is missing: install {package}")


def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("this test must run as root")


@cache
def accel() -> AccelChoice:
    """The accelerator the library would choose on this machine (probed once)."""
    return choose_accel()


def guestfs_env() -> dict[str, str]:
    """Environment for libguestfs command-line tools run by tests (guestfish, virt-filesystems)."""
    return accel().libguestfs_env()


def need_file(path: str, package: str) -> None:
    """Skip (fail in CI) unless a file shipped by a Debian package exists."""
    if not os.path.exists(path):
        unavailable(f"{path} is missing: install the Debian package {package}")


#: The unprivileged user the rootless tests run as.
NOBODY = 65534


def run_python_as_nobody(code: str, *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in this interpreter as uid/gid 65534 with no capabilities (the rootless case)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.fspath(Path(__file__).parents[1]),
        "HOME": "/nonexistent",
    }
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]
    return subprocess.run(
        [*argv, sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
