"""The cloud-init seed's iSCSI part: a live host's container storage on an iSCSI LUN (``--ci-iscsi``).

A diskless host keeps its container images in RAM, and loses them at the next boot.  With
:class:`IscsiStorage` in a :class:`~liveimg.pxe.CloudInitSeed`, the seed's user-data also has,
as the post this project comes from does by hand:

``write_files``
    ``/etc/iscsi/initiatorname.iscsi``, the initiator's name: the one given, or one derived
    from the seed's instance-id and host name (:func:`derived_initiator`), the same at every
    boot of that seed, so that a target's ACL can name it; and :data:`SCRIPT_PATH`, the storage
    setup (:data:`STORAGE_SCRIPT`).
``runcmd``, before any command of the caller's
    ``iscsiadm --mode discoverydb --type sendtargets --portal P --discover``, then
    ``iscsiadm --mode node --targetname IQN --portal P --login`` (P: a host name's first address,
    looked up on the booted host, see :meth:`IscsiStorage.portal_word`), then the storage setup: it
    waits for udev's ``/dev/disk/by-path/ip-*-iscsi-IQN-lun-N`` link, makes an ext4 filesystem
    on the LUN only when ``blkid -p`` finds no signature at all on it (so a later boot keeps
    the data, and a LUN holding anything else -- a partition table, an LVM PV -- is left
    alone), stops the engine's units that run, mounts the filesystem where the engine keeps
    its storage (:data:`ENGINES`), and starts those units again.

Values are hostile until checked: the portal (:func:`parse_portal`) and the names
(:func:`iscsi_name`) must match their RFC forms exactly, and still every value is quoted for
the shell (``shlex``) in the commands and written into YAML by PyYAML's safe dumper alone.

One seed is one machine: its LUN is its own (two hosts cannot share one container storage),
and so is the initiator name derived from its instance-id.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liveimg.errors import InvalidOptions

#: The iSCSI port (RFC 3720's well-known port), when the portal names none.
DEFAULT_PORT = 3260
#: RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes.
MAX_NAME = 223
#: udev's path_id writes LUNs up to 255 as ``lun-N`` (larger ones in a 64-bit hex form).
MAX_LUN = 255
#: Where the initiator's name is read by iscsid.
INITIATOR_FILE = "/etc/iscsi/initiatorname.iscsi"
#: Where the seed writes the storage setup: /etc, which an ostree host can write (/usr cannot be).
SCRIPT_PATH = "/etc/liveimg/iscsi-storage.sh"
#: The naming authority of derived initiator names: ``.invalid`` is reserved (RFC 2606) and never
#: delegated, so no real authority's names can collide with these.
DERIVED_AUTHORITY = "iqn.2026-12.invalid.liveimg"


@dataclass(frozen=True)
class Engine:
    """A container engine: where it keeps its storage, and the units that hold it open."""

    storage: str
    units: tuple[str, ...]


#: The engines the storage can be set up for.
ENGINES: Mapping[str, Engine] = {
    "podman": Engine("/var/lib/containers/storage", ("podman.socket", "podman.service")),
    "docker": Engine("/var/lib/docker", ("docker.socket", "docker.service")),
}

#: The storage setup, run after the login as ``sh SCRIPT_PATH TARGET LUN|any MOUNTPOINT [UNIT...]``.
#: Its lines on stdout (``liveimg-iscsi: ...``) reach the console through cloud-init.
STORAGE_SCRIPT = """\
#!/bin/sh
# Written by liveimg (--ci-iscsi): the container engine's storage on an iSCSI LUN.
# Usage: iscsi-storage.sh TARGET LUN|any MOUNTPOINT [UNIT...]
set -eu
target=$1 lun=$2 mnt=$3
shift 3
say() { echo "liveimg-iscsi: $*"; }

