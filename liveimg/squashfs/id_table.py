"""The id table: every distinct uid and gid once, inodes refer to them by index (u16)."""

from __future__ import annotations

import struct

from liveimg.errors import InvalidImage
from liveimg.squashfs.constants import SQUASHFS_IDS


class IdTable:
    """``index_of(id)`` assigns indices in first-use order; ``to_bytes`` gives the u32 entries."""

    def __init__(self) -> None:
        self._index: dict[int, int] = {}

    def index_of(self, ident: int) -> int:
        index = self._index.get(ident)
        if index is None:
            if len(self._index) >= SQUASHFS_IDS:
                raise InvalidImage(f"more than {SQUASHFS_IDS} distinct uids and gids: squashfs cannot store them")
            index = self._index[ident] = len(self._index)
        return index

    def __len__(self) -> int:
        return len(self._index)

    def to_bytes(self) -> bytes:
        return struct.pack(f"<{len(self._index)}I", *self._index)

    @staticmethod
    def parse(data: bytes, count: int) -> list[int]:
        return list(struct.unpack_from(f"<{count}I", data))
