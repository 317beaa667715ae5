"""The live initramfs reads the live image over NBD, as a block device: RAM does not grow with the image.

With ``--url nbd://HOST[:PORT][/PATH]`` the live file is ``root=live:nbd://HOST[:PORT]/EXPORT``
(EXPORT: PATH and the file's name), which the server exports read-only over NBD (e.g.
``qemu-nbd --read-only --persistent --shared=0 --export-name EXPORT --port PORT FILE``).
dracut's livenet has no handler for ``nbd://``, so liveimg adds its own, in the cpio archive
appended to the initramfs (:mod:`liveimg.dracut.customize`), beside livenet:

* :data:`CMDLINE_HOOK` (a ``cmdline`` hook, after livenet's and dmsquash-live's parsers) turns
  ``root=live:nbd://...`` into ``netroot=livenbd:nbd://...``, so that dracut brings the network
  up and its netroot runs ``/sbin/livenbdroot`` once an interface is online;
* :data:`LIVENBDROOT` attaches the export as ``/dev/nbd0`` with nbd-client (read-only; retried a
  bounded number of times while the server cannot be reached), checks the device's size and
  the sha256 of its first SIZE bytes against :data:`liveimg.liveverify.VERIFY_FILE` (read
  through the page cache: nothing is kept), and hands the device to dmsquash-live-root, which
  mounts the squashfs on it with the usual overlay in RAM -- or writes one line
  (:data:`MESSAGES`) to the kernel log at the critical level and halts, as liveverify's
  livenetroot does;
* :data:`GENERATOR` (where the initramfs is systemd's) names ``/sysroot``'s mount, as dracut's
  own live generators do for their roots (they know nothing of ``nbd://``).

The network never coming up ends at liveverify's initqueue timeout hook, which knows
``nbd://`` too.  The image must have nbd-client (:func:`check_image`, before the long
stages); :data:`DRACUT_INSTALL` asks its dracut for it and the ``nbd`` kernel module.
"""

from __future__ import annotations

from pathlib import Path

from liveimg import bootsyntax, liveverify
from liveimg.dracut import EmbeddedFile, cpio, hook_dir
from liveimg.dracut.initramfs import Initramfs, Source, opened
from liveimg.dracut.modules import find_binary
from liveimg.errors import InvalidImage
from liveimg.fsview import GuestTree

#: What the image's dracut must add for an ``nbd://`` URL (head: the check reads SIZE bytes).
DRACUT_INSTALL = ("--install", "nbd-client head", "--add-drivers", "nbd")
#: The name of the cmdline hook.
CMDLINE_HOOK_NAME = "31-liveimg-nbd.sh"
#: The name of the systemd generator.
GENERATOR_NAME = "liveimg-nbd-generator"

#: The lines a failed attach ends with, as regular expressions (``boot-test`` knows them as ``image-verify``).
MESSAGES = {
    "unreachable": r"liveimg: cannot attach (\S+)",
    "short": r"liveimg: the export (\S+) is short: got (\d+) of (\d+) bytes",
    "mismatch": liveverify.MESSAGES["mismatch"],
    "unreadable": r"liveimg: cannot check (\S+)",
}

#: Sourced by dracut's cmdline stage: ``root=live:nbd://...`` becomes a netroot for livenbdroot.
CMDLINE_HOOK = r"""# liveimg: root=live:nbd://HOST[:PORT]/EXPORT is read over NBD by /sbin/livenbdroot, which
# dracut's netroot runs once an interface is online (liveimg/livenbd.py).
[ -z "$root" ] && root=$(getarg root=)
case "$root" in
    live:nbd://*)
        netroot="livenbd:${root#live:}"
        root=livenbd
        rootok=1
        # dmsquash-live-root makes /dev/root once it has set the live root up.
        wait_for_dev -n /dev/root
        ;;
esac
"""