# udev's link for the LUN (the lowest-numbered one with "any"); -partN links are not LUNs.
find_disk() {
    best='' bestn=''
    for link in /dev/disk/by-path/ip-*-iscsi-"$target"-lun-*; do
        [ -e "$link" ] || continue
        n=${link##*-lun-}
        case $n in '' | *[!0-9]*) continue ;; esac
        [ "$lun" = any ] || [ "$n" = "$lun" ] || continue
        if [ -z "$bestn" ] || [ "$n" -lt "$bestn" ]; then best=$link bestn=$n; fi
    done
    [ -n "$best" ] && echo "$best"
}

waited=0
udevadm settle --timeout=30 || true
until link=$(find_disk); do
    if [ "$waited" -ge 60 ]; then
        say "no disk of $target (LUN $lun) in /dev/disk/by-path after 60 s"
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
dev=$(readlink -f "$link")

# blkid also says "nothing found" (2) when it cannot read: read the disk's start first.
if ! dd if="$dev" of=/dev/null bs=65536 count=16 2>/dev/null; then
    say "cannot read $dev ($link)"
    exit 1
fi
rc=0
found=$(blkid -p -o export "$dev") || rc=$?
case $rc in
0)
    fstype=$(printf '%s\\n' "$found" | sed -n 's/^TYPE=//p')
    usage=$(printf '%s\\n' "$found" | sed -n 's/^USAGE=//p')
    if [ -z "$fstype" ] || [ "$usage" != filesystem ]; then
        what=$(printf '%s\\n' "$found" | grep -E '^(TYPE|PTTYPE|USAGE)=' | tr '\\n' ' ')
        say "$dev ($link) holds ${what}and no filesystem: left alone"
        exit 1
    fi
    say "kept the existing $fstype filesystem on $dev ($link)"
    ;;
2)
    mkfs.ext4 -q -L containers "$dev"
    fstype=ext4
    say "made an ext4 filesystem on $dev ($link): blkid found nothing on it"
    ;;
*)
    say "blkid -p $dev failed with exit status $rc"
    exit 1
    ;;
esac

stopped=''
for unit in "$@"; do
    if systemctl is-active --quiet "$unit"; then
        systemctl stop "$unit"
        stopped="$stopped $unit"
    fi
done
mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
    current=$(findmnt -no SOURCE --mountpoint "$mnt" | head -n1)
    if [ "$(readlink -f "$current")" != "$dev" ]; then
        say "$mnt is already a mount of $current, not of $dev"
        exit 1
    fi
    say "$mnt is already on $dev"
else
    mount -t "$fstype" -o _netdev "$dev" "$mnt"
    say "mounted $dev ($fstype) on $mnt"
fi
for unit in $stopped; do
    systemctl start "$unit"
