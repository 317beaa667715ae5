"""The live initramfs fetches the live image itself, checks it, and stops with one line when it cannot.

dracut's livenet module downloads ``root=live:<URL>`` with its ``/sbin/livenetroot``, which
netroot runs once an interface is online.  Its loop retries any failure (a 404 too) 100 times
5 s apart, says only ``curl: (22)``, and checks nothing: another build's file boots, or fails
later for no visible reason.  liveimg replaces that script, in the cpio archive appended to
the initramfs (:mod:`liveimg.dracut.customize`), with :data:`LIVENETROOT`, which

* downloads the URL with curl into ``/tmp/liveimg/`` (tmpfs, as livenet's own ``/tmp``
  directory), hashing it as it streams (``curl | tee FILE | sha256sum``: one copy in RAM);
* retries what may pass (HTTP 5xx, 408, 429; no connection, a reset, a stall, a cut transfer)
  a bounded number of times with a short back-off, and nothing else;
* first compares this build's RAM floor (:mod:`liveimg.ramfloor`) with the machine's ``MemTotal``,
  and stops below it, before the download fills the tmpfs;
* compares the size and sha256 with :data:`VERIFY_FILE` (``SIZE SHA256``, written by this
  build for its own live file; left out with ``--no-verify``, which keeps only the download);
* hands the file to dmsquash-live-root as livenet does -- or writes one line (:data:`MESSAGES`)
  to the kernel log at the critical level (every console shows it, ``quiet`` or not) and halts
  the machine: no retry storm against the server, no emergency shell waiting for a password,
  and the line stays on the screen of a diskless machine for whoever looks at it.

When no interface ever comes online, livenetroot never runs; dracut's initqueue then times out
(``rd.retry``) and runs its ``initqueue/timeout`` hooks, where :data:`TIMEOUT_HOOK` says so and
halts likewise.

Both scripts read the paths they use below ``$LIVEIMG_PREFIX`` (empty in the initramfs), so the
unit tests can run them for real in a directory standing in for ``/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from liveimg.dracut import EmbeddedFile, cpio, hook_dir
from liveimg.dracut.initramfs import Initramfs, Source, opened
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.ramfloor import RAM_FILE, RamFloor

#: Where the initramfs finds the live file's expected size and sha256: ``SIZE SHA256``, one line.
VERIFY_FILE = "/etc/liveimg/live-image"
#: The name of the initqueue timeout hook (no network: the live image was never fetched).
TIMEOUT_HOOK_NAME = "99-liveimg-no-network.sh"
#: What the image's dracut must add to the initramfs for the check (it has curl already, via livenet).
DRACUT_INSTALL = ("--install", "sha256sum tee")

#: The lines a failed fetch ends with, as regular expressions (``boot-test`` knows them as ``image-verify``).
MESSAGES = {
    "not-found": r"liveimg: the server answered (\d{3}) for (\S+)",
    "short": r"liveimg: the download of (\S+) is short: got (\d+) of (\d+) bytes",
    "mismatch": r"liveimg: (\S+) is not this build's live image: sha256 expected ([0-9a-f]{64}), got (\w+) "
    r"\(initramfs and rootfs are from different builds\?\)",
    "no-network": r"liveimg: the network never came up",
    "unreachable": r"liveimg: cannot download (\S+)",
    "no-room": r"liveimg: cannot store (\S+)",
    "ram": r"liveimg: this image needs (\d+) MiB of RAM, this machine has (\d+) MiB",
}

# Shared by both scripts: say one line on every console, then stop the machine.
_COMMON = r"""
P=${LIVEIMG_PREFIX:-}
STARTED=$P/tmp/liveimg-fetch.started

liveimg_log() {
    # The kernel log reaches every console (at the critical level <2>, with quiet too); else stderr.
    if [ -w "$P/dev/kmsg" ]; then
        echo "<$1>liveimg: $2" >> "$P/dev/kmsg"
    else
        echo "liveimg: $2" >&2
    fi
}

