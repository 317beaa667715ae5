"""``liveimg serve``: serve builds to diskless machines until stopped.

:func:`serve` checks the builds (:func:`~liveimg.serve.catalog.load_builds`), makes the
:class:`~liveimg.serve.catalog.Plan` for the address clients reach, writes the TFTP tree and
dnsmasq's configuration into a private directory, starts liveimg's HTTP server
(:mod:`liveimg.serve.http`) and, for TFTP or DHCP, dnsmasq (:mod:`liveimg.serve.dnsmasq`), calls
``ready`` and serves until ``stop`` is set or a signal ends it.  Whatever ends it, dnsmasq is
stopped and the private directory removed before it returns or raises; a SIGKILL leaves no time
for that, and the next serve removes the directory (:func:`remove_abandoned`).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from liveimg import bootsyntax
from liveimg.errors import InvalidOptions
from liveimg.progress import Progress
from liveimg.pxe import check_url
from liveimg.serve.catalog import Artifact, BiosLoader, Plan, load_builds, plan, write_tree
from liveimg.serve.dnsmasq import DhcpMode, Dnsmasq, Network, config, need_root, network_of
from liveimg.serve.http import ArtifactServer, Served, parse_address

log = logging.getLogger(__name__)

#: The private directories' prefix, in the temporary directory (``$TMPDIR``).
PRIVATE_PREFIX = "liveimg-serve-"
#: In each private directory: the file a running serve holds an flock on.
LOCK_NAME = ".lock"

#: The HTTP port when ``--http`` gives none.
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServeOptions:
    """How to serve.

    ``http``: ``ADDR:PORT`` to listen on (``[ADDR]:PORT`` for IPv6; ``0.0.0.0`` or an empty
    address: every address).  ``url``: the base URL machines use, when it is not
    ``http://ADDR:PORT`` (a name, a proxy in front); by default that, with the interface's
    address for a wildcard ADDR.  ``tftp``, ``dhcp``, ``interface``, ``loader``: see
    :mod:`liveimg.serve.dnsmasq` and :class:`~liveimg.serve.catalog.BiosLoader`.
    ``kernel_args``: added to every build's command line.
    """

    http: str = f"0.0.0.0:{DEFAULT_PORT}"
    url: str | None = None
    tftp: bool = False
    dhcp: DhcpMode = DhcpMode.NONE
    interface: str | None = None
    loader: BiosLoader = BiosLoader.AUTO
    kernel_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dhcp is not DhcpMode.NONE and not self.tftp:
            object.__setattr__(self, "tftp", True)  # PXE firmware loads its boot file over TFTP
        if self.dhcp is not DhcpMode.NONE and self.interface is None:
            raise InvalidOptions(f"--dhcp {self.dhcp} needs --interface", hint="name the interface the machines are on")
        parse_http(self.http)
        if self.url is not None:
            check_url(self.url)


def parse_http(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6; ``:PORT`` or ``PORT`` for every IPv4 address) as
    (address, port)."""
    if text.isdigit():
        text = f":{text}"
    if text.startswith(":"):
        text = f"0.0.0.0{text}"
    host, port = parse_address(text)
    if port == 0:
        raise InvalidOptions(f"--http {text!r}: machines need a fixed port", hint="e.g. --http :8080")
    return host, port


def base_url(options: ServeOptions, network: Network | None) -> str:
    """The URL machines fetch from (see :class:`ServeOptions`)."""
    if options.url is not None:
        return check_url(options.url)
    host, port = parse_http(options.http)
    if ipaddress.ip_address(host).is_unspecified:
        if network is None:
            raise InvalidOptions(
                f"--http {options.http} does not say which address the machines fetch from",
                hint="give --interface (its address is used), an address in --http, or --url",
            )
        host = str(network.address.ip)
    named = f"[{host}]" if ":" in host else host
    return bootsyntax.base_url(f"http://{named}:{port}")


def served(files: Mapping[str, Artifact | str]) -> dict[str, Served]:
    """The HTTP server's map: URL path -> a build's file (its ETag its sha256) or a generated text."""
    return {
        rel: Served(path=what.path, size=what.size, etag=what.sha256)
        if isinstance(what, Artifact)
        else Served.text(what)
        for rel, what in files.items()
    }


def prepare(
    outdirs: Sequence[Path], options: ServeOptions, progress: Progress | None = None
) -> tuple[Plan, Network | None]:
    """The checked builds' plan for ``options``, and the network DHCP serves (if an interface is named)."""
    if options.tftp or options.dhcp is not DhcpMode.NONE:
        need_root("TFTP and DHCP")
    network = network_of(options.interface) if options.interface is not None else None
    builds = load_builds(outdirs, progress)
    url = base_url(options, network)
    return plan(builds, url, kernel_args=options.kernel_args, loader=options.loader), network


def serve(
    outdirs: Sequence[Path],
    options: ServeOptions,
    *,
    ready: Callable[[Plan], None] | None = None,
    on_request: Callable[[str], None] | None = None,
    on_dnsmasq: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> None:
    """Serve ``outdirs`` (see the module docstring) until ``stop`` is set or a signal ends it.

    ``progress`` gets the ``check`` stage of the builds (:func:`~liveimg.serve.catalog.load_builds`).
    """
    the_plan, network = prepare(outdirs, options, progress)
    host, port = parse_http(options.http)
    stop = stop or threading.Event()
    remove_abandoned(Path(tempfile.gettempdir()))
    private = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
    lock = -1
    try:
        # Locked before it has its name: another serve's remove_abandoned never finds it unlocked.
        lock = os.open(private / f"{LOCK_NAME}.new", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # until this process ends, however it ends
        os.rename(private / f"{LOCK_NAME}.new", private / LOCK_NAME)
        private.chmod(0o711)  # dnsmasq reads the TFTP tree in it as an unprivileged user
        with contextlib.ExitStack() as stack:
            stack.enter_context(ArtifactServer(served(the_plan.http), host=host, port=port, log=on_request))
            if options.tftp:
                tftp = private / "tftp"
                tftp.mkdir()
                write_tree(the_plan, tftp)
                conf = private / "dnsmasq.conf"
                conf.write_text(config(the_plan, options.dhcp, tftp_root=tftp, network=network,
                                       leases=private / "leases"))  # fmt: skip
                stack.enter_context(Dnsmasq(conf, on_dnsmasq))
            if ready is not None:
                ready(the_plan)
            while not stop.wait(0.5):
                pass
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if lock >= 0:
            os.close(lock)


def remove_abandoned(tmp: Path) -> list[Path]:
    """Remove the private directories that killed serves left in ``tmp``; the ones removed.

    A serve holds an flock on its directory's :data:`LOCK_NAME` for as long as its process
    lives: a directory whose lock can be taken belongs to a process that is gone (a SIGKILL
    leaves it no time to remove it).  Only real directories of this user, with a lock that is a
    regular file, are candidates; anything else named like them is left alone.
    """
    removed = []
    uid = os.geteuid()
    for entry in sorted(tmp.glob(PRIVATE_PREFIX + "*")):
        try:
            st = entry.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                continue
            fd = os.open(entry / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone meanwhile, no lock (yet), or not ours to open
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its serve is running
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by a serve that was killed", entry)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


__all__ = ["DEFAULT_PORT", "ServeOptions", "base_url", "parse_http", "prepare", "remove_abandoned", "serve", "served"]