done
"""

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
# RFC 3720 3.2.6.3.1: iqn.<yyyy-mm>.<reversed domain name>[:<unique name>]; the characters of a
# name after RFC 3722's stringprep are a-z, 0-9, '-', '.' and ':' (ASCII; upper case folded).
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_IQN = re.compile(rf"iqn\.[0-9]{{4}}-(0[1-9]|1[0-2])\.{_LABEL}(\.{_LABEL})*(:[a-z0-9.:-]+)?")
# 3.2.6.3.2: eui. and 16 hex digits (an EUI-64); RFC 3980: naa. and 16 or 32 hex digits.
#: A portal host that parse_portal reads as an IPv4 address, never as a host name.
_IPV4_LIKE = re.compile(r"[0-9.]+")
_EUI = re.compile(r"eui\.[0-9A-Fa-f]{16}")
_NAA = re.compile(r"naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})")


def _show(value: object, limit: int = 60) -> str:
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def parse_portal(text: str) -> str:
    """An iSCSI portal as ``iscsiadm --portal`` takes it: ``HOST:PORT``, the port made explicit.

    HOST is an IPv4 address, an IPv6 address in brackets, or an RFC 1123 host name; the port
    (1 to 65535) defaults to :data:`DEFAULT_PORT`.  Anything else is an
    :class:`~liveimg.errors.InvalidOptions`.
    """
    bad = InvalidOptions(
        f"invalid iSCSI portal {_show(text)}",
        hint="an IPv4 address, [IPv6 address] or host name, with an optional :PORT (default 3260)",
    )
    if not isinstance(text, str) or not text.isascii() or not text.isprintable():
        raise bad
    port = str(DEFAULT_PORT)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad
        if rest:
            port = rest[1:]
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
        host = f"[{address.compressed}]"
    else:
        if text.count(":") > 1:
            raise InvalidOptions(
                f"invalid iSCSI portal {_show(text)}", hint="write an IPv6 address in brackets: [ADDRESS]:PORT"
            )
        host, sep, rest = text.partition(":")
        if sep:
            port = rest
        if _IPV4_LIKE.fullmatch(host):
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise bad from None
        elif not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in host.split(".")):
            raise bad
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise bad
    return f"{host}:{int(port)}"


def iscsi_name(text: str, *, what: str = "iSCSI name") -> str:
    """``text`` if it is an iSCSI name in one of RFC 3720's forms (``iqn.``, ``eui.``) or RFC
    3980's (``naa.``), at most 223 bytes; else an :class:`~liveimg.errors.InvalidOptions`."""
    known = isinstance(text, str) and len(text) <= MAX_NAME and text.isascii()
    if known and (_IQN.fullmatch(text) or _EUI.fullmatch(text) or _NAA.fullmatch(text)):
        return text
    hint = "iqn.YYYY-MM.reversed.domain[:name] in lower case (a-z 0-9 - . :), eui.<16 hex> or naa.<16 or 32 hex>"
    raise InvalidOptions(f"invalid {what} {_show(text)}", hint=hint)


def derived_initiator(instance_id: str, hostname: str) -> str:
    """An initiator name for the seed whose meta-data has ``instance_id`` and ``hostname``:
    the same for every boot of that seed, different for another seed."""
    digest = hashlib.sha256(f"{instance_id}\0{hostname}".encode()).hexdigest()[:12]
    return iscsi_name(f"{DERIVED_AUTHORITY}:{hostname.lower()}.{digest}", what="the derived initiator name")