# The live file's expected size and sha256, when this build checks it (VERIFY_FILE): sets
# want_size and want_sha (both empty without the file); stops if the file is damaged.
liveimg_expected() {
    want_size= want_sha=
    [ -e "$P/etc/liveimg/live-image" ] || return 0
    read -r want_size want_sha _rest < "$P/etc/liveimg/live-image"
    case "$want_size" in '' | *[!0-9]*) want_size=bad ;; esac
    case "$want_sha" in *[!0-9a-f]*) want_sha= ;; esac
    if [ "$want_size" = bad ] || [ "${#want_sha}" -ne 64 ]; then
        liveimg_stop "cannot check $1: $P/etc/liveimg/live-image is damaged (rebuild the initramfs)"
    fi
}

liveimg_stop() {
    liveimg_log 2 "$1"
    # Halt: the line stays on the screen; a reboot would loop against the server and hide it.
    sleep 1  # the console's drivers have printed the line
    halt -f || poweroff -f || echo o > "$P/proc/sysrq-trigger"
    exit 1
}
"""

#: The shell functions liveimg's initramfs scripts share (``liveimg_log``, ``liveimg_stop``; ``$P``, ``$STARTED``).
COMMON = _COMMON

#: /sbin/livenetroot, replaced: ``livenetroot IFACE livenet:<URL>`` (from dracut's netroot).
LIVENETROOT = (
    r"""#!/bin/sh
# liveimg's livenetroot: fetch root=live:<URL>, check it against this build's live file, hand it
# to dmsquash-live-root -- or say in one line why not and halt (liveimg/liveverify.py).
type getarg > /dev/null 2>&1 || . "${LIVEIMG_PREFIX:-}/lib/dracut-lib.sh"
"""
    + _COMMON
    + r"""
TRIES=${LIVEIMG_TRIES:-4}
PAUSE=${LIVEIMG_PAUSE:-2}

# Only the first interface to come online fetches.
[ -e "$STARTED" ] && exit 0
: > "$STARTED"

url=${2#livenet:}
[ -n "$url" ] || liveimg_stop "cannot download the live image: no URL in root=live:"

# Enough RAM for the live file, before it fills the initramfs's tmpfs (liveimg/ramfloor.py):
# this build's floors in MiB of MemTotal, without and with rd.live.ram=1 (a second copy in /run).
if [ -e "$P/etc/liveimg/ram" ]; then
    read -r need_mib live_ram_mib _rest < "$P/etc/liveimg/ram"
    for n in "$need_mib" "$live_ram_mib"; do
        case "$n" in
            '' | *[!0-9]*) liveimg_stop "cannot check the RAM: $P/etc/liveimg/ram is damaged (rebuild the initramfs)" ;;
        esac
    done
    getargbool 0 rd.live.ram && need_mib=$live_ram_mib
    have_kib=
    while read -r name value _rest; do
        [ "$name" = MemTotal: ] && have_kib=$value
    done < "$P/proc/meminfo"
    case "$have_kib" in
        '' | *[!0-9]*) liveimg_log 4 "cannot read MemTotal in /proc/meminfo: the RAM is not checked" ;;
        *)
            have_mib=$((have_kib / 1024))
            liveimg_log 5 "RAM: this machine has $have_mib MiB (MemTotal), this image needs $need_mib MiB"
            # liveimg.ramcheck=0: go on below the floor (the RAM-floor benchmark does).
            if [ "$have_mib" -lt "$need_mib" ] && getargbool 1 liveimg.ramcheck; then
                liveimg_stop "this image needs $need_mib MiB of RAM, this machine has $have_mib MiB"
            fi
            ;;
    esac
fi

liveimg_expected "$url"

dir=$P/tmp/liveimg
mkdir -p "$dir"
case "$url" in
    *.iso) img=$dir/live.iso ;;
    *) img=$dir/live.img ;;
esac
hdr=$dir/headers err=$dir/curl.err
cr=$(printf '\r')

