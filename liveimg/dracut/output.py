"""Writing an initramfs whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from liveimg.errors import HostError


@contextmanager
def replaced_whole(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``, which replaces ``dst`` when the block succeeds.

    On any failure (Ctrl-C included) the temporary file is removed and ``dst`` is left as it
    was; an :class:`OSError` becomes a :class:`HostError` naming ``dst``.
    """
    tmp = dst.with_name(f".{dst.name}.liveimg-tmp")
    try:
        yield tmp
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HostError(f"cannot write {dst}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