#: /sbin/livenbdroot: ``livenbdroot IFACE livenbd:<URL> NEWROOT`` (from dracut's netroot).
LIVENBDROOT = (
    r"""#!/bin/sh
# liveimg's livenbdroot: attach root=live:nbd://HOST[:PORT]/EXPORT as /dev/nbd0, check it against
# this build's live file, hand it to dmsquash-live-root -- or say in one line why not and halt
# (liveimg/livenbd.py).
type getarg > /dev/null 2>&1 || . "${LIVEIMG_PREFIX:-}/lib/dracut-lib.sh"
"""
    + liveverify.COMMON
    + r"""
TRIES=${LIVEIMG_TRIES:-4}
PAUSE=${LIVEIMG_PAUSE:-2}

# Only the first interface to come online attaches.
[ -e "$STARTED" ] && exit 0
: > "$STARTED"

url=${2#livenbd:}
rest=${url#nbd://}
where=${rest%%/*}
name=${rest#*/}
port=10809
case "$where" in
    \[*\]) host=$where ;;
    \[*\]:* | *:*) host=${where%:*} port=${where##*:} ;;
    *) host=$where ;;
esac
host=${host#[}
host=${host%]}
case "$port" in '' | *[!0-9]*) port= ;; esac
if [ "$url" = "$rest" ] || [ "$name" = "$rest" ] || [ -z "$name" ] || [ -z "$host" ] || [ -z "$port" ]; then
    liveimg_stop "cannot attach $url: it is not nbd://HOST[:PORT]/EXPORT"
fi

liveimg_expected "$url"

dev=$P/dev/nbd0
err=$P/tmp/liveimg-nbd.err
modprobe nbd > /dev/null 2>&1

liveimg_log 5 "attaching $url"
try=1 pause=$PAUSE
while :; do
    # Read-only: the squashfs is never written; the overlay is in RAM.
    nbd-client "$host" "$port" "$dev" -N "$name" -R > /dev/null 2> "$err" && break
    if [ "$try" -ge "$TRIES" ]; then
        why=
        while read -r line; do [ -n "$line" ] && why=$line; done < "$err"
        liveimg_stop "cannot attach $url after $try tries: ${why:-nbd-client failed} (is the server exporting $name?)"
    fi
    liveimg_log 4 "retrying $url in $pause s (try $try of $TRIES failed)"
    sleep "$pause"
    try=$((try + 1)) pause=$((pause * 2))
done

read -r sectors < "$P/sys/block/nbd0/size" || sectors=0
got=$((sectors * 512))
if [ -n "$want_size" ]; then
    if [ "$got" -lt "$want_size" ]; then
        liveimg_stop "the export $url is short: got $got of $want_size bytes"
    fi
    # Through the page cache, which the kernel takes back: nothing of the image is kept in RAM.
    sum=$({ head -c "$want_size" "$dev" 2> "$err"; echo $? > "$P/tmp/liveimg-nbd.rc"; } | sha256sum)
    sum=${sum%% *}
    read -r rc < "$P/tmp/liveimg-nbd.rc"
    if [ "$rc" != 0 ]; then
        liveimg_stop "cannot check $url: reading $dev failed: $(cat "$err")"
    fi
    if [ "$sum" != "$want_sha" ]; then
        why="sha256 expected $want_sha, got $sum"
        liveimg_stop "$url is not this build's live image: $why (initramfs and rootfs are from different builds?)"
    fi
    liveimg_log 5 "$url checked: $want_size bytes, sha256 $sum"
fi
exec "$P/sbin/dmsquash-live-root" "$dev"
"""
)

#: A systemd generator: ``/sysroot`` is the live root dmsquash-live-root makes of the NBD device.
GENERATOR = r"""#!/bin/sh
# liveimg: /sysroot's mount for root=live:nbd://... (liveimg/livenbd.py), which dracut's own live
# generators leave alone: the device-mapper snapshot, or the overlay where asked (or where
# dmsquash-live-root left the /xor_* marks before it reloaded systemd).
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
case "$(getarg root=)" in
    live:nbd://*) ;;
    *) exit 0 ;;
esac
dir=$2
[ -n "$dir" ] || exit 1
mkdir -p "$dir"
flags=$(getarg rootflags=)
if getargbool 0 rd.live.overlay.overlayfs || [ -e /xor_overlayfs ]; then
    lower=/run/rootfsbase
    if getargbool 0 rd.live.overlay.readonly || [ -e /xor_readonly ]; then
        lower=/run/overlayfs-r:$lower
    fi
    what=LiveOS_rootfs kind=overlay
    flags="${flags:+$flags,}lowerdir=$lower,upperdir=/run/overlayfs,workdir=/run/ovlwork"
else
    what=/dev/mapper/live-rw kind=
    # The device appears once the image is attached and checked: give the network its time.
    unit="$dir/dev-mapper-live\x2drw.device.d"
    mkdir -p "$unit"
    printf '[Unit]\nJobTimeoutSec=3000\nJobRunningTimeoutSec=3000\n' > "$unit/timeout.conf"
fi
{
    printf '[Unit]\nBefore=initrd-root-fs.target\n[Mount]\nWhere=/sysroot\nWhat=%s\n' "$what"
    [ -n "$kind" ] && printf 'Type=%s\n' "$kind"
    [ -n "$flags" ] && printf 'Options=%s\n' "$flags"
} > "$dir/sysroot.mount"
exit 0
"""


