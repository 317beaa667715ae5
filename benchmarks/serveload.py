"""A load of network-boot downloads against an HTTP server, with every byte checked.

:func:`run_load` starts ``clients`` downloaders of one file, spread over ``processes``
processes (so the checking is not bound to one core), each downloading the whole file in
order in Range requests of random sizes on a keep-alive connection, and now and then
dropping the connection in the middle of a body (with a reset, as a killed client does) and
resuming from the byte it reached on a new one, as curl and iPXE do.  Every body byte goes into
the client's sha256, compared with the file's at the end.  The randomness is seeded: a load is
the same sequence of requests every time.  Used by ``tests/integration/test_serve_load.py``
and ``benchmarks/serve.py``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import queue
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Load:
    """One load: ``clients`` downloads of ``path`` (``size`` bytes, sha256 ``sha256``) from ``host:port``."""

    host: str
    port: int
    path: str
    size: int
    sha256: str
    clients: int = 50
    processes: int = 2
    min_chunk: int = 64 * 1024
    max_chunk: int = 8 * MiB
    abort_rate: float = 0.1
    seed: int = 1
    timeout: float = 60.0


@dataclass(frozen=True)
class ClientResult:
    """What one client got: ``verified`` body bytes hashed, whether their sha256 is the file's."""

    client: int
    verified: int
    sha256: str
    statuses: dict[int, int]
    requests: int
    connections: int
    aborts: int
    error: str | None = None


@dataclass(frozen=True)
class LoadResult:
    """A whole load: the clients, and the wall time from the common start to the last client's end."""

    load: Load
    clients: list[ClientResult]
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        """Clients that got the whole file with its sha256."""
        return sum(1 for c in self.clients if c.error is None and c.sha256 == self.load.sha256)

    @property
    def corrupt(self) -> int:
        """Clients that got the whole length but other bytes."""
        return sum(1 for c in self.clients if c.verified == self.load.size and c.sha256 != self.load.sha256)

    @property
    def verified_bytes(self) -> int:
        return sum(c.verified for c in self.clients)

    @property
    def mib_per_s(self) -> float:
        return self.verified_bytes / MiB / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "clients": len(self.clients),
            "completed": self.completed,
            "corrupt": self.corrupt,
            "seconds": round(self.seconds, 3),
            "verified_mib": round(self.verified_bytes / MiB, 1),
            "mib_per_s": round(self.mib_per_s, 1),
            "requests": sum(c.requests for c in self.clients),
            "connections": sum(c.connections for c in self.clients),
            "aborts": sum(c.aborts for c in self.clients),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": [c.error for c in self.clients if c.error][:5],
        }


class _Client:
    """One downloader: its own RNG, connection, buffer and digest."""

    def __init__(self, load: Load, index: int) -> None:
        self.load = load
        self.index = index
        self.rng = random.Random(f"{load.seed}:{index}")
        self.digest = hashlib.sha256()
        self.buffer = memoryview(bytearray(MiB))
        self.sock: socket.socket | None = None
        self.statuses: Counter[int] = Counter()
        self.requests = self.connections = self.aborts = self.position = 0

    def _head(self) -> tuple[int, dict[str, str], bytes]:
        """Read a response head; its status, headers (lower-case names) and the body bytes read with it."""
        assert self.sock is not None
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection before a response")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers, rest

    def _drop(self, reset: bool) -> None:
        if self.sock is not None:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
            self.sock = None

    def step(self) -> None:
        """One Range request for the next bytes; maybe abandoned in the middle of its body."""
        load = self.load
        if self.sock is None:
            self.sock = socket.create_connection((load.host, load.port), timeout=load.timeout)
            self.connections += 1
        first = self.position
        last = min(load.size, first + self.rng.randint(load.min_chunk, load.max_chunk)) - 1
        host = f"[{load.host}]" if ":" in load.host else load.host
        request = f"GET {load.path} HTTP/1.1\r\nHost: {host}:{load.port}\r\nRange: bytes={first}-{last}\r\n\r\n"
        self.sock.sendall(request.encode())
        self.requests += 1
        status, headers, rest = self._head()
        self.statuses[status] += 1
        length = last - first + 1
        if status != 206 or headers.get("content-range") != f"bytes {first}-{last}/{load.size}":
            raise ValueError(f"asked for bytes {first}-{last}: {status} {headers.get('content-range')}")
        if int(headers.get("content-length", -1)) != length:
            raise ValueError(f"asked for {length} bytes, told {headers.get('content-length')}")
        abort = self.rng.random() < load.abort_rate
        take = self.rng.randint(0, length - 1) if abort else length
        got = min(len(rest), take)
        self.digest.update(rest[:got])
        while got < take:
            n = self.sock.recv_into(self.buffer[: min(len(self.buffer), take - got)])
            if n == 0:
                raise ConnectionError(f"the connection ended {take - got} bytes short")
            self.digest.update(self.buffer[:n])
            got += n
        self.position += got
        if abort:
            self.aborts += 1
            self._drop(reset=True)
        elif headers.get("connection", "").lower() == "close":
            self._drop(reset=False)

    def run(self) -> ClientResult:
        error = None
        try:
            while self.position < self.load.size:
                self.step()
        except (OSError, ValueError) as exc:
            error = f"client {self.index} at byte {self.position}: {exc}"
        finally:
            self._drop(reset=False)
        return ClientResult(
            client=self.index,
            verified=self.position,
            sha256=self.digest.hexdigest(),
            statuses=dict(self.statuses),
            requests=self.requests,
            connections=self.connections,
            aborts=self.aborts,
            error=error,
        )


def _worker(load: Load, indices: list[int], barrier: Any, results: Any) -> None:
    clients = [_Client(load, i) for i in indices]
    done: list[ClientResult] = []
    threads = [threading.Thread(target=lambda c=c: done.append(c.run())) for c in clients]
    barrier.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((time.monotonic(), done))


def run_load(load: Load) -> LoadResult:
    """Run ``load`` and return what every client got (the clients start together)."""
    ctx = multiprocessing.get_context("spawn")  # not fork: the caller may run a server in a thread
    processes = max(1, min(load.processes, load.clients))
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(load, list(range(p, load.clients, processes)), barrier, results))
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=120)
        start = time.monotonic()
        clients: list[ClientResult] = []
        end = start
        for _ in workers:
            while True:
                try:
                    finished, got = results.get(timeout=1)
                    break
                except queue.Empty:
                    dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                    if dead:
                        raise RuntimeError(f"a load process died (exit status {dead[0]})") from None
            end = max(end, finished)
            clients.extend(got)
    except threading.BrokenBarrierError:
        raise RuntimeError("the load processes did not start") from None
    finally:
        for worker in workers:
            if worker.exitcode is None and worker.is_alive():
                worker.join(timeout=5)
                worker.kill()
            worker.join()
    statuses: Counter[int] = Counter()
    for client in clients:
        statuses.update(client.statuses)
    return LoadResult(load, sorted(clients, key=lambda c: c.client), end - start, dict(statuses))
