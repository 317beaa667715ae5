"""Writing an initramfs whole or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from liveimg.errors import HostError
from liveimg.staging import AtomicOutput


@contextmanager
def replaced_whole(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``, which replaces ``dst`` when the block succeeds.

    The write is :class:`~liveimg.staging.AtomicOutput`'s.  On any failure (Ctrl-C included)
    the temporary file is removed and ``dst`` is left as it was; an :class:`OSError` (the
    block's too: reading the input, a tool's output) becomes a :class:`HostError` naming ``dst``.
    """
    try:
        with AtomicOutput(dst) as tmp:
            yield tmp
    except HostError:
        raise
    except OSError as exc:
        raise HostError(f"cannot write {dst}: {exc.strerror or exc}") from exc
