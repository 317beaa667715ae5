"""Pieces of the stage that need no guest: the device nodes dracut cannot make in the sandbox."""

from __future__ import annotations

import os
from pathlib import Path

from liveimg import run as runner
from liveimg.dracut.cpio import Kind
from liveimg.dracut.initramfs import Initramfs, newc_index
from liveimg.dracut.stage import DEVICE_NODES, add_device_nodes
from tests.support import need


def test_device_nodes_join_the_main_archive(tmp_path: Path) -> None:
    need("cpio")
    tree = tmp_path / "tree"
    (tree / "dev").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/sh").write_text("#!/bin/sh\n")
    names = "\n".join(["dev", "usr", "usr/bin", "usr/bin/sh"]) + "\n"
    raw = tmp_path / "raw.cpio"
    # As dracut does: GNU cpio, newc, owner root, inodes renumbered.
    runner.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0", "--reproducible", "-O", os.fspath(raw)],
               input=names.encode(), cwd=tree)  # fmt: skip
    before = newc_index(raw)
    assert add_device_nodes(raw) == tuple(p for p, _, _ in DEVICE_NODES)
    after = newc_index(raw)
    assert after.names[: len(before.names)] == before.names
    assert after.max_ino == before.max_ino + len(DEVICE_NODES)
    with Initramfs(raw) as ird:
        assert len(ird.segments) == 1 and ird.segments[0].archives == 1
        console = ird.files()["dev/console"]
        assert (console.kind, console.rdev, console.mode) == (Kind.CHAR, (5, 1), 0o644)
        assert ird.read("usr/bin/sh") == b"#!/bin/sh\n"
    listing = runner.run(["cpio", "-t", "-v", "--quiet", "-I", os.fspath(raw)]).stdout
    assert "1,   3" in listing and "dev/null" in listing
    assert add_device_nodes(raw) == ()  # nothing left to add