@dataclass(frozen=True)
class IscsiStorage:
    """Container storage on an iSCSI LUN, as cloud-init sets it up at boot (see the module docstring).

    ``portal`` is normalised to ``HOST:PORT``; ``lun`` None takes the target's lowest-numbered
    disk; ``initiator`` None derives the initiator's name from the seed (:func:`derived_initiator`);
    ``engine`` is a key of :data:`ENGINES`.
    """

    portal: str
    target: str
    lun: int | None = None
    initiator: str | None = None
    engine: str = "podman"

    def __post_init__(self) -> None:
        object.__setattr__(self, "portal", parse_portal(self.portal))
        iscsi_name(self.target, what="iSCSI target name")
        if self.initiator is not None:
            iscsi_name(self.initiator, what="iSCSI initiator name")
        lun = self.lun
        if lun is not None and (isinstance(lun, bool) or not isinstance(lun, int) or not 0 <= lun <= MAX_LUN):
            raise InvalidOptions(f"invalid iSCSI LUN {_show(lun)}", hint=f"a number from 0 to {MAX_LUN}")
        if self.engine not in ENGINES:
            raise InvalidOptions(f"unknown container engine {_show(self.engine)}", hint="use " + " or ".join(ENGINES))

    @classmethod
    def parse(cls, spec: str, *, initiator: str | None = None, engine: str = "podman") -> IscsiStorage:
        """``--ci-iscsi PORTAL,IQN[,LUN]``."""
        parts = spec.split(",") if isinstance(spec, str) else []
        if len(parts) not in (2, 3):
            raise InvalidOptions(f"--ci-iscsi {_show(spec)} is not PORTAL,IQN[,LUN]")
        lun = None
        if len(parts) == 3:
            if not re.fullmatch(r"[0-9]{1,3}", parts[2]):
                raise InvalidOptions(f"invalid iSCSI LUN {_show(parts[2])}", hint=f"a number from 0 to {MAX_LUN}")
            lun = int(parts[2])
        return cls(parts[0], parts[1], lun, initiator, engine)

    def initiator_name(self, instance_id: str, hostname: str) -> str:
        """The initiator's name: the one given, else derived from the seed."""
        return self.initiator or derived_initiator(instance_id, hostname)

    def write_files(self, initiator: str) -> list[dict[str, str]]:
        """The ``write_files`` entries: the initiator's name and the storage setup."""
        return [
            {"path": INITIATOR_FILE, "content": f"InitiatorName={iscsi_name(initiator)}\n", "permissions": "0644"},
            {"path": SCRIPT_PATH, "content": STORAGE_SCRIPT, "permissions": "0755"},
        ]

    def portal_word(self) -> str:
        """The portal as a word of the commands' shell lines.

        An address is itself (quoted).  A host name is looked up on the booted host, and the
        commands get its first address (``getent ahosts``, the order ``getaddrinfo`` gives, which
        iscsiadm would also connect to): iscsiadm's node mode finds the target's records, which
        hold the address the target gave, and open-iscsi's issue 450 (fixed by its pull request
        451, 2024) reports releases where it compares that address with ``--portal`` as written,
        so that a host name matches no record and the login fails.  With the address, the login
        does not depend on the release.  (Debian 12's 2.1.8 logs in with the name as well.)
        """
        host, _, port = self.portal.rpartition(":")
        if host.startswith("[") or _IPV4_LIKE.fullmatch(host):
            return shlex.quote(self.portal)
        first = 'read -r a _ && case "$a" in *:*) echo "[$a]" ;; *) echo "$a" ;; esac'
        return f'"$(getent ahosts {shlex.quote(host)} | {{ {first}; }}):{port}"'

    def runcmd(self) -> list[str]:
        """The ``runcmd`` commands, each a shell line with every value quoted."""
        engine = ENGINES[self.engine]
        lun = "any" if self.lun is None else str(self.lun)
        portal = self.portal_word()
        return [
            f"iscsiadm --mode discoverydb --type sendtargets --portal {portal} --discover",
            f"iscsiadm --mode node --targetname {shlex.quote(self.target)} --portal {portal} --login",
            shlex.join(["sh", SCRIPT_PATH, self.target, lun, engine.storage, *engine.units]),
        ]

    def merge_into(self, config: Any, initiator: str, *, source: str = "the user-data") -> dict[str, Any]:
        """``config`` (a parsed ``#cloud-config``) with this storage's files and commands added:
        theirs first in ``runcmd``, so that the storage is in place before the caller's commands
        use the engine.  A ``config`` that is not a mapping, whose ``write_files`` or ``runcmd``
        is not a list, or that writes one of these files itself, is refused."""
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise InvalidOptions(f"{source} is not a cloud-config mapping: --ci-iscsi cannot add to it")
        merged = dict(config)
        for key in ("write_files", "runcmd"):
            if key in merged and not isinstance(merged[key], list):
                raise InvalidOptions(f"{source}'s {key} is not a list: --ci-iscsi cannot add to it")
        ours = self.write_files(initiator)
        theirs = merged.get("write_files", [])
        for entry in theirs:
            path = entry.get("path") if isinstance(entry, dict) else None
            if path in {f["path"] for f in ours}:
                raise InvalidOptions(
                    f"{source} writes {path} itself, as --ci-iscsi does",
                    hint="leave it out (give the initiator's name with --ci-iscsi-initiator)",
                )
        merged["write_files"] = [*ours, *theirs]
        merged["runcmd"] = [*self.runcmd(), *merged.get("runcmd", [])]
        return merged


__all__ = [
    "DEFAULT_PORT",
    "ENGINES",
    "INITIATOR_FILE",
    "SCRIPT_PATH",
    "STORAGE_SCRIPT",
    "Engine",
    "IscsiStorage",
    "derived_initiator",
    "iscsi_name",
    "parse_portal",
]
