"""liveimg.errors: who is at fault, and one-line messages."""

from __future__ import annotations

import pytest

from liveimg import errors


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.InvalidOptions, ValueError),
        (errors.ImageNotFound, FileNotFoundError),
        (errors.HostError, OSError),
        (errors.ToolNotFound, FileNotFoundError),
        (errors.ToolTimeout, TimeoutError),
    ],
)
def test_builtin_bases(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, errors.LiveImgError)
    assert issubclass(cls, builtin)


def test_message_is_one_line_with_hint() -> None:
    err = errors.InvalidImage("no root\nfilesystem found", hint="check the image")
    assert str(err) == "no root filesystem found (check the image)"
    assert "\n" not in str(err)


def test_tool_error_without_stderr() -> None:
    err = errors.ToolError(["mkfs.ext4", "-q", "x"], 1)
    assert str(err) == "mkfs.ext4 failed with exit status 1"
    assert err.command == "mkfs.ext4 -q x"
