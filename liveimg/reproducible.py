"""Reproducible builds: ``$SOURCE_DATE_EPOCH``, read and checked in one place.

Every writer that stores times (the squashfs writers, the cpio writer, mkfs.erofs, the
staged directories) takes them from here, so that two builds with the same
``SOURCE_DATE_EPOCH`` agree byte for byte.  See https://reproducible-builds.org/specs/source-date-epoch/.
"""

from __future__ import annotations

import os

from liveimg.errors import InvalidOptions


def source_date_epoch(*, limit: int = (1 << 32) - 1, what: str = "a 32-bit time field") -> int | None:
    """``$SOURCE_DATE_EPOCH`` as an int, None when unset or empty.

    Raises :class:`InvalidOptions` when it is not a whole number of seconds between 0 and
    ``limit`` (the largest value the caller's format can hold, named by ``what``).
    """
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    try:
        epoch = int(value)
    except ValueError:
        raise InvalidOptions(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds") from None
    if not 0 <= epoch <= limit:
        raise InvalidOptions(f"SOURCE_DATE_EPOCH={epoch} does not fit in {what} (0 to {limit})")
    return epoch


def clamp_to_epoch(mtime: int) -> int:
    """``mtime``, or ``$SOURCE_DATE_EPOCH`` when that is set and older (reproducible builds' clamping)."""
    epoch = source_date_epoch()
    return mtime if epoch is None else min(mtime, epoch)
