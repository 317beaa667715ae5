"""The NFS export (inode lookup) table: inode number n's reference at index n - 1 (u64)."""

from __future__ import annotations

import struct


def export_table_bytes(refs: list[int]) -> bytes:
    """``refs[i]`` is the inode reference of inode number i + 1."""
    return struct.pack(f"<{len(refs)}Q", *refs)