def wanted(url: str | None) -> bool:
    """Whether the build's ``--url`` asks for the live image over NBD."""
    return url is not None and bootsyntax.is_nbd(url)


def check_image(tree: GuestTree) -> None:
    """The image must have nbd-client for its initramfs (an :class:`InvalidImage` if not)."""
    if not find_binary(tree, "nbd-client"):
        raise InvalidImage(
            "the image has no nbd-client, which the live initramfs needs to read the live image over NBD",
            hint="install nbd-client in the image, or give an http:// --url",
        )


def initramfs_files(initramfs: Source, workdir: Path, verify: bool) -> list[EmbeddedFile]:
    """What to append to ``initramfs`` for ``nbd://``: :data:`LIVENBDROOT` beside livenetroot, the
    cmdline hook, and :data:`GENERATOR` where dracut put livenet's.  The image's dracut must have
    put in nbd-client and the ``nbd`` module (and ``head`` when ``verify``): an
    :class:`InvalidImage` if it did not.  ``initramfs``: a path, or the initramfs already open
    (:func:`~liveimg.dracut.initramfs.opened`)."""
    with opened(initramfs) as ird:
        return _initramfs_files(ird, workdir, verify)


def _initramfs_files(ird: Initramfs, workdir: Path, verify: bool) -> list[EmbeddedFile]:
    initramfs = ird.path
    found = ird.files()
    regular = {m.path for m in found.values() if m.kind in (cpio.Kind.FILE, cpio.Kind.HARDLINK)}
    names = {p.rsplit("/", 1)[-1] for p in regular}
    missing = [tool for tool in ("nbd-client", *(("head",) if verify else ())) if tool not in names]
    if not any(n == "nbd.ko" or n.startswith("nbd.ko.") for n in names):
        missing.append("the nbd kernel module")
    if missing:
        raise InvalidImage(
            f"{initramfs} lacks {', '.join(missing)}, which reading the live image over NBD needs",
            hint="install nbd-client in the image (and a kernel with the nbd module)",
        )
    livenet = next((p for p in ("usr/sbin/livenetroot", "sbin/livenetroot") if p in regular), "sbin/livenetroot")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "livenbdroot").write_text(LIVENBDROOT)
    (workdir / CMDLINE_HOOK_NAME).write_text(CMDLINE_HOOK)
    files = [
        EmbeddedFile(workdir / "livenbdroot", f"/{livenet.rsplit('/', 1)[0]}/livenbdroot", 0o755),
        EmbeddedFile(workdir / CMDLINE_HOOK_NAME, f"/{hook_dir(ird, 'cmdline')}/{CMDLINE_HOOK_NAME}", 0o644),
    ]
    generators = sorted(
        p.rsplit("/", 1)[0] for p in regular if p.endswith("/system-generators/dracut-livenet-generator")
    )
    if generators:
        (workdir / GENERATOR_NAME).write_text(GENERATOR)
        files.append(EmbeddedFile(workdir / GENERATOR_NAME, f"/{generators[0]}/{GENERATOR_NAME}", 0o755))
    return files


__all__ = [
    "CMDLINE_HOOK",
    "CMDLINE_HOOK_NAME",
    "DRACUT_INSTALL",
    "GENERATOR",
    "GENERATOR_NAME",
    "LIVENBDROOT",
    "MESSAGES",
    "check_image",
    "initramfs_files",
    "wanted",
]
