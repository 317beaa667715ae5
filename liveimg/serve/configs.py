"""``liveimg serve --print-config``: the same serve, by nginx, dnsmasq or Kea on a production server.

:func:`print_config` checks the builds and makes the :class:`~liveimg.serve.catalog.Plan` as
``liveimg serve`` would for the same options, writes the files those servers serve into a tree
of the caller's choosing, and returns the configuration of one server for that tree:

``TREE/http/``
    every HTTP path of the plan (the builds' files, as hard links, and the iPXE menus), for nginx;
``TREE/tftp/``
    the TFTP tree (BIOS loaders, menus, kernels and initrds, the UEFI chain), for dnsmasq's TFTP
    server or another (tftpd-hpa beside Kea, which has none);
``TREE/.liveimg-serve-tree``
    the mark that the tree is ours: an existing TREE is replaced only if it has it (or is empty),
    so a user's directory is never clobbered.

The tree is written beside TREE and swapped in with one rename
(:class:`~liveimg.outdir.OutdirTransaction`): a server reading it sees the old tree or the new
one, never a half-written one, and paths in its configuration stay valid across rewrites.

Every value written into a configuration is checked or quoted for its syntax: nginx strings
are double-quoted (and refused with a quote, a backslash, ``$`` or a control character, which
nginx would interpret), dnsmasq values refused with its separators, Kea's JSON made by
:func:`json.dumps`.  Nothing here needs root: the interface's address is read with ``ip``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from liveimg.errors import InvalidOptions
from liveimg.outdir import OutdirTransaction
from liveimg.serve.catalog import BiosLoader, Plan, load_builds, plan, write_files, write_tree
from liveimg.serve.dnsmasq import (
    LEASE_TIME,
    UEFI_X86_64_ARCHES,
    DhcpMode,
    Network,
    boot_rules,
    config,
    lease_range,
    network_of,
)
from liveimg.serve.service import ServeOptions, base_url, parse_http

#: The servers :func:`print_config` writes for.
SERVERS = ("nginx", "dnsmasq", "kea")
#: The file that marks a tree as written by :func:`print_config` (and so replaceable by it).
MARKER = ".liveimg-serve-tree"
#: nginx's access log for the server block (Debian's nginx logs to /var/log/nginx).
NGINX_ACCESS_LOG = "/var/log/nginx/liveimg-serve.access.log"
#: Kea's lease lifetime: dnsmasq's (:data:`~liveimg.serve.dnsmasq.LEASE_TIME`, ``1h``) in seconds.
KEA_LEASE_SECONDS = 3600
#: Kea class tests (its expression language): the iPXE user class (option 77), a UEFI x86-64 client (option 93).
KEA_IPXE_TEST = "option[77].text == 'iPXE'"
KEA_EFI64_TEST = " or ".join(f"option[93].hex == 0x{arch:04x}" for arch in UEFI_X86_64_ARCHES)

# What nginx interprets inside a double-quoted string: the quote, escapes, variables; and line breaks.
_NGINX_UNSAFE = re.compile(r'["\\$\x00-\x1f\x7f]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def print_config(outdirs: Sequence[Path], options: ServeOptions, server: str, tree: Path) -> str:
    """``server``'s configuration (``nginx``, ``dnsmasq`` or ``kea``) serving ``outdirs`` as
    ``liveimg serve`` with ``options`` would, after writing ``tree`` (see the module docstring).

    nginx serves ``tree/http`` at ``options.http``; dnsmasq serves ``tree/tftp`` and DHCP as
    ``options.dhcp`` says; Kea is a DHCP server, so its configuration is full DHCP (``--dhcp
    full`` or ``none``).  Refused with :class:`~liveimg.errors.InvalidOptions` before anything is
    written: an unknown server, Kea without ``options.interface`` or with proxy DHCP (use
    dnsmasq), a ``tree`` whose path the configuration cannot hold, a non-empty ``tree`` not
    written by this function.
    """
    writer = _WRITERS.get(server)
    if writer is None:
        raise InvalidOptions(f"no configuration for {server!r}", hint=f"choose one of {', '.join(SERVERS)}")
    if server == "kea":
        if options.dhcp is DhcpMode.PROXY:
            raise InvalidOptions(
                "Kea cannot be a proxy DHCP server", hint="use --print-config dnsmasq for --dhcp proxy"
            )
        if options.interface is None:
            raise InvalidOptions("--print-config kea needs --interface", hint="name the interface the machines are on")
    tree = Path(os.path.abspath(tree))
    if _CONTROL.search(str(tree)):
        raise InvalidOptions(f"--tree {str(tree)!r} has a control character", hint="choose a plain path")
    network = network_of(options.interface) if options.interface is not None else None
    builds = load_builds(outdirs)
    the_plan = plan(builds, base_url(options, network), kernel_args=options.kernel_args, loader=options.loader)
    text = writer(the_plan, options, network, tree)  # before the tree: a refused value writes nothing
    write_trees(the_plan, tree)
    return text


def write_trees(plan: Plan, tree: Path) -> None:
    """``tree`` made anew: ``http/`` (:attr:`Plan.http`), ``tftp/`` (:attr:`Plan.tftp`) and the
    :data:`MARKER`, swapped in for the old tree at once.

    An existing ``tree`` must be a directory (not a mount point) that is empty or has the marker
    (:class:`~liveimg.errors.InvalidOptions` otherwise, and it is left as it is).
    """
    txn = OutdirTransaction(tree, force=os.path.lexists(tree))
    try:
        _check_ours(tree)  # under the transaction's lock: no other print_config is writing it
        out = txn.out
        (out / MARKER).write_text(
            "Written by liveimg serve --print-config: it replaces this directory whole when run again.\n"
        )
        (out / MARKER).chmod(0o644)
        out.chmod(0o755)  # nginx and the TFTP server read it as unprivileged users
        (out / "http").mkdir()
        write_files(plan.http, out / "http")
        (out / "tftp").mkdir()
        write_tree(plan, out / "tftp")
        txn.commit()
    finally:
        txn.close()


def _check_ours(tree: Path) -> None:
    if not tree.is_dir() or tree.is_symlink():
        return  # nothing there (the transaction refused anything but a directory)
    marker = tree / MARKER
    names = {entry.name for entry in tree.iterdir()}
    if names and not (marker.is_file() and not marker.is_symlink()):
        raise InvalidOptions(
            f"--tree {tree} is not empty and was not written by liveimg serve --print-config",
            hint="give a new or empty directory: the tree is replaced whole",
        )
    others = sorted(names - {MARKER, "http", "tftp"})
    if others:  # put there since: replacing the tree would delete it
        raise InvalidOptions(
            f"--tree {tree} holds {others[0]}, which liveimg serve --print-config did not write",
            hint="move it out of the tree: the tree is replaced whole",
        )


# --- nginx ---------------------------------------------------------------------------------------


def nginx_string(text: str) -> str:
    """``text`` as one nginx string: double-quoted, so spaces, ``;``, ``{`` and ``#`` are plain.

    Refused (:class:`~liveimg.errors.InvalidOptions`) with what nginx would still interpret: a
    double quote or backslash (escapes), ``$`` (variables) or a control character.
    """
    if _NGINX_UNSAFE.search(text):
        raise InvalidOptions(f"nginx cannot be given {text!r}", hint='use a path without " \\ $ or control characters')
    return f'"{text}"'


def nginx_listen(http: str) -> str:
    """``--http`` (``ADDR:PORT``) as nginx's ``listen`` parameter."""
    host, port = parse_http(http)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nginx_config(the_plan: Plan, options: ServeOptions, network: Network | None, tree: Path) -> str:
    """A ``server { }`` block for nginx's ``http`` context serving ``tree/http`` at ``options.http``."""
    del network  # HTTP needs no interface: the address is --http's
    root = nginx_string(str(tree / "http"))
    names = ", ".join(b.name for b in the_plan.builds)
    lines = [
        "# nginx server block generated by liveimg serve --print-config nginx.",
        f"# As liveimg serve would: the builds {names} (the first the default) at {the_plan.base_url}/,",
        f"# the iPXE menu at {the_plan.ipxe_url}.",
        "# Include it in nginx's http { } context (e.g. as /etc/nginx/conf.d/liveimg-serve.conf),",
        "# then: nginx -t && nginx -s reload",
        "server {",
        "    # The address and port of the URL the boot menus and kernel command lines name.",
        f"    listen {nginx_listen(options.http)};",
        "    # The builds' files (hard links) and the menus: only what the plan serves is there.",
        f"    root {root};",
        "    # Never list a directory, and never follow a symbolic link below the root.",
        "    autoindex off;",
        "    disable_symlinks on from=$document_root;",
        "    # The kernel, initrds and live file go from the page cache to the socket, in full packets.",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    # Menus and configurations are text (iPXE reads either); everything else is opaque bytes.",
        "    default_type application/octet-stream;",
        "    types {",
        "        text/plain ipxe cfg;",
        "    }",
        "    charset utf-8;",
        "    # One line per request: which machine fetched what, how much, with what status.",
        f"    access_log {nginx_string(NGINX_ACCESS_LOG)} combined;",
        "    location / {",
        "        # Machines only read: GET (and so HEAD); anything else is 403.",
        "        limit_except GET {",
        "            deny all;",
        "        }",
        "        # Files only: a directory is 404, neither a listing nor a redirect.",
        "        try_files $uri =404;",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


# --- dnsmasq -------------------------------------------------------------------------------------


def dnsmasq_config(the_plan: Plan, options: ServeOptions, network: Network | None, tree: Path) -> str:
    """dnsmasq's configuration (:func:`~liveimg.serve.dnsmasq.config`) for ``options.dhcp``,
    its TFTP root ``tree/tftp``; leases where dnsmasq keeps them by default."""
    body = config(the_plan, options.dhcp, tftp_root=tree / "tftp", network=network, leases=None)
    what = {
        DhcpMode.FULL: f"the DHCP server of {options.interface} (a range of its subnet, leases for {LEASE_TIME})",
        DhcpMode.PROXY: f"a proxy DHCP server on {options.interface}: another server leases the addresses",
        DhcpMode.NONE: "no DHCP: the network's DHCP server names the boot file and this host as next-server",
    }[options.dhcp]
    header = [
        "# Written by liveimg serve --print-config dnsmasq, for the dnsmasq of a production server.",
        f"# TFTP from {tree / 'tftp'} (written with it); {what}.",
        f"# HTTP ({the_plan.base_url}/) is served from {tree / 'http'} by another server (--print-config nginx).",
        "# Run it as dnsmasq --conf-file=FILE, or put it in /etc/dnsmasq.d/. port=0: dnsmasq answers no DNS.",
        *_boot_note(the_plan),
    ]
    return "\n".join(header) + "\n" + body


def _boot_note(the_plan: Plan) -> list[str]:
    """Comment lines saying which client gets which boot file (by ``--bios-loader``)."""
    if the_plan.loader is BiosLoader.PXELINUX:
        ipxe = "a UEFI client running iPXE (option 77 user class iPXE) gets the iPXE menu's URL"
        bios = f"any other BIOS client (iPXE too) {the_plan.bios_file}"
    else:
        ipxe = "a client running iPXE (option 77 user class iPXE) gets the iPXE menu's URL"
        bios = f"any other BIOS client {the_plan.bios_file}"
    uefi = "another UEFI x86-64 client (option 93 = 7 or 9) " + (the_plan.uefi_file or "nothing (no UEFI build)")
    return [f"# Boot files: {ipxe};", f"# {uefi}; {bios}."]


# --- Kea -----------------------------------------------------------------------------------------


def kea_test(ipxe: bool | None, efi64: bool | None) -> str:
    """Kea's class test for a :class:`~liveimg.serve.dnsmasq.BootRule`'s client conditions."""
    parts = []
    for test, want in ((KEA_IPXE_TEST, ipxe), (KEA_EFI64_TEST, efi64)):
        if want is not None:
            parts.append(f"({test})" if want else f"not ({test})")
    return " and ".join(parts)


def kea_config(the_plan: Plan, options: ServeOptions, network: Network | None, tree: Path) -> str:
    """A ``kea-dhcp4`` configuration: full DHCP on ``options.interface``, with dnsmasq's boot files
    (:func:`~liveimg.serve.dnsmasq.boot_rules`) as client classes."""
    if network is None:
        raise InvalidOptions("--print-config kea needs --interface", hint="name the interface the machines are on")
    first, last = lease_range(network)
    server = str(network.address.ip)
    classes: list[dict[str, Any]] = [
        {
            "name": rule.kind,
            "comment": f"liveimg serve: the {rule.kind} clients' boot file",
            "test": kea_test(rule.ipxe, rule.efi64),
            "next-server": server,
            "boot-file-name": rule.file,
        }
        for rule in boot_rules(the_plan)
    ]
    dhcp4 = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [network.interface]},
            "authoritative": True,
            "valid-lifetime": KEA_LEASE_SECONDS,
            "client-classes": classes,
            "subnet4": [
                {
                    "id": 1,
                    "comment": "liveimg serve: the machines' subnet, no router (a lab network leads nowhere else)",
                    "subnet": str(network.subnet),
                    "interface": network.interface,
                    "pools": [{"pool": f"{first} - {last}"}],
                }
            ],
        }
    }
    header = [
        "# Kea DHCPv4 (kea-dhcp4) configuration generated by liveimg serve --print-config kea.",
        f"# It leases {first} - {last} on {network.interface} and names each client's boot file.",
        *_boot_note(the_plan),
        f"# Kea has no TFTP server: serve {tree / 'tftp'} with one at {server}, e.g. tftpd-hpa",
        f"# (in.tftpd --listen --secure {tree / 'tftp'}), and {tree / 'http'} over HTTP at",
        f"# {the_plan.base_url}/ (--print-config nginx). Check it with kea-dhcp4 -t FILE.",
    ]
    return "\n".join(header) + "\n" + json.dumps(dhcp4, indent=2, ensure_ascii=True) + "\n"


_WRITERS: dict[str, Callable[[Plan, ServeOptions, Network | None, Path], str]] = {
    "nginx": nginx_config,
    "dnsmasq": dnsmasq_config,
    "kea": kea_config,
}

__all__ = [
    "MARKER",
    "SERVERS",
    "dnsmasq_config",
    "kea_config",
    "nginx_config",
    "nginx_string",
    "print_config",
    "write_trees",
]
