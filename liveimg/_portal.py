"""Root's way into a sandbox: show host directories at paths an unprivileged user can reach, then drop root.

Run by :mod:`liveimg.sandbox`, only when liveimg runs as root, as ``python3 -I -S _portal.py SPEC``.
bubblewrap runs
as the unprivileged sandbox user and resolves the paths it binds as that user, so a work
directory below ``/root`` (mode 0700) would be out of its reach.  This script, still root:

1. makes a private mount namespace (nothing it mounts is ever seen by the host, and it all
   goes away with the last process in it);
2. opens each directory or file to show (as root, so the mode of its parents does not
   matter; a symbolic link as the last component is refused), mounts a small tmpfs over
   ``/run`` in its namespace and binds each at ``/run/<name>``;
3. closes those descriptors (a directory descriptor left open in the sandbox would let it
   walk up with ``..`` out of the directory), drops every group, then its gid and uid
   (``setresgid``/``setresuid``: no way back to root), and runs ``SPEC["argv"]``
   (``prlimit ... bwrap ...``) as the sandbox user.

The paths are opened after the namespace is made (the kernel binds only from mounts of the
caller's own namespace, so a descriptor opened before would not do).

It is a stand-alone script (standard library only, no liveimg import) because it runs with
``-I -S`` before anything else.  ``SPEC`` is a JSON object::

    {"binds": [["/host/path", "name"], ["/host/file", "name", st_dev, st_ino], ...], "uid": 65534, "gid": 65534,
     "argv": ["/usr/bin/bwrap", ...]}

A bind with ``st_dev`` and ``st_ino`` must be that file (one liveimg opened before): another one
swapped in at the path since is refused.

Exit status 125, with ``liveimg portal: <reason>`` on stderr, when it cannot set up.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PORTAL = "/run"
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.unshare.argtypes = (ctypes.c_int,)


class SetupError(Exception):
    pass


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise SetupError(f"mount {source or fstype} on {target}: {os.strerror(ctypes.get_errno())}")


def setup(spec: dict[str, Any]) -> None:
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise SetupError(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    opened = []
    for path, name, *identity in spec["binds"]:
        if "/" in name or name in ("", ".", ".."):
            raise SetupError(f"bad portal name {name!r}")
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(fd)
        if identity and [st.st_dev, st.st_ino] != identity:
            raise SetupError(f"{path} is no longer the file liveimg opened")
        opened.append((fd, name))
    mount("tmpfs", PORTAL, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k")
    for fd, name in opened:
        target = os.path.join(PORTAL, name)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        os.close(fd)
    os.setgroups([])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SetupError("still root after dropping privileges")


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(argv[1])
        setup(spec)
        os.execv(spec["argv"][0], spec["argv"])
    except (SetupError, OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        print(f"liveimg portal: {exc}", file=sys.stderr)
    return SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
