"""``liveimg initramfs ls`` and ``liveimg initramfs append``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from liveimg.cli import main
from liveimg.dracut.initramfs import Initramfs
from tests.dracut.test_initramfs import EARLY, MAIN, write


def test_ls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, EARLY, gzip.compress(MAIN))
    assert main(["initramfs", "ls", "--segments", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# segment 0: offset 0,") and "none" in out[0]
    assert out[1].startswith("# segment 1:") and "gzip" in out[1]
    assert any(line.endswith(" usr/bin/curl") and line.startswith("-rwxr-xr-x") for line in out)
    assert any(line.endswith("sbin -> usr/sbin") for line in out)


def test_ls_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["initramfs", "ls", "--json", str(write(tmp_path, MAIN))]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["segments"][0]["compression"] == "none"
    curl = next(m for m in report["members"] if m["path"] == "usr/bin/curl")
    assert (curl["kind"], curl["mode"], curl["size"]) == ("file", 0o755, 50_000)


def test_ls_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"not an initramfs")
    assert main(["initramfs", "ls", str(bad)]) == 1
    assert "unknown data 6e 6f 74 20 61 6e at offset 0" in capsys.readouterr().err


def test_append(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = tmp_path / "meta-data"
    seed.write_text("instance-id: live\n")
    src = write(tmp_path, EARLY, gzip.compress(MAIN))
    out = tmp_path / "out.img"
    argv = ["initramfs", "append", str(src), "-o", str(out), "--karg", "rd.live.image", "--karg", "ip=dhcp",
            "--file", f"{seed}:/var/lib/cloud/seed/nocloud/meta-data:600", "--compress", "xz"]  # fmt: skip
    assert main(argv) == 0
    with Initramfs(out) as ird:
        assert ird.read("etc/cmdline.d/90-liveimg.conf") == b"rd.live.image ip=dhcp\n"
        assert ird.files()["var/lib/cloud/seed/nocloud/meta-data"].mode == 0o600
        assert ird.segments[-1].compression == "xz"
    assert main(["initramfs", "append", str(src), "-o", str(out), "--file", "nocolon"]) == 1
    assert "expected SRC:DEST" in capsys.readouterr().err
    assert main(["initramfs", "append", str(src), "-o", str(out), "--file", f"{seed}:/x:9z"]) == 1
    assert "is not octal" in capsys.readouterr().err
