"""The NFS export (inode lookup) table: inode number n's reference at index n - 1 (u64)."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence


def export_table_bytes(refs: Sequence[int]) -> bytes:
    """``refs[i]`` is the inode reference of inode number i + 1."""
    table = array("Q", refs)
    if sys.byteorder != "little":
        table.byteswap()
    return table.tobytes()
