"""A bounded TCG translation cache for the libguestfs appliance's QEMU.

Under TCG, QEMU keeps the guest code it has translated in a cache that may grow to 1 GiB;
over an appliance session it fills with a few hundred MiB (an inspection of the atomic
sample: QEMU's peak RSS 524 MiB with the default, 328 MiB with a 64 MiB cache, in the same
time).  The size is set with ``-accel tcg,tb-size=N``, but libguestfs selects TCG with
``-machine accel=tcg`` and offers no way to add to it, and QEMU refuses both forms
together.  So liveimg hands libguestfs a QEMU wrapper (the mechanism guestfs(3) documents
under "QEMU WRAPPERS") that moves ``accel=tcg`` from ``-machine`` to ``-accel`` with the
size, and passes everything else through unchanged.

The wrapper lives in liveimg's cache directory under a name that hashes its content, so
libguestfs's own cache of QEMU's capabilities (keyed by the binary's size and mtime) stays
valid across runs.  ``$LIVEIMG_TCG_TB_SIZE`` (MiB; 0 for QEMU's default) overrides the size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path

from liveimg.errors import InvalidOptions

log = logging.getLogger(__name__)

ENV_VAR = "LIVEIMG_TCG_TB_SIZE"
#: MiB.  Small enough to keep liveimg's whole process tree under 512 MiB during a build,
#: large enough that the appliance's work is not slowed (measured: benchmarks/README.md).
DEFAULT_TB_SIZE_MIB = 64

_WRAPPER = """\
#!{python} -I
# liveimg: QEMU for the libguestfs appliance under TCG with a {size} MiB translation cache.
# Written by liveimg.tcg: "-machine ...,accel=tcg,..." becomes "-machine ..." plus
# "-accel tcg,tb-size={size}"; every other argument is passed through unchanged.
import os
import sys

QEMU = {qemu!r}
args = sys.argv[1:]
out = []
i = 0
while i < len(args):
    arg = args[i]
    if arg in ("-machine", "-M") and i + 1 < len(args):
        opts = args[i + 1].split(",")
        kept = [o for o in opts if o != "accel=tcg"]
        if len(kept) != len(opts):
            if kept:
                out += [arg, ",".join(kept)]
            out += ["-accel", "tcg,tb-size={size}"]
            i += 2
            continue
    out.append(arg)
    i += 1
os.execv(QEMU, [QEMU, *out])
"""


def tb_size_mib() -> int:
    """The cache size to use: ``$LIVEIMG_TCG_TB_SIZE`` or :data:`DEFAULT_TB_SIZE_MIB` (0: QEMU's own)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return DEFAULT_TB_SIZE_MIB
    if not value.isdigit() or (0 < int(value) < 16):
        raise InvalidOptions(f"{ENV_VAR}={value!r}: give MiB (16 or more), or 0 for QEMU's default")
    return int(value)


def wrapper_text(qemu: str, size_mib: int) -> str:
    # A "#!" line cannot hold a path with spaces: then the system's Python runs the wrapper.
    python = sys.executable if sys.executable and " " not in sys.executable else "/usr/bin/python3"
    return _WRAPPER.format(python=python, qemu=qemu, size=size_mib)


def qemu_wrapper(qemu: str, size_mib: int, cache_dir: Path) -> Path:
    """The wrapper of ``qemu`` with a ``size_mib`` cache: in ``cache_dir``, written once, atomically."""
    text = wrapper_text(qemu, size_mib)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir / f"qemu-tcg-{digest}"
    if path.is_file() and os.access(path, os.X_OK):
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".qemu-tcg-", dir=cache_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("QEMU wrapper for a %d MiB TCG cache: %s", size_mib, path)
    return path
