"""liveimg.httpserve's directory map: what a guest may name, and files placed after the start."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from liveimg.httpserve import DirectoryFiles, HttpServer


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_directory_files_names_only_regular_files_inside(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a").write_bytes(b"a")
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "linkdir").symlink_to(tmp_path)  # a symlinked directory is not entered
    (root / "placed").symlink_to(tmp_path / "secret")  # a symlinked file the filler placed is served
    (root / "fifo").mkdir()
    files = DirectoryFiles(root)
    assert files["sub/a"].size == 1
    assert files["placed"].size == 6
    for name in ("linkdir/secret", "../secret", "sub/../sub/a", "sub", "fifo", "", "/sub/a", "sub//a", "nope"):
        assert name not in files, name
    assert sorted(files) == ["placed", "sub/a"]


def test_files_placed_after_the_start_are_served(tmp_path: Path) -> None:
    with HttpServer(tmp_path) as server:
        assert get(server.url("late.iso"))[0] == 404
        (tmp_path / "late.iso").write_bytes(b"iso")
        os.mkfifo(tmp_path / "pipe")
        assert get(server.url("late.iso")) == (200, b"iso")
        assert get(server.url("pipe"))[0] == 404
        assert get(server.url("..%2f" + tmp_path.name + "%2flate.iso"))[0] == 404
        assert [(r.path, r.status) for r in server.requests] == [("/late.iso", 200)]


@pytest.mark.parametrize("name", ["a", "dir/b"])
def test_the_server_is_the_shared_artifact_server(tmp_path: Path, name: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / name).write_bytes(b"0123456789")
    with HttpServer(tmp_path) as server:
        request = urllib.request.Request(server.url(name), headers={"Range": "bytes=-3"})
        with urllib.request.urlopen(request) as resp:
            assert (resp.status, resp.read(), resp.headers["Accept-Ranges"]) == (206, b"789", "bytes")
            assert resp.version == 11  # HTTP/1.1 with keep-alive, not the old HTTP/1.0 server