set -- --globoff --location --fail --silent --show-error --connect-timeout 30 --speed-limit 1 --speed-time 60
getargbool 0 rd.noverifyssl && set -- "$@" --insecure
proxy=$(getarg proxy=) && [ -n "$proxy" ] && set -- "$@" --proxy "$proxy"

# One attempt: sets rc (curl's exit), code (the last HTTP status), length (its Content-Length),
# got (the bytes stored), sum (their sha256, when checking) and stored (tee's exit).
fetch() {
    rm -f "$img" "$hdr" "$err" "$dir/rc" "$dir/tee"
    if [ -n "$want_sha" ]; then
        sum=$({ { curl "$@" --dump-header "$hdr" -- "$url" 2> "$err"; echo $? > "$dir/rc"; } \
            | tee "$img" 2>> "$err"; echo $? > "$dir/tee"; } | sha256sum)
        sum=${sum%% *}
        read -r stored < "$dir/tee"
    else
        curl "$@" --dump-header "$hdr" --output "$img" -- "$url" 2> "$err"
        echo $? > "$dir/rc"
        sum= stored=0
    fi
    read -r rc < "$dir/rc"
    code= length=
    if [ -e "$hdr" ]; then
        while read -r name value _rest; do
            value=${value%"$cr"}
            case "$name" in
                HTTP/*) code=$value length= ;;
                [Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]:) length=$value ;;
            esac
        done < "$hdr"
    fi
    got=0
    if [ -f "$img" ]; then
        # ls, not stat or wc: dracut's base module always installs it.
        set -- $(ls -ln "$img")
        got=$5
    fi
}

# Whether the last attempt failed in a way that may pass.
transient() {
    case "$code" in
        5??|408|429) return 0 ;;
    esac
    case "$rc" in
        6|7|18|28|52|55|56) return 0 ;;
    esac
    return 1
}

liveimg_log 5 "fetching $url"
try=1 pause=$PAUSE
while :; do
    fetch "$@"
    [ "$rc" = 0 ] && [ "$stored" = 0 ] && break
    [ "$stored" = 0 ] || break
    transient || break
    [ "$try" -ge "$TRIES" ] && break
    liveimg_log 4 "retrying $url in $pause s (try $try of $TRIES failed: ${code:-curl error $rc})"
    sleep "$pause"
    try=$((try + 1)) pause=$((pause * 2))
done

if [ "$stored" != 0 ]; then
    liveimg_stop "cannot store $url: wrote $got bytes before the initramfs ran out of room (more RAM?)"
fi
if [ "$rc" != 0 ]; then
    case "$code" in
        4??|5??) liveimg_stop "the server answered $code for $url" ;;
    esac
    if [ "$rc" = 18 ]; then
        liveimg_stop "the download of $url is short: got $got of ${want_size:-$length} bytes"
    fi
    why=$(cat "$err" 2> /dev/null)
    why=${why#curl: }
    liveimg_stop "cannot download $url after $try tries: ${why:-curl error $rc}"
fi
if [ -n "$want_size" ] && [ "$got" -lt "$want_size" ]; then
    liveimg_stop "the download of $url is short: got $got of $want_size bytes"
fi
if [ -n "$want_sha" ] && [ "$sum" != "$want_sha" ]; then
    why="sha256 expected $want_sha, got $sum"
    liveimg_stop "$url is not this build's live image: $why (initramfs and rootfs are from different builds?)"
fi
[ -n "$want_sha" ] && liveimg_log 5 "$url checked: $got bytes, sha256 $sum"

# As livenet: an ISO through a loop device, anything else as it is.
if [ "${img##*.}" = iso ]; then
    root=$(losetup -f)
    losetup "$root" "$img"
else
    root=$img
fi
exec "$P/sbin/dmsquash-live-root" "$root"
"""
)

#: Sourced by dracut's initqueue when it times out (``rd.retry``): no interface came online.
TIMEOUT_HOOK = (
    r"""# liveimg: the initqueue timed out before any interface came online to fetch root=live:<URL>
# (liveimg/liveverify.py).  Sourced by dracut: everything here is in a subshell.
(
"""
    + _COMMON
    + r"""
_root=$(getarg root=)
case "$_root" in
    live:http://* | live:https://* | live:ftp://* | live:tftp://* | live:nbd://*) ;;
    *) exit 0 ;;
esac
[ -e "$STARTED" ] && exit 0
read -r _up _rest < "$P/proc/uptime"
_why="no interface was online after ${_up%.*} s to fetch ${_root#live:}"
liveimg_stop "the network never came up: $_why (check the link, DHCP or ip=, and rd.retry=)"
)
"""
)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def verify_line(size: int, sha256: str) -> str:
    """:data:`VERIFY_FILE`'s content for a live file of ``size`` bytes and this ``sha256`` (hex)."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidOptions(f"live file size {size!r} must be a positive number of bytes")
    if not _SHA256.fullmatch(sha256):
        raise InvalidOptions(f"live file sha256 {sha256!r} must be 64 lower-case hex digits")
    return f"{size} {sha256}\n"


def initramfs_files(
    initramfs: Source, workdir: Path, expected: tuple[int, str] | None, ram: RamFloor | None = None
) -> list[EmbeddedFile]:
    """What to append to ``initramfs``: :data:`LIVENETROOT` where it has livenet's, the timeout hook,
    with ``expected`` (size, sha256) :data:`VERIFY_FILE` -- whose check needs the tools of
    :data:`DRACUT_INSTALL` in it (an :class:`InvalidImage` if it lacks them) -- and with ``ram``
    the RAM floor (:data:`liveimg.ramfloor.RAM_FILE`), compared with the machine's before the download.
    ``initramfs``: a path, or the initramfs already open (:func:`~liveimg.dracut.initramfs.opened`)."""
    with opened(initramfs) as ird:
        return _initramfs_files(ird, workdir, expected, ram)


def _initramfs_files(
    ird: Initramfs, workdir: Path, expected: tuple[int, str] | None, ram: RamFloor | None
) -> list[EmbeddedFile]:
    initramfs = ird.path
    found = ird.files()
    regular = {m.path for m in found.values() if m.kind in (cpio.Kind.FILE, cpio.Kind.HARDLINK)}
    target = next((p for p in ("usr/sbin/livenetroot", "sbin/livenetroot") if p in regular), None)
    if target is None:
        raise InvalidImage(
            f"{initramfs} has no livenetroot: the image's dracut lacks its livenet module",
            hint="install dracut-live (Debian, Fedora) in the image",
        )
    if expected is not None:
        names = {p.rsplit("/", 1)[-1] for p in regular}
        missing = [tool for tool in DRACUT_INSTALL[1].split() if tool not in names]
        if missing:
            raise InvalidImage(
                f"{initramfs} lacks {', '.join(missing)}, which the live image's check needs",
                hint="install coreutils in the image, or build with --no-verify",
            )
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "liveimg-livenetroot"
    script.write_text(LIVENETROOT)
    hook = workdir / TIMEOUT_HOOK_NAME
    hook.write_text(TIMEOUT_HOOK)
    files = [
        EmbeddedFile(script, f"/{target}", 0o755),
        EmbeddedFile(hook, f"/{hook_dir(ird, 'initqueue/timeout')}/{TIMEOUT_HOOK_NAME}", 0o644),
    ]
    if expected is not None:
        line = workdir / "liveimg-live-image"
        line.write_text(verify_line(*expected))
        files.append(EmbeddedFile(line, VERIFY_FILE, 0o644))
    if ram is not None:
        floor = workdir / "liveimg-ram"
        floor.write_text(ram.line())
        files.append(EmbeddedFile(floor, RAM_FILE, 0o644))
    return files


__all__ = [
    "COMMON",
    "DRACUT_INSTALL",
    "LIVENETROOT",
    "MESSAGES",
    "TIMEOUT_HOOK",
    "TIMEOUT_HOOK_NAME",
    "VERIFY_FILE",
    "initramfs_files",
    "verify_line",
]
