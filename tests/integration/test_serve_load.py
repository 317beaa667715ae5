"""ArtifactServer under a network boot's load: 50 clients at once, random ranges and resumes, every byte checked."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from benchmarks.serveload import Load, MiB, run_load
from liveimg.serve.http import ArtifactServer, Served


@pytest.mark.timeout(60)
def test_fifty_clients_resuming_get_every_byte(tmp_path: Path) -> None:
    live = tmp_path / "live-rootfs.squashfs.img"
    live.write_bytes(random.Random(21).randbytes(32 * MiB))
    sha = hashlib.sha256(live.read_bytes()).hexdigest()
    with ArtifactServer({"live.img": Served.file(live, etag=sha)}) as server:
        load = Load("127.0.0.1", server.port, "/live.img", live.stat().st_size, sha, clients=50, seed=5)
        result = run_load(load)
        requests = server.requests
    assert result.completed == 50, result.summary()
    assert result.corrupt == 0
    assert result.verified_bytes == 50 * live.stat().st_size
    assert sum(c.aborts for c in result.clients) > 0  # resumes happened
    assert sum(c.connections for c in result.clients) > 50
    assert sum(c.requests for c in result.clients) > sum(c.connections for c in result.clients)  # keep-alive
    # Every request reached the server's log as a 206 (aborted ones with fewer bytes than asked).
    assert len([r for r in requests if r.status == 206]) >= sum(c.requests for c in result.clients) - 50
    assert {r.status for r in requests} == {206}
