"""The rootfs stage on the atomic sample: the partition method, in every size mode.

The comparison is in tests/integration/rootfs_compare.py.
"""

from __future__ import annotations

from pathlib import Path

from liveimg.rootfs import Method
from tests.integration.rootfs_compare import build_and_compare


def test_partition_method_on_atomic(tmp_path: Path) -> None:
    build_and_compare("atomic", tmp_path, Method.PARTITION, modes=True)
